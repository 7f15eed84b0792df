-- Run directories you can trust (issue 10, part 2): exclusive run directories, recipe.lua that
-- round-trips, resume checks, preprocess everywhere, metrics.jsonl exact after resume, verified
-- checkpoints with fallback, the status file, leftover temporary checkpoints, NaN evaluation.
-- Tiny fixture model and data (tests/lua/train_fixtures.lua); each training takes well under a second.
local core = require "pft.core"
local check = require "check"
local F = require "train_fixtures"
local T = require "pft.train"
local Ck = require "pft.checkpoint"
local R = require "pft.recipe"

local ROOT = TEST_ROOT
local TMP = os.getenv("TMPDIR") or "/tmp"
local tmp_n = 0
local function tmpdir(tag)
  tmp_n = tmp_n + 1
  local d = ("%s/pft-test-rundir-%d-%s-%d"):format(TMP, os.time(), tag, tmp_n)
  os.execute("rm -rf '" .. d .. "'")
  return d
end
local function rm(d) os.execute("rm -rf '" .. d .. "'") end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, s, mode)
  local f = assert(io.open(path, mode or "wb"))
  f:write(s)
  f:close()
end

local function lines(path)
  local out = {}
  for l in (read(path) or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

local function run(dir, over, opts)
  opts = opts or {}
  opts.quiet = true
  if opts.run_dir == nil and not opts.resume then opts.run_dir = dir end
  return T.run(F.recipe(ROOT, dir, over), opts)
end

-- metrics.jsonl lines without the timing fields
local function metric_lines(path)
  local out = {}
  for i, l in ipairs(lines(path)) do out[i] = (l:gsub('"[%w_]*wall[%w_]*":[%d.e+-]+,?', "")) end
  return out
end

local function same_lines(a, b, what)
  check.eq(#b, #a, what .. ": line count")
  for i = 1, math.max(#a, #b) do check.eq(b[i], a[i], what .. " line " .. i) end
end

local Tst = {}

-- 1. --------------------------------------------------------------------------------------------

function Tst.runs_started_in_the_same_second_never_share_a_directory()
  local base = tmpdir("same")
  assert(core.mkdir(base))
  local dir = base .. "/tiny-20260101-120000"
  local over = { ["train.max_steps"] = 2, ["train.eval_every"] = 2 }
  local s1 = T.run(F.recipe(ROOT, dir, over), { quiet = true })
  local s2 = T.run(F.recipe(ROOT, dir, over), { quiet = true })
  local s3 = T.run(F.recipe(ROOT, dir, over), { quiet = true })
  check.eq(s1.run_dir, dir, "first run: the name")
  check.eq(s2.run_dir, dir .. "-2", "second run: -2")
  check.eq(s3.run_dir, dir .. "-3", "third run: -3")
  check.eq(#lines(dir .. "/metrics.jsonl"), 2, "first run's metrics untouched (its training loss and its evaluation)")
  rm(base)
end

function Tst.training_into_an_existing_output_dir_is_an_error_unless_resuming()
  local d = tmpdir("exists")
  local over = { ["train.max_steps"] = 2, ["train.eval_every"] = 2 }
  run(d, over)
  check.raises(function() run(d, over) end, "already exists")
  local e = tmpdir("empty")
  assert(core.mkdir(e))
  check.eq(run(e, over).exit_code, 0, "an empty existing directory is fine")
  rm(d)
  rm(e)
end

-- 2. --------------------------------------------------------------------------------------------

local function deep_same(a, b, path, diffs)
  if type(a) == "function" and type(b) == "function" then
    local x, y = a("AbC  Def"), b("AbC  Def")
    if x ~= y then diffs[#diffs + 1] = path .. ": function results differ" end
    return
  end
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= b then diffs[#diffs + 1] = ("%s: %s vs %s"):format(path, tostring(a), tostring(b)) end
    return
  end
  for k, v in pairs(a) do deep_same(v, b[k], path .. "." .. tostring(k), diffs) end
  for k, v in pairs(b) do if a[k] == nil then diffs[#diffs + 1] = path .. "." .. tostring(k) .. ": missing, " .. tostring(v) end end
end

local function round_trip(r)
  local d = tmpdir("dump")
  assert(core.mkdir(d))
  write(d .. "/recipe.lua", (R.dump(r)))
  local r2 = R.load(d .. "/recipe.lua")
  local diffs = {}
  deep_same(r, r2, "", diffs)
  rm(d)
  return r2, diffs
end

function Tst.dump_round_trips_every_shipped_recipe()
  local p = io.popen('ls "' .. ROOT .. '"/recipes/*.lua')
  local n = 0
  for path in p:lines() do
    n = n + 1
    local _, diffs = round_trip(R.load(path))
    check.eq(table.concat(diffs, "; "), "", path)
  end
  p:close()
  check.truthy(n >= 8, "recipes found")
end

function Tst.dump_keeps_removed_keys_and_functions()
  local r = R.load(ROOT .. "/recipes/sst2.lua", { "~data.dev" })
  check.eq(r.data.dev, nil, "dev removed")
  local r2, diffs = round_trip(r)
  check.eq(table.concat(diffs, "; "), "", "removed dev")
  check.eq(r2.data.dev, nil, "dev still removed after the round trip")
  local p = R.load(ROOT .. "/tests/fixtures/rundir/pre.lua")
  local p2, pdiffs = round_trip(p)
  check.eq(table.concat(pdiffs, "; "), "", "preprocess recipe")
  check.eq(p2.data.preprocess("A  B"), "a b", "preprocess kept")
  check.eq(p2.data.dev, nil, "dev = false kept")
  local src, problems = R.dump_checked(R.load(ROOT .. "/tests/fixtures/rundir/upvalue.lua"))
  check.truthy(problems and problems[1] and problems[1]:find("data.preprocess", 1, true), "upvalue: a problem named")
  check.truthy(src:find("pft-unresumable", 1, true), "upvalue: the dump says it cannot be resumed")
end

function Tst.resume_refuses_a_run_whose_function_source_was_lost()
  local d = tmpdir("lost")
  local suffix = "x"
  local over = { ["train.max_steps"] = 4, ["train.eval_every"] = 2, ["data.preprocess"] = function(t) return t .. suffix end }
  check.eq(run(d, over, { interrupt_at_step = 2 }).status, "interrupted", "interrupted")
  check.raises(function() run(d, over, { resume = d }) end, "cannot be resumed")
  rm(d)
end

-- 3. --------------------------------------------------------------------------------------------

function Tst.resume_refuses_a_different_recipe_and_accepts_the_documented_changes()
  local d = tmpdir("differ")
  local over = { ["train.max_steps"] = 6, ["train.eval_every"] = 2 }
  run(d, over, { interrupt_at_step = 2 })
  local ok, err = pcall(run, d, { ["train.max_steps"] = 6, ["train.eval_every"] = 2, ["optim.name"] = "sgd",
    ["train.seed"] = 7 }, { resume = d })
  check.eq(ok, false, "refused")
  err = tostring(err)
  check.truthy(err:find('optim.name: "adamw" (saved) vs "sgd" (given)', 1, true), err)
  check.truthy(err:find("train.seed: 42 (saved) vs 7 (given)", 1, true), err)
  local s = run(d, { ["train.max_steps"] = 8, ["train.eval_every"] = 2, ["train.log_every"] = 3, ["output.keep"] = 3 },
    { resume = d })
  check.eq(s.exit_code, 0, "extended and log_every/keep changed: accepted")
  check.eq(s.steps, 8, "extended to 8 steps")
  rm(d)
end

-- pft train --resume RUN [key=value ...]: the run's recipe.lua with the overrides, checked
local function pft_cmd(args, env)
  local p = assert(io.popen(("%s '%s' %s 2>&1; echo \"rc=$?\""):format(env or "", TEST_PFT, args)))
  local out = p:read("*a")
  p:close()
  return out, tonumber(out:match("rc=(%d+)%s*$"))
end

function Tst.cli_resume_with_overrides_only_is_checked()
  local d = tmpdir("cli")
  local file = d .. ".lua"
  write(file, ([[return {
  model = { name = "%s/tests/fixtures/bert/tiny_seqcls", max_length = 16 },
  task = { kind = "classification", labels = { "neg", "neu", "pos" } },
  data = { train = { path = "%s/tests/fixtures/train/tiny.tsv", header = true }, dev = false, test = false, batch_size = 8,
    preprocess = function(t) return t:lower() end },
  train = { max_steps = 4, eval_every = 2 },
  output = { dir = "%s" },
}
]]):format(ROOT, ROOT, d))
  local out, rc = pft_cmd("train " .. file, "PFT_TEST_INTERRUPT_AT_STEP=2")
  check.eq(rc, 130, "interrupted: " .. out)
  out, rc = pft_cmd("train --resume " .. d .. " optim.name=sgd")
  check.eq(rc, 1, "refused: " .. out)
  check.truthy(out:find('optim.name: "adamw" (saved) vs "sgd" (given)', 1, true), out)
  out, rc = pft_cmd("train --resume " .. d .. " train.log_every=1")
  check.eq(rc, 0, "resumed (preprocess and the removed dev split kept): " .. out)
  check.eq(read(d .. "/status"), "done\n", "status")
  rm(d)
  os.remove(file)
end

-- 4. --------------------------------------------------------------------------------------------

function Tst.preprocess_applies_to_test_eval_and_predict()
  local d = tmpdir("pre")
  local dev = ROOT .. "/tests/fixtures/train/tiny_dev.tsv"
  -- the dev file with every sentence replaced by what preprocess makes of it
  local same_file = d .. "-a.tsv"
  local out, first = {}, true
  for l in (read(dev) .. "\n"):gmatch("([^\n]*)\n") do
    if l ~= "" then
      if first then out[#out + 1] = l; first = false
      else out[#out + 1] = (l:gsub("^[^\t]*", "a")) end
    end
  end
  write(same_file, table.concat(out, "\n") .. "\n")
  local spec = { path = dev, format = "tsv", header = true, text = "sentence", label = "label" }
  local s = run(d, { ["train.max_steps"] = 3, ["train.eval_every"] = 3, ["data.test"] = spec,
    ["data.preprocess"] = function(t) return "a" end })
  local want = T.evaluate(d, { path = same_file, format = "tsv", header = true, text = "sentence", label = "label" })
  check.near(s.test.loss, want.loss, 1e-9, "final test evaluation preprocessed")
  check.near(T.evaluate(d, spec).loss, want.loss, 1e-9, "T.evaluate preprocessed")
  write(d .. "/in.txt", "great fun\nterrible film\nmeh\n")
  T.predict(d, d .. "/in.txt", d .. "/preds.jsonl")
  local p = lines(d .. "/preds.jsonl")
  local function probs(l) return (l:gsub('^{"text":"[^"]*",', ""):gsub(',"text":"[^"]*"', "")) end
  check.eq(#p, 3, "three predictions")
  check.eq(probs(p[2]), probs(p[1]), "predict preprocessed (all texts become 'a')")
  rm(d)
  os.remove(same_file)
end

-- 5. --------------------------------------------------------------------------------------------

function Tst.metrics_are_exact_after_a_kill_between_eval_and_checkpoint()
  local a, b = tmpdir("full"), tmpdir("kill")
  local over = { ["train.max_steps"] = 8, ["train.eval_every"] = 2 }
  run(a, over)
  run(b, over, { interrupt_at_step = 3 })
  -- as if the process died after writing the step-4 evaluation and before its checkpoint
  local ml = lines(a .. "/metrics.jsonl")
  write(b .. "/metrics.jsonl", ml[2] .. "\n", "ab")
  write(b .. "/trainable.log", "step 4: nonsense\n", "ab")
  run(b, over, { resume = b })
  same_lines(metric_lines(a .. "/metrics.jsonl"), metric_lines(b .. "/metrics.jsonl"), "metrics.jsonl")
  check.eq(read(b .. "/trainable.log"), read(a .. "/trainable.log"), "trainable.log")
  rm(a)
  rm(b)
end

function Tst.metrics_are_exact_after_resuming_at_the_last_step_or_a_finished_run()
  local a, b = tmpdir("full"), tmpdir("last")
  local spec = { path = ROOT .. "/tests/fixtures/train/tiny_dev.tsv", format = "tsv", header = true, text = "sentence", label = "label" }
  local over = { ["train.eval_every"] = "epoch", ["data.test"] = spec } -- 2 epochs of 5 steps
  run(a, over)
  run(b, over, { interrupt_at_step = 10 })
  run(b, over, { resume = b })
  same_lines(metric_lines(a .. "/metrics.jsonl"), metric_lines(b .. "/metrics.jsonl"), "resumed at the last step")
  run(b, over, { resume = b })
  same_lines(metric_lines(a .. "/metrics.jsonl"), metric_lines(b .. "/metrics.jsonl"), "finished run resumed")
  rm(a)
  rm(b)
end

-- 6. --------------------------------------------------------------------------------------------

function Tst.a_damaged_newest_checkpoint_falls_back_to_the_previous_one()
  local a, b = tmpdir("full"), tmpdir("damaged")
  local over = { ["train.max_steps"] = 8, ["train.eval_every"] = 2 }
  run(a, over)
  run(b, over, { interrupt_at_step = 6 }) -- checkpoints step-4 and step-6
  local w = b .. "/checkpoints/step-6/weights.safetensors"
  local bytes = read(w)
  write(w, bytes:sub(1, 100))
  local msgs = {}
  local s = run(b, over, { resume = b, warn = function(m) msgs[#msgs + 1] = m end })
  check.eq(s.exit_code, 0, "resumed")
  local m = table.concat(msgs, "\n")
  check.truthy(m:find(("checkpoint step-6 is damaged (weights.safetensors: size 100, expected %d); resuming from step-4"):format(#bytes), 1, true), m)
  same_lines(metric_lines(a .. "/metrics.jsonl"), metric_lines(b .. "/metrics.jsonl"), "metrics after the fallback")
  check.eq(read(b .. "/model/model.safetensors"), read(a .. "/model/model.safetensors"), "final weights identical")
  rm(a)
  rm(b)
end

function Tst.state_json_is_checked_and_errors_name_the_file()
  local d = tmpdir("state")
  run(d, { ["train.max_steps"] = 4, ["train.eval_every"] = 2, ["output.keep"] = 1 }, { interrupt_at_step = 2 })
  local st = d .. "/checkpoints/step-2/state.json"
  local good = read(st)
  write(st, good:sub(1, 20))
  local ok, err = pcall(Ck.load, d .. "/checkpoints/step-2")
  check.eq(ok, false, "broken JSON refused")
  check.truthy(tostring(err):find(st, 1, true), "names the file: " .. tostring(err))
  write(st, (good:gsub('"step":2', '"step":-5')))
  ok, err = pcall(Ck.load, d .. "/checkpoints/step-2")
  check.eq(ok, false, "step = -5 refused")
  check.truthy(tostring(err):find(st, 1, true) and tostring(err):find("step", 1, true), tostring(err))
  check.raises(function() run(d, { ["train.max_steps"] = 4, ["train.eval_every"] = 2, ["output.keep"] = 1 }, { resume = d }) end,
    "state.json")
  rm(d)
end

-- 7. --------------------------------------------------------------------------------------------

function Tst.the_status_file_follows_the_run()
  local d = tmpdir("status")
  local over = { ["train.max_steps"] = 4, ["train.eval_every"] = 2 }
  local seen
  run(d, over, { interrupt_at_step = 2, on_step = function() seen = seen or read(d .. "/status") end })
  check.eq(seen, "running\n", "running while training")
  check.eq(read(d .. "/status"), "interrupted\n", "interrupted")
  run(d, over, { resume = d })
  check.eq(read(d .. "/status"), "done\n", "done")
  local n = tmpdir("nan")
  run(n, over, { nan_at_step = 3 })
  check.truthy((read(n .. "/status") or ""):find("^nan: loss is nan at step 3"), tostring(read(n .. "/status")))
  local f = tmpdir("failed")
  check.raises(function() run(f, over, { on_step = function() error("boom", 0) end }) end, "boom")
  check.eq(read(f .. "/status"), "failed: boom\n", "failed with the message")
  rm(d)
  rm(n)
  rm(f)
end

-- 8. --------------------------------------------------------------------------------------------

function Tst.leftover_temporary_checkpoints_are_removed_on_resume()
  local d = tmpdir("tmpck")
  local over = { ["train.max_steps"] = 4, ["train.eval_every"] = 2 }
  run(d, over, { interrupt_at_step = 2 })
  assert(core.mkdir(d .. "/checkpoints/.tmp-step-3"))
  write(d .. "/checkpoints/.tmp-step-3/weights.safetensors", "partial")
  run(d, over, { resume = d })
  check.eq(core.list_dir(d .. "/checkpoints/.tmp-step-3"), nil, "removed")
  rm(d)
end

-- part 3: an evaluation with a NaN loss follows the NaN policy ---------------------------------

function Tst.nan_evaluation_loss_stops_like_a_nan_training_loss()
  local d = tmpdir("naneval")
  local s = run(d, { ["train.max_steps"] = 6, ["train.eval_every"] = 2 }, { nan_eval_at_step = 4 })
  check.eq(s.status, "nan", "status")
  check.eq(s.exit_code, 1, "exit code")
  check.eq(s.message, "dev loss is nan at step 4; stopped, last good checkpoint: " .. d .. "/checkpoints/step-2", "message")
  check.truthy((read(d .. "/status") or ""):find("^nan: dev loss is nan"), "status nan")
  check.eq(#lines(d .. "/metrics.jsonl"), 1, "no line for the NaN evaluation")
  rm(d)
end


-- Two processes writing one file at once (two sweep shards write sweep.json): each writes its own
-- temporary, so neither finds the other's renamed away. A fixed "path.tmp" lost that race in CI.
function Tst.atomic_writes_use_a_temporary_of_their_own()
  local fs = require "pft.fs"
  local d = tmpdir("atomic")
  assert(core.mkdir(d))
  assert(core.mkdir(d .. "/x.json.tmp")) -- another writer's temporary, as a directory no one can open
  local ok, err = pcall(fs.write_atomic, d .. "/x.json", "{}\n", "test")
  check.eq(ok, true, "written beside another writer's temporary: " .. tostring(err))
  check.eq(read(d .. "/x.json"), "{}\n", "the content")
  local left = {}
  for _, name in ipairs(core.list_dir(d)) do left[#left + 1] = name end
  table.sort(left)
  check.eq(table.concat(left, " "), "x.json x.json.tmp", "no temporary of its own left")
  rm(d)
end

return Tst
