-- The trainer (lua/pft/train.lua) on the tiny fixture model: LR schedules, clipping, optimizer state,
-- weight decay groups, freeze semantics, plan == what happens, resume equivalence, Ctrl-C, NaN stop,
-- gradient accumulation. Each training here takes well under a second.
local pft = require "pft"
local core = require "pft.core"
local check = require "check"
local F = require "train_fixtures"
local T = require "pft.train"
local Ck = require "pft.checkpoint"

local ROOT = TEST_ROOT
local TMP = os.getenv("TMPDIR") or "/tmp"
local tmp_n = 0
local function tmpdir(tag)
  tmp_n = tmp_n + 1
  local d = ("%s/pft-test-train-%d-%s-%d"):format(TMP, os.time(), tag, tmp_n)
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

local function lines(path)
  local out = {}
  for l in (read(path) or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

local function run(dir, over, opts)
  opts = opts or {}
  opts.quiet = true
  opts.run_dir = opts.run_dir or dir
  return T.run(F.recipe(ROOT, dir, over), opts)
end

-- frees every tensor of a table now (the runner counts live tensors; stale stack slots would keep
-- them until some later collection)
local function free_all(t)
  for _, v in pairs(t) do v:free() end
end

-- every parameter of a loaded model (or a weights file) as name -> flat table
local function snapshot(params)
  local s = {}
  for _, p in ipairs(params) do s[p:name()] = p:flat() end
  return s
end

local function snapshot_free(params)
  local s = snapshot(params)
  free_all(params)
  return s
end

local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

-- A recipe written as a user would (a file, resolved by pft.recipe): text's %s are ROOT, ROOT, ROOT, dir
local function recipe_from_text(dir, text)
  local path = dir .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(text:format(ROOT, ROOT, ROOT, dir))
  f:close()
  local r = require("pft.recipe").load(path)
  os.remove(path)
  return r
end

-- The metrics of a run's last dev evaluation (metrics.jsonl)
local function last_dev(dir)
  local cjson, dev = require "cjson", nil
  for _, l in ipairs(lines(dir .. "/metrics.jsonl")) do
    local rec = cjson.decode(l)
    if rec.split == "dev" then dev = rec.metrics end
  end
  return dev
end

local Tst = {}

function Tst.lr_schedules_at_given_steps()
  local f = T.lr_factor
  check.near(f({ name = "linear", warmup = 0.1 }, 0, 100), 0, 1e-12, "linear step 0")
  check.near(f({ name = "linear", warmup = 0.1 }, 5, 100), 0.5, 1e-12, "linear warm-up half")
  check.near(f({ name = "linear", warmup = 0.1 }, 10, 100), 1, 1e-12, "linear peak")
  check.near(f({ name = "linear", warmup = 0.1 }, 55, 100), 0.5, 1e-12, "linear decay half")
  check.near(f({ name = "linear", warmup = 0.1 }, 100, 100), 0, 1e-12, "linear end")
  check.near(f({ name = "constant", warmup = 0 }, 37, 100), 1, 1e-12, "constant")
  check.near(f({ name = "constant", warmup = 4 }, 2, 100), 0.5, 1e-12, "constant warm-up in steps")
  check.near(f({ name = "cosine", warmup = 10 }, 10, 110), 1, 1e-12, "cosine peak")
  check.near(f({ name = "cosine", warmup = 10 }, 60, 110), 0.5, 1e-12, "cosine half")
  check.near(f({ name = "cosine", warmup = 10 }, 110, 110), 0, 1e-12, "cosine end")
  local st = { name = "slanted_triangular", cut_frac = 0.1, ratio = 32 }
  check.near(f(st, 0, 100), 1 / 32, 1e-12, "STLR start lr/ratio")
  check.near(f(st, 10, 100), 1, 1e-12, "STLR peak at cut")
  check.near(f(st, 55, 100), 16.5 / 32, 1e-12, "STLR halfway down")
  local oc = { name = "one_cycle", pct_start = 0.3 }
  check.near(f(oc, 0, 100), 1 / 25, 1e-12, "one-cycle start max/25")
  check.near(f(oc, 29, 100), 1, 1e-12, "one-cycle peak")
  check.near(f(oc, 64, 100), 0.5 + 1 / 25 / 1e4 / 2, 1e-12, "one-cycle halfway down")
  check.near(f(oc, 99, 100), 1 / 25 / 1e4, 1e-12, "one-cycle end max/25/1e4")
  check.raises(function() f({ name = "nope" }, 0, 10) end, "unknown lr_schedule.name 'nope'")
end

function Tst.clip_grad_norm_is_torchs()
  local a = pft.zeros({ 2 }):requires_grad(true)
  local b = pft.zeros({ 1 }):requires_grad(true)
  local l = pft.sum_all(a * pft.tensor({ 3, 4 })) + pft.sum_all(b * pft.tensor({ 12 }))
  l:backward()
  local n = core.clip_grad_norm({ a, b }, 6.5)
  check.near(n, 13, 1e-12, "norm sqrt(9+16+144)")
  local c = 6.5 / (13 + 1e-6)
  check.all_near(a:grad():flat(), { 3 * c, 4 * c }, 1e-7, "a scaled by max/(norm+1e-6)")
  check.all_near(b:grad():flat(), { 12 * c }, 1e-7, "b scaled")
  check.near(core.clip_grad_norm({ a, b }, 100), 6.5, 1e-6, "below max: norm only")
  check.all_near(b:grad():flat(), { 12 * c }, 1e-7, "below max: unchanged")
end

function Tst.grad_norm_and_a_scaled_step_are_clipping()
  local function setup()
    local w = pft.tensor({ 0.5, -1, 2 }):requires_grad(true)
    local l = pft.sum_all(w * pft.tensor({ 3, 4, 12 }))
    l:backward()
    return w, core.adamw({ w }, { lr = 0.1 })
  end
  local w1, o1 = setup()
  core.clip_grad_norm({ w1 }, 6.5)
  o1:step()
  local w2, o2 = setup()
  local n, coef = core.grad_norm({ w2 }, 6.5)
  check.near(n, 13, 1e-12, "norm sqrt(9+16+144)")
  check.near(coef, 6.5 / (13 + 1e-6), 1e-7, "the factor clipping would scale by")
  check.eq(select(2, core.grad_norm({ w2 }, 100)), 1, "below max: factor 1")
  check.eq(select("#", core.grad_norm({ w2 })), 1, "no max_norm: the norm alone")
  check.all_near(w2:grad():flat(), { 3, 4, 12 }, 0, "the gradients untouched")
  o2:step(coef)
  check.all_near(w2:flat(), w1:flat(), 0, "step(coef) is clip + step, bit for bit")
  check.raises(function() o2:step(0 / 0) end, "grad_scale must be a finite number")
end

function Tst.optimizer_state_round_trip_through_a_file()
  local d = tmpdir("ost")
  assert(core.mkdir(d))
  local p = pft.tensor({ 1, -2, 3 }):requires_grad(true):set_name("w")
  local q = pft.tensor({ 1, -2, 3 }):requires_grad(true):set_name("w")
  local o1, o2 = pft.adamw({ p }, { lr = 0.1 }), pft.adamw({ q }, { lr = 0.1 })
  for _ = 1, 3 do
    o1:zero_grad()
    pft.sum_all(p * p):backward()
    o1:step()
  end
  local st = o1:state()
  check.eq(st.w.step, 3, "step count")
  core.save_tensors(d .. "/o.safetensors", { ["w.m"] = st.w.m, ["w.v"] = st.w.v }, { note = "x" })
  local back = core.read_safetensors(d .. "/o.safetensors")
  o2:load_state({ w = { step = 3, m = back["w.m"], v = back["w.v"] } })
  q:copy_(p)
  for _, o in ipairs({ o1, o2 }) do
    o:zero_grad()
  end
  pft.sum_all(p * p):backward()
  pft.sum_all(q * q):backward()
  o1:step()
  o2:step()
  check.truthy(same(p:flat(), q:flat()), "a step after load_state is bit-identical")
  check.raises(function() o2:load_state({ nope = { step = 1, m = back["w.m"], v = back["w.v"] } }) end,
    "no parameter named 'nope'")
  rm(d)
end

-- Bias and LayerNorm parameters are in no-decay groups: with zero gradients an AdamW step leaves them
-- bit-identical while every other trainable weight shrinks by exactly (1 - lr * wd).
function Tst.weight_decay_skips_bias_and_layernorm()
  local Model = require "pft.model"
  local m = Model.load(ROOT .. "/tests/fixtures/bert/tiny_seqcls", { head = "seqcls", num_labels = 3 })
  local params = m.bert:params()
  local info = T.model_info(m.bert)
  local groups = T.param_groups(params, info, { lr = 0.1, weight_decay = 0.5, no_decay = { "bias", "LayerNorm" } })
  local copt = {}
  for i, g in ipairs(groups) do
    copt[i] = { params = g.params, lr = g.lr, weight_decay = g.weight_decay }
    for _, n in ipairs(g.names) do
      local nd = n:find("bias", 1, true) or n:find("LayerNorm", 1, true)
      check.eq(g.weight_decay == 0, nd ~= nil, "decay of " .. n)
    end
  end
  local opt = core.adamw(copt)
  local before = snapshot(params)
  for _, p in ipairs(params) do p:requires_grad(true) end
  local z
  for _, p in ipairs(params) do
    local s = core.scale(core.sum_all(p), 0)
    z = z and (z + s) or s
  end
  z:backward()
  opt:step()
  for _, p in ipairs(params) do
    local n, now, was = p:name(), p:flat(), before[p:name()]
    if n:find("bias", 1, true) or n:find("LayerNorm", 1, true) then
      check.truthy(same(now, was), n .. " unchanged (no decay)")
    else
      local f = 1 - 0.1 * 0.5
      for i = 1, math.min(#was, 8) do check.near(now[i], was[i] * f, 1e-6, n .. " decayed") end
    end
  end
  opt:free()
  free_all(params)
  m.bert:free()
end

-- Head only for steps 0-2, layer[1] joins at step 3: embeddings and layer[0] stay bit-identical to the
-- checkpoint and get no optimizer state; layer[1] is unchanged after 3 steps and changed after the 4th;
-- the trainable.log lines are the plan's phases.
function Tst.freeze_schedule_is_exact_and_matches_the_plan()
  local d = tmpdir("freeze")
  local Model = require "pft.model"
  local fresh = Model.load(ROOT .. "/tests/fixtures/bert/tiny_seqcls", { head = "seqcls", num_labels = 3 })
  local initial = snapshot_free(fresh.bert:params())
  fresh.bert:free()
  local seen = {}
  local stateful = {}
  local sched_over = { initial = { "pooler", "head" }, rules = { { at = { step = 3 }, unfreeze = { "layer[1]" } } } }
  local s = run(d, { ["train.max_steps"] = 6, ["train.eval_every"] = 3, schedule = sched_over }, {
    on_step = function(step, st)
      local w = st.model.bert:param("bert.encoder.layer.1.attention.self.query.weight")
      seen[step] = same(w:flat(), initial[w:name()])
      w:free()
      local ps = st.model.bert:params()
      for _, p in ipairs(ps) do
        if st.optimizer:has_state(p) then stateful[p:name()] = true end
      end
      free_all(ps)
    end,
  })
  check.eq(s.status, "done", "status")
  check.eq(seen[3], true, "layer[1] unchanged after steps 0-2")
  check.eq(seen[4], false, "layer[1] changed by step 3")
  local final = core.read_safetensors(d .. "/model/model.safetensors")
  for name, t in pairs(final) do
    local frozen = name:find("embeddings", 1, true) or name:find("layer.0.", 1, true)
    if frozen then
      check.truthy(same(t:flat(), initial[name]), name .. " bit-identical after training")
      check.eq(stateful[name], nil, name .. " has no optimizer state")
    end
  end
  free_all(final)
  local log = lines(d .. "/trainable.log")
  check.eq(#log, 2, "two trainable sets")
  check.eq(log[1], "step 0: pooler head", "log line 1")
  check.eq(log[2], "step 3: layer[1] pooler head", "log line 2")
  local plan = lines(d .. "/plan.txt") -- validate's plan (tests/lua/test_cli.lua checks the two are the same)
  check.truthy(plan[1]:match("^phase%s+steps"), plan[1])
  check.truthy(plan[2]:match("^1%s+0%-2%s+.-pooler, head%s"), plan[2])
  check.truthy(plan[3]:match("^2%s+3%-5%s+.-layer%[1%], pooler, head%s"), plan[3])
  check.truthy(not (plan[4] or ""):match("^3%s"), "two phases in plan.txt: " .. tostring(plan[4]))
  rm(d)
end

-- A plateau-triggered schedule trains (it crashed before step 0 when plan.txt was written), and the plan
-- says when the change comes.
function Tst.plateau_schedule_trains_and_the_plan_says_when()
  local d = tmpdir("plateau")
  local s = run(d, { ["train.max_steps"] = 12, ["train.eval_every"] = 2,
    schedule = { initial = { "head" }, rules = { { at = { plateau = { patience = 1 } }, unfreeze = { "layer[1]" } } } } })
  check.eq(s.status, "done", "status")
  local log = lines(d .. "/trainable.log")
  check.eq(log[1], "step 0: head", "trainable.log line 1")
  check.truthy((log[2] or ""):match("^step %d+: layer%[1%] head$"), "the plateau thawed layer[1]: " .. tostring(log[2]))
  local plan = read(d .. "/plan.txt")
  check.truthy(plan:find("when dev accuracy stops improving for 1 evaluation", 1, true), plan)
  rm(d)
end

-- The plan's trainable groups use trainable.log's notation for partly trainable groups (BitFit).
function Tst.plan_shows_partly_trainable_groups()
  local prep = T.prepare(F.recipe(ROOT, tmpdir("bitfit"), { schedule = { preset = "bitfit" } }))
  local plan = table.concat(require("pft.plan").lines(prep.plan), "\n")
  prep.model.bert:free()
  check.truthy(plan:find("embeddings(1/5), layer[0-1](8/16), pooler(1/2), head", 1, true), plan)
end

-- The optimizer memory of each phase is the state the optimizer really holds at its end: a chain-thaw
-- freezes groups again, and their AdamW state stays (counted, not forgotten).
function Tst.plan_optimizer_memory_is_the_state_held()
  local d = tmpdir("chainthaw")
  local over = { ["train.max_steps"] = 10, ["train.eval_every"] = 100, schedule = { preset = "chain_thaw", every = 2 } }
  local prep = T.prepare(F.recipe(ROOT, d, over))
  local phases = prep.plan.sched:plan()
  prep.model.bert:free()
  local held = {} -- steps done -> parameters with optimizer state
  local s = run(d, over, {
    on_step = function(done, st)
      local n = 0
      local ps = st.model.bert:params()
      for _, p in ipairs(ps) do if st.optimizer:has_state(p) then n = n + p:numel() end end
      free_all(ps)
      held[done] = n
    end,
  })
  check.eq(s.status, "done", "status")
  local checked, kept = 0, false
  for i, ph in ipairs(phases) do
    if not ph.unreached and not ph.dynamic then
      check.eq(held[ph.to_step + 1], ph.state_numel, ("phase %d (steps %d-%d): state held = the plan's"):format(i,
        ph.from_step, ph.to_step))
      checked = checked + 1
      kept = kept or ph.state_numel > ph.trainable_numel
    end
  end
  check.truthy(checked >= 4, "phases checked: " .. checked)
  check.truthy(kept, "some phase holds state of groups frozen again")
  check.truthy(read(d .. "/plan.txt"):find("state is kept for groups frozen again", 1, true), "plan.txt says so")
  rm(d)
end

-- eval.metrics says what is printed and logged (and best_metric still selects the model).
function Tst.eval_metrics_are_what_is_logged()
  local d = tmpdir("evalmetrics")
  local s = run(d, { ["train.max_steps"] = 4, ["train.eval_every"] = 2, ["eval.metrics"] = { "f1_macro", "loss" } })
  check.eq(s.status, "done", "status")
  local cjson = require "cjson"
  local n = 0
  for _, l in ipairs(lines(d .. "/metrics.jsonl")) do
    local rec = cjson.decode(l)
    if rec.split == "dev" then
      local keys = {}
      for k in pairs(rec.metrics) do keys[#keys + 1] = k end
      table.sort(keys)
      check.eq(table.concat(keys, " "), "f1_macro loss", "dev metrics logged at step " .. rec.step)
      n = n + 1
    end
  end
  check.eq(n, 2, "two dev evaluations")
  check.eq(require("pft.metrics").format({ accuracy = 0.5, f1_macro = 0.25, loss = 1 }, { "loss", "f1_macro" }),
    "loss 1.0000 f1 0.2500", "Mx.format prints the names asked for, in order")
  rm(d)
end

-- output.keep keeps the newest checkpoints and the best one, however old (the docs promise it).
function Tst.keep_spares_the_best_checkpoint()
  local d = tmpdir("keep")
  assert(core.mkdir(d))
  local ck = { weights = {}, optim = {}, state = { step = 0 } }
  for _, step in ipairs({ 2, 4, 6, 8 }) do Ck.save(d, step, ck, 2, 2) end
  local names = {}
  for _, p in ipairs(Ck.list(d)) do names[#names + 1] = p:match("step%-%d+$") end
  check.eq(table.concat(names, " "), "step-2 step-6 step-8", "the newest 2 and the best")
  rm(d)
  -- in a run: whatever step was best, its checkpoint is there after training
  d = tmpdir("keep-run")
  local s = run(d, { ["train.max_steps"] = 10, ["train.eval_every"] = 2, ["output.keep"] = 1, ["train.best_metric"] = "loss" })
  check.eq(s.status, "done", "status")
  check.truthy(s.best.step, "a best step")
  check.truthy(core.list_dir(d .. "/checkpoints/step-" .. s.best.step), "the best step's checkpoint kept: step " .. s.best.step)
  rm(d)
end

-- The training loss goes to metrics.jsonl every log_every steps (the mean since the previous record),
-- and an early stop says so in the final line.
function Tst.training_curve_and_early_stop_line()
  local d = tmpdir("curve")
  local out = io.tmpfile()
  local r = F.recipe(ROOT, d, { ["train.max_steps"] = 10, ["train.eval_every"] = 2, ["train.log_every"] = 3,
    ["train.early_stopping"] = { patience = 1 }, ["train.best_metric"] = "accuracy" })
  local s = T.run(r, { run_dir = d, out = out })
  local cjson = require "cjson"
  local curve = {}
  for _, l in ipairs(lines(d .. "/metrics.jsonl")) do
    local rec = cjson.decode(l)
    if rec.split == "train" then curve[#curve + 1] = rec end
  end
  check.eq(s.status, "early_stopped", "accuracy does not move on the tiny data at this rate")
  check.truthy(#curve >= 1 and curve[1].step == 3 and curve[1].steps == 3, "first record at step 3 over 3 steps")
  for _, rec in ipairs(curve) do
    check.truthy(type(rec.loss) == "number" and rec.loss > 0 and type(rec.lr) == "number", "loss and lr: " .. cjson.encode(rec))
  end
  check.eq(curve[#curve].step, s.steps, "a record after the last step")
  out:seek("set")
  local text = out:read("*a")
  out:close()
  check.truthy(text:find(("stopped early at step %d of 10 (dev accuracy did not improve for 1 evaluation)"):format(s.steps),
    1, true), text)
  check.truthy(not text:find("\ndone:"), "not 'done'")
  rm(d)
end

-- schedule.custom trains exactly as the rules it spells (same weights, same metrics), warm-up included,
-- and a run interrupted and resumed replays the function to the same end.
function Tst.custom_schedule_trains_as_the_rules_it_spells()
  local a, b, c = tmpdir("rules"), tmpdir("custom"), tmpdir("custom-resumed")
  local base = { ["train.max_steps"] = 6, ["train.eval_every"] = 3, ["lr.unfreeze_warmup"] = 2 }
  local function with(schedule)
    local o = { schedule = schedule }
    for k, v in pairs(base) do o[k] = v end
    return o
  end
  local custom = function(ctx) return ctx.step < 3 and { "pooler", "head" } or { "layer[1]", "pooler", "head" } end
  check.eq(run(a, with({ initial = { "pooler", "head" }, rules = { { at = { step = 3 }, unfreeze = { "layer[1]" } } } })).status,
    "done", "rules run")
  check.eq(run(b, with({ custom = custom })).status, "done", "custom run")
  check.eq(read(b .. "/model/model.safetensors"), read(a .. "/model/model.safetensors"), "same final weights")
  check.eq(table.concat(lines(b .. "/metrics.jsonl"), "\n"), table.concat(lines(a .. "/metrics.jsonl"), "\n"), "same metrics")
  check.eq(table.concat(lines(b .. "/trainable.log"), "\n"), table.concat(lines(a .. "/trainable.log"), "\n"), "same trainable.log")
  check.eq(run(c, with({ custom = custom }), { interrupt_at_step = 4 }).status, "interrupted", "interrupted")
  check.eq(run(c, with({ custom = custom }), { resume = c }).status, "done", "resumed")
  check.eq(read(c .. "/model/model.safetensors"), read(b .. "/model/model.safetensors"), "resumed: same final weights")
  rm(a)
  rm(b)
  rm(c)
end

-- Regression from a recipe written as docs/recipes.md says (no base): pearson picks the best model by
-- default, the dev metrics are regression's, and the export says problem_type "regression".
function Tst.regression_recipe_trains_end_to_end()
  local d = tmpdir("regression")
  local r = recipe_from_text(d, [[
return {
  model = { name = "%s/tests/fixtures/bert/tiny_regression", max_length = 16 },
  task = { kind = "regression" },
  data = {
    train = { path = "%s/tests/fixtures/train/tiny_regression.tsv", text = "sentence", label = "score" },
    dev = { path = "%s/tests/fixtures/train/tiny_regression_dev.tsv" },
    batch_size = 8,
  },
  optim = { lr = 3e-3 },
  train = { epochs = 8, eval_every = 5 },
  output = { dir = "%s" },
}
]])
  check.eq(r.train.best_metric, "pearson", "the default best metric of regression")
  local s = T.run(r, { quiet = true })
  check.eq(s.status, "done", "status")
  check.eq(s.best.metric, "pearson", "selected by pearson")
  local cjson = require "cjson"
  local dev = last_dev(d)
  check.truthy(dev and type(dev.pearson) == "number" and type(dev.mse) == "number", "dev pearson and mse logged")
  print(("  regression: dev pearson %.3f after %d steps"):format(dev.pearson, s.steps))
  check.truthy(dev.pearson > 0.5, ("the scores are learnt (dev pearson %.3f)"):format(dev and dev.pearson or 0))
  local cfg = cjson.decode(read(d .. "/best/config.json"))
  check.eq(cfg.problem_type, "regression", "exported problem_type")
  check.eq(cfg.architectures[1], "BertForSequenceClassification", "architecture")
  rm(d)
end

-- Token classification end to end on the tiny NER fixture (tiny_tokcls, 5 tags): trains with f1 as the
-- default best metric, logs entity metrics, predicts words with tags and spans, exports a
-- BertForTokenClassification with the tag names (tests/lua/test_bert.lua checks that transformers loads
-- such an export).
function Tst.token_classification_trains_end_to_end()
  local d = tmpdir("ner")
  local r = recipe_from_text(d, [[
return {
  model = { name = "%s/tests/fixtures/bert/tiny_tokcls", max_length = 16 },
  task = { kind = "token_classification", labels = { "O", "B-PER", "I-PER", "B-LOC", "I-LOC" } },
  data = {
    train = { path = "%s/tests/fixtures/train/tiny_ner.conll", format = "conll" },
    dev = { path = "%s/tests/fixtures/train/tiny_ner_dev.conll" },
    batch_size = 8,
  },
  optim = { lr = 3e-3 },
  train = { epochs = 6, eval_every = 6 },
  output = { dir = "%s" },
}
]])
  check.eq(r.train.best_metric, "f1", "entity f1 picks the best model by default")
  check.eq(r.data.dev.format, "conll", "dev takes train's format (its .conll extension says so too)")
  local s = T.run(r, { quiet = true })
  check.eq(s.status, "done", "status")
  local cjson = require "cjson"
  local dev = last_dev(d)
  for _, k in ipairs({ "f1", "precision", "recall", "token_accuracy", "loss" }) do
    check.eq(type(dev[k]), "number", "dev " .. k)
  end
  print(("  token classification: dev f1 %.3f, token accuracy %.3f after %d steps"):format(dev.f1, dev.token_accuracy, s.steps))
  check.truthy(dev.f1 > 0.5, ("entities are learnt (dev f1 %.3f)"):format(dev.f1))
  local inp = d .. "/in.txt"
  local fh = assert(io.open(inp, "wb"))
  fh:write("the actor charming is good\nno one\n")
  fh:close()
  check.eq(T.predict(d, inp, d .. "/p.jsonl"), 2, "two sentences")
  local p = cjson.decode(lines(d .. "/p.jsonl")[1])
  check.eq(#p.tags, 5, "a tag per word")
  check.eq(p.tagged:match("^the/%S+ actor/"), "the/" .. p.tags[1] .. " actor/", "word/TAG text")
  check.eq(type(p.entities), "table", "entity spans")
  check.truthy(lines(d .. "/p.jsonl")[2]:find('"entities":[', 1, true), "spans are a JSON list, also when empty")
  -- a sentence longer than max_length (16 tokens): its cut-off words are counted and their entity missed
  local long = d .. "/long.conll"
  fh = assert(io.open(long, "wb"))
  for _ = 1, 18 do fh:write("the O 0\n") end
  fh:write("actor B-PER 0\n\nshe B-PER 0\n")
  fh:close()
  local mx = T.evaluate(d, { path = long, format = "conll" })
  check.eq(mx.words_cut, 5, "words beyond max_length 16 ([CLS] + 14 words + [SEP]) counted")
  check.eq(mx.per_type.PER.support, 2, "both entities are scored")
  check.truthy(mx.recall <= 0.5, "the cut-off entity counts as missed (recall " .. mx.recall .. ")")
  local cfg = cjson.decode(read(d .. "/best/config.json"))
  check.eq(cfg.architectures[1], "BertForTokenClassification", "exported architecture")
  check.eq(cfg.id2label["1"], "B-PER", "exported tag names")
  rm(d)
end

-- Interrupted after step 3 (as Ctrl-C would), resumed: the same metrics.jsonl and bit-identical weights
-- as one uninterrupted run (dropout on, shuffled data, linear warm-up and decay).
function Tst.resume_is_equivalent_to_an_uninterrupted_run()
  local a, b = tmpdir("full"), tmpdir("resumed")
  local over = { ["train.max_steps"] = 8, ["train.eval_every"] = 2 }
  local sa = run(a, over)
  check.eq(sa.exit_code, 0, "uninterrupted exit code")
  local sb = run(b, over, { interrupt_at_step = 3 })
  check.eq(sb.status, "interrupted", "interrupted")
  check.eq(sb.exit_code, 130, "interrupt exit code")
  check.truthy(sb.checkpoint:find("step%-3$"), "checkpoint at step 3: " .. tostring(sb.checkpoint))
  local sc = run(b, over, { resume = b })
  check.eq(sc.exit_code, 0, "resumed exit code")
  check.eq(sc.steps, 8, "steps")
  local ma, mb = lines(a .. "/metrics.jsonl"), lines(b .. "/metrics.jsonl")
  check.eq(#mb, #ma, "metrics lines")
  for i = 1, #ma do check.eq(mb[i], ma[i], "metrics.jsonl line " .. i) end
  check.eq(read(b .. "/model/model.safetensors"), read(a .. "/model/model.safetensors"), "final weights identical")
  local kept = Ck.list(b) -- output.keep = 2: the newest two (steps 6 and 8), and the best when older
  local best_older = sc.best.step < 6
  check.eq(#kept, best_older and 3 or 2, "output.keep = 2 checkpoints kept, and the best (step " .. sc.best.step .. ")")
  rm(a)
  rm(b)
end

-- train.precision = "bf16" (where this processor has bf16 GEMMs): the run computes in bf16 (its numbers
-- are not fp32's, but close), says so in its plan, resumes bit-identically, and the next fp32 run is fp32.
function Tst.bf16_trains_close_to_fp32_and_resumes_bit_identically()
  local have = pcall(core.set_precision, "bf16")
  core.set_precision("fp32")
  if not have then
    print("  bf16: no bf16 GEMMs on this processor: skipped (test_cli checks the refusal)")
    return
  end
  local fp32 = { ["train.max_steps"] = 8, ["train.eval_every"] = 4 }
  local bf16 = { ["train.max_steps"] = 8, ["train.eval_every"] = 4, ["train.precision"] = "bf16" }
  local a, b, c = tmpdir("fp32"), tmpdir("bf16"), tmpdir("bf16-resumed")
  check.eq(run(a, fp32).exit_code, 0, "fp32 run")
  check.eq(run(b, bf16).exit_code, 0, "bf16 run")
  check.truthy((read(b .. "/plan.txt") or ""):find("precision: bf16 GEMMs", 1, true), "plan.txt names the precision")
  check.truthy(not (read(a .. "/plan.txt") or ""):find("precision:", 1, true), "an fp32 plan has no precision line")
  local la, lb = last_dev(a).loss, last_dev(b).loss
  check.truthy(la ~= lb, ("bf16 computes in bf16: dev loss %.9g, fp32's %.9g"):format(lb, la))
  check.near(lb, la, 0.02 * math.abs(la), "bf16's dev loss within 2% of fp32's")
  check.truthy(run(c, bf16, { interrupt_at_step = 3 }).exit_code == 130, "bf16 run interrupted")
  check.eq(run(c, bf16, { resume = c }).exit_code, 0, "bf16 run resumed")
  check.eq(read(c .. "/model/model.safetensors"), read(b .. "/model/model.safetensors"), "resumed bf16: identical weights")
  local d = tmpdir("fp32-again")
  check.eq(run(d, fp32).exit_code, 0, "fp32 after bf16")
  check.eq(core.precision(), "fp32", "a run's precision is its recipe's")
  check.eq(read(d .. "/model/model.safetensors"), read(a .. "/model/model.safetensors"), "fp32 after bf16: fp32's weights")
  for _, dir in ipairs({ a, b, c, d }) do rm(dir) end
end

function Tst.nan_loss_stops_and_keeps_the_last_good_checkpoint()
  local d = tmpdir("nan")
  local s = run(d, { ["train.max_steps"] = 10, ["train.eval_every"] = 5 }, { nan_at_step = 7 })
  check.eq(s.status, "nan", "status")
  check.eq(s.exit_code, 1, "exit code")
  check.eq(s.message, "loss is nan at step 7; stopped, last good checkpoint: " .. d .. "/checkpoints/step-5", "message")
  local ck = Ck.load(s.checkpoint)
  check.eq(ck.state.step, 5, "checkpoint intact")
  check.eq(core.list_dir(d .. "/checkpoints/step-7"), nil, "no checkpoint of the bad step")
  rm(d)
  -- an absurd learning rate, for real: the loss overflows within a few steps
  d = tmpdir("nan-lr")
  s = run(d, { ["train.max_steps"] = 10, ["optim.lr"] = 1e30, ["train.grad_clip"] = 0 })
  check.eq(s.status, "nan", "absurd lr stops")
  check.truthy(s.message:find("^loss is [na][an][nf] at step %d+; stopped, last good checkpoint: none$"), s.message)
  rm(d)
end

-- Gradient accumulation: 2 micro-batches of 4 = one batch of 8 (dropout off, SGD, no shuffle).
function Tst.grad_accumulation_equals_a_bigger_batch()
  local model = tmpdir("nodrop")
  assert(core.mkdir(model))
  local src = ROOT .. "/tests/fixtures/bert/tiny_seqcls/"
  for _, f in ipairs({ "model.safetensors", "vocab.txt", "tokenizer_config.json" }) do
    local fh = io.open(model .. "/" .. f, "wb")
    fh:write(read(src .. f))
    fh:close()
  end
  local cfg = read(src .. "config.json"):gsub('"attention_probs_dropout_prob": [%d.]+', '"attention_probs_dropout_prob": 0.0')
    :gsub('"hidden_dropout_prob": [%d.]+', '"hidden_dropout_prob": 0.0')
  local fh = io.open(model .. "/config.json", "wb")
  fh:write(cfg)
  fh:close()
  local common = { ["model.name"] = model, ["data.shuffle"] = false, ["train.max_steps"] = 5, ["optim.name"] = "sgd",
    ["optim.lr"] = 0.1, ["lr_schedule.name"] = "constant", ["lr_schedule.warmup"] = 0 }
  local a, b = tmpdir("acc1"), tmpdir("acc2")
  local oa, ob = {}, {}
  for k, v in pairs(common) do oa[k], ob[k] = v, v end
  oa["data.batch_size"], oa["train.grad_accum"] = 8, 1
  ob["data.batch_size"], ob["train.grad_accum"] = 4, 2
  run(a, oa)
  run(b, ob)
  local wa, wb = core.read_safetensors(a .. "/model/model.safetensors"), core.read_safetensors(b .. "/model/model.safetensors")
  local worst = 0
  for name, t in pairs(wa) do
    local x, y = t:flat(), wb[name]:flat()
    for i = 1, #x do worst = math.max(worst, math.abs(x[i] - y[i])) end
  end
  free_all(wa)
  free_all(wb)
  check.truthy(worst < 1e-6, ("max difference %g"):format(worst))
  rm(a)
  rm(b)
  rm(model)
end

-- A real SIGINT to `build/pft` while it trains: a checkpoint, exit status 130.
function Tst.ctrl_c_saves_a_checkpoint_and_exits_130()
  local d = tmpdir("sigint")
  assert(core.mkdir(d))
  local cmd = ([[cd '%s' && ( '%s' tests/lua/train_driver.lua '%s/run' train.epochs=100000 train.log_every=1 \
    train.eval_every=1000 >'%s/out' 2>&1 & p=$!; i=0; while [ $i -lt 200 ] && ! grep -q '^step 3/' '%s/out' 2>/dev/null; do \
    sleep 0.05; i=$((i+1)); done; kill -INT $p; wait $p; echo $? >'%s/rc' )]]):format(ROOT, TEST_PFT, d, d, d, d)
  os.execute(cmd)
  check.eq((read(d .. "/rc") or ""):gsub("%s", ""), "130", "exit status (output: " .. tostring(read(d .. "/out")) .. ")")
  local latest = Ck.latest(d .. "/run")
  check.truthy(latest, "a checkpoint exists")
  local ck = Ck.load(latest)
  check.truthy(ck.state.step >= 3, "checkpoint after step 3 or later")
  check.truthy((read(d .. "/out") or ""):find("interrupted at step", 1, true), "says it was interrupted")
  rm(d)
end

function Tst.evaluate_predict_export_from_a_run()
  local d = tmpdir("use")
  run(d, { ["train.max_steps"] = 3, ["train.eval_every"] = 3 })
  local mx = T.evaluate(d, { path = ROOT .. "/tests/fixtures/train/tiny_dev.tsv" })
  local want
  for _, l in ipairs(lines(d .. "/metrics.jsonl")) do
    local rec = require("cjson").decode(l)
    if rec.split == "dev" then want = rec.metrics end
  end
  check.near(mx.accuracy, want.accuracy, 1e-12, "evaluate = the run's dev accuracy (best model)")
  check.near(mx.loss, want.loss, 1e-6, "evaluate loss")
  local inp = d .. "/in.txt"
  local fh = io.open(inp, "wb")
  fh:write("the movie is good\nit is awful\n")
  fh:close()
  check.eq(T.predict(d, inp, d .. "/p.jsonl"), 2, "two predictions")
  for _, l in ipairs(lines(d .. "/p.jsonl")) do
    local r = require("cjson").decode(l)
    local sum, best, arg = 0, -1, nil
    for k, v in pairs(r.probs) do
      sum = sum + v
      if v > best then best, arg = v, k end
    end
    check.near(sum, 1, 1e-6, "probabilities sum to 1")
    check.eq(r.label, arg, "label = argmax")
  end
  T.export(d, d .. "/exported")
  check.truthy(read(d .. "/exported/config.json"):find('"neg"', 1, true), "labels in the exported config")
  rm(d)
end

-- `pft export RUN DEST` writes the best model as eval and predict use it, --final the last step's, and
-- says which it wrote.
function Tst.export_writes_the_best_model_by_default()
  local d = tmpdir("export")
  local s = run(d, { ["train.max_steps"] = 6, ["train.eval_every"] = 2, ["train.best_metric"] = "loss" })
  check.eq(s.status, "done", "status")
  local function pft_export(args)
    local p = io.popen(("%s export '%s' '%s' %s 2>&1"):format(TEST_PFT, d, d .. "/out", args))
    local out = p:read("*a")
    p:close()
    return out
  end
  local out = pft_export("")
  check.truthy(out:find("exported the best model of " .. d .. " (best/)", 1, true), out)
  check.eq(read(d .. "/out/model.safetensors"), read(d .. "/best/model.safetensors"), "default: best/'s weights")
  rm(d .. "/out")
  out = pft_export("--final")
  check.truthy(out:find("exported the final model of " .. d .. " (model/)", 1, true), out)
  check.eq(read(d .. "/out/model.safetensors"), read(d .. "/model/model.safetensors"), "--final: model/'s weights")
  rm(d .. "/out")
  check.truthy(pft_export("--best --final"):find("exclude each other", 1, true), "both refused")
  rm(d)
end

function Tst.interrupt_hooks_outside_training()
  check.eq(core.interrupted(), false, "not interrupted")
  check.eq(type(core.watch_interrupts(false)), "boolean", "watch_interrupts answers")
  check.eq(core.isatty(-1), false, "isatty of a bad fd")
end

return Tst
