-- pft sweep and pft compare on the tiny fixture model: grids from the command line and from sweep
-- files, every cell checked first, resume by re-running, shards, the comparison table and its formats,
-- a recipe diff, runs of different tasks, charts with and without gnuplot.
local check = require "check"
local Sw = require "pft.sweep"
local cjson = require "cjson"
local C = require "pft.compare"

local T = {}
local ROOT = TEST_ROOT
local TMP = os.getenv("TMPDIR") or "/tmp"
local n_tmp = 0

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function tmpdir(tag)
  n_tmp = n_tmp + 1
  local d = ("%s/pft-test-sweep-%d-%s-%d"):format(TMP, os.time(), tag, n_tmp)
  os.execute("rm -rf " .. sh_quote(d) .. " && mkdir -p " .. sh_quote(d))
  return d
end

local function rm(d) os.execute("rm -rf " .. sh_quote(d)) end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function pft(args, env)
  local p = assert(io.popen(("cd %s && %s %s %s 2>&1; echo __rc=$?"):format(sh_quote(ROOT), env or "", sh_quote(TEST_PFT), args)))
  local out = p:read("*a")
  p:close()
  return out:gsub("__rc=%d+%s*$", ""), tonumber(out:match("__rc=(%d+)%s*$"))
end

-- the tiny recipe as a file (its paths under root, default ROOT)
local function recipe_file(dir, root)
  root = root or ROOT
  local path = dir .. "/tiny.lua"
  write(path, ([[
return {
  model = { name = "%s/tests/fixtures/bert/tiny_seqcls", max_length = 16 },
  task = { kind = "classification", labels = { "neg", "neu", "pos" } },
  data = { train = { path = "%s/tests/fixtures/train/tiny.tsv" }, dev = { path = "%s/tests/fixtures/train/tiny_dev.tsv" },
    batch_size = 8 },
  schedule = { preset = "top_k", k = 1 },
  optim = { lr = 1e-3 },
  train = { epochs = 1, eval_every = 5 },
}
]]):format(root, root, root))
  return path
end

local function jsonl_cells(path)
  local cjson, out = require "cjson", {}
  for line in (read(path) or ""):gmatch("[^\n]+") do
    local r = cjson.decode(line)
    out[#out + 1] = ("%s %.6f"):format(r.cell, r.summary.best and r.summary.best.value or -1)
  end
  table.sort(out)
  return table.concat(out, "; ")
end

function T.grid_from_the_command_line_and_every_cell_checked_first()
  local d = tmpdir("grid")
  local r = recipe_file(d)
  local spec = Sw.from_args(r, { "schedule.k=1,2", "train.seed=3,4", "optim.lr=2e-3" })
  local cells = Sw.cells(spec)
  check.eq(#cells, 4, "2 x 2 cells")
  local names = {}
  for i, c in ipairs(cells) do names[i] = c.name end
  check.eq(table.concat(names, " "), "k=1,seed=3 k=1,seed=4 k=2,seed=3 k=2,seed=4", "cell names, keys sorted")
  check.eq(cells[4].recipe.schedule.k, 2, "a cell's recipe")
  check.eq(cells[4].recipe.optim.lr, 2e-3, "a plain override applies to every cell")
  local ok, err = pcall(Sw.cells, Sw.from_args(r, { "schedule.k=1,9" }))
  check.eq(ok, false, "k = 9 on a 2-layer model")
  check.truthy(tostring(err):find("cell k=9:", 1, true) and tostring(err):find("schedule.k = 9", 1, true), tostring(err))
  ok, err = pcall(Sw.cells, Sw.from_args(r, { "optim.lrr=1,2" }))
  check.truthy(not ok and tostring(err):find("unknown key 'optim.lrr'", 1, true), tostring(err))
  check.truthy(not pcall(Sw.from_args, r, { "schedule.k=1,,2" }), "an empty value in a list")
  ok, err = pcall(Sw.shard, "3/2")
  check.truthy(not ok and tostring(err):find("--shard 3/2: expected i/n with 0 <= i < n", 1, true), tostring(err))
  check.eq(table.concat(Sw.shard("1/3"), "/"), "1/3", "a shard")
  rm(d)
end

function T.sweep_files_are_checked()
  local d = tmpdir("file")
  local r = recipe_file(d)
  local function load(body)
    write(d .. "/s.lua", body)
    return pcall(Sw.load, d .. "/s.lua")
  end
  local ok, err = load(('return { base = %q, grid = { ["schedule.k"] = {} } }'):format(r))
  check.truthy(not ok and tostring(err):find("grid['schedule.k'] must be a non-empty list", 1, true), tostring(err))
  ok, err = load(('return { base = %q, gird = {} }'):format(r))
  check.truthy(not ok and tostring(err):find("unknown key 'gird'", 1, true), tostring(err))
  ok, err = load('return { grid = { ["schedule.k"] = { 1 } } }')
  check.truthy(not ok and tostring(err):find("base (a recipe name or file) is required", 1, true), tostring(err))
  local spec
  ok, spec = load(('return { base = %q, grid = { ["schedule.k"] = { 1, 2 } }, seeds = { 5 },\n' ..
    'variants = { head = { schedule = { preset = "head" } }, top = { schedule = { preset = "top_k" } } } }'):format(r))
  check.truthy(ok, tostring(spec))
  local cells = Sw.cells(spec)
  check.eq(#cells, 4, "2 variants x 2 k x 1 seed")
  check.eq(cells[1].name, "head,k=1,seed=5", "variant first in the name")
  check.eq(cells[1].recipe.schedule.preset, "head", "the variant's fragment")
  check.eq(Sw.is_sweep_file(d .. "/s.lua"), true, "a sweep file")
  check.eq(Sw.is_sweep_file(r), false, "a recipe is not one")
  rm(d)
end

-- Cells on one model and one data share the activation cache: one pass per split computes the
-- boundaries of all of them (top 1: layer[1] in, head: pooled) before the first cell, and every cell
-- then reads them (compute_s 0 in its summary) and starts there.
function T.sweep_cells_share_the_activation_cache()
  local d = tmpdir("share")
  local r = recipe_file(d)
  local out, rc = pft(("sweep %s schedule.preset=top_k,head train.seed=1,2 --dir %s"):format(sh_quote(r), sh_quote(d .. "/sw")),
    "PFT_CACHE=" .. sh_quote(d .. "/cache"))
  check.eq(rc, 0, "sweep: " .. out)
  local train_lines = 0
  for l in out:gmatch("[^\n]+") do
    if l:find("activation cache: ", 1, true) and l:find(" of train ", 1, true) then
      train_lines = train_lines + 1
      check.truthy(l:find("layer[1] in, pooled of train", 1, true) and l:find("shared by 4 cells", 1, true),
        "one pass for every boundary: " .. l)
    end
  end
  check.eq(train_lines, 1, "the train split is computed once: " .. out)
  local n = 0
  for l in (read(d .. "/sw/sweep.jsonl") or ""):gmatch("[^\n]+") do
    local c = cjson.decode(l).summary.cache
    check.eq(c.compute_s, 0, "a cell computed nothing: " .. l)
    check.truthy(c.batches_served > 0, "a cell started from the cache: " .. l)
    n = n + 1
  end
  check.eq(n, 4, "four cells")
  rm(d)
end

-- A sweep run: one line per cell; the same command again skips them; an interrupted cell resumes; two
-- shards run at once give the same cells and results as one process.
function T.sweep_runs_resumes_and_shards()
  local d = tmpdir("run")
  local r = recipe_file(d)
  local args = ("sweep %s schedule.k=1,2 train.seed=1,2 --dir %s"):format(sh_quote(r), sh_quote(d .. "/one"))
  local out, rc = pft(args, "PFT_TEST_INTERRUPT_AT_STEP=2")
  check.eq(rc, 130, "the first cell interrupted: " .. out)
  check.truthy(out:find("run the same command again to resume", 1, true), out)
  out, rc = pft(args)
  check.eq(rc, 0, "resumed and finished: " .. out)
  local lines = {}
  for l in (read(d .. "/one/sweep.jsonl") or ""):gmatch("[^\n]+") do lines[#lines + 1] = l end
  check.eq(#lines, 4, "one line per cell")
  out, rc = pft(args)
  check.eq(rc, 0, "again")
  check.eq(select(2, out:gsub("done before, skipped", "")), 4, "every cell skipped: " .. out)
  local shards = ("cd %s && (%s sweep %s schedule.k=1,2 train.seed=1,2 --dir %s --shard 0/2 >/dev/null 2>&1 & " ..
    "%s sweep %s schedule.k=1,2 train.seed=1,2 --dir %s --shard 1/2 >/dev/null 2>&1; wait)"):format(sh_quote(ROOT),
    sh_quote(TEST_PFT), sh_quote(r), sh_quote(d .. "/two"), sh_quote(TEST_PFT), sh_quote(r), sh_quote(d .. "/two"))
  os.execute(shards)
  check.eq(jsonl_cells(d .. "/two/sweep.jsonl"), jsonl_cells(d .. "/one/sweep.jsonl"), "two shards = one process (as a set)")
  rm(d)
end

function T.check_only_and_a_chosen_directory_the_only_one_made()
  local d = tmpdir("dir")
  local pwd = assert(io.popen(("cd %s && pwd"):format(sh_quote(ROOT))))
  local abs_root = pwd:read("*l") -- the sweep below runs from d: every path it reads is absolute
  pwd:close()
  local r = recipe_file(d, abs_root)
  local out = d .. "/deep/er/sweep"
  -- --check: every cell checked and listed, nothing made
  local text, rc = pft(("sweep %s train.seed=1,2 --dir %s --check"):format(sh_quote(r), sh_quote(out)))
  check.eq(rc, 0, text)
  check.truthy(text:find("2 cells, every one resolved and checked", 1, true) and text:find("cell 2/2 seed=2", 1, true), text)
  check.eq(read(out .. "/sweep.json"), nil, "--check makes no sweep directory")
  text, rc = pft(("sweep %s train.seed=1,2 optim.lr=1e-3,-1 --check"):format(sh_quote(r)))
  check.truthy(rc ~= 0 and text:find("cell lr=-1", 1, true), "a bad cell named by --check: " .. text)
  os.execute(("cd %s && %s sweep %s train.seed=1,2 --dir %s >/dev/null 2>&1"):format(sh_quote(d),
    sh_quote(abs_root .. "/build/pft"), sh_quote(r), sh_quote(out)))
  check.truthy(read(out .. "/sweep.jsonl"), "the sweep went to --dir, its parents made")
  local p = assert(io.popen(("test -e %s && echo there || echo absent"):format(sh_quote(d .. "/sweeps"))))
  check.eq(p:read("*l"), "absent", "no sweeps/ made in the working directory")
  p:close()
  rm(d)
end

function T.compare_tables_formats_diffs_and_charts()
  local d = tmpdir("cmp")
  local r = recipe_file(d)
  local _, rc = pft(("sweep %s schedule.k=1,2 train.seed=1,2 --dir %s"):format(sh_quote(r), sh_quote(d .. "/sw")))
  check.eq(rc, 0, "sweep")
  local runs = C.collect({ d .. "/sw" })
  check.eq(#runs, 4, "four runs")
  local t = C.table(runs)
  check.eq(table.concat(t.columns, " "), "schedule.k", "the varied key (the seed is averaged)")
  check.eq(#t.rows, 2, "one row per k")
  check.eq(t.rows[1].n, 2, "two seeds in a row")
  check.eq(t.rows[1].best, true, "the best marked")
  check.truthy(t.rows[1].params < t.rows[2].params or t.rows[1].dev[1] >= t.rows[2].dev[1], "sorted by the metric")
  local text = C.format(t, "text")
  check.truthy(text:find("schedule.k", 1, true) and text:find("dev accuracy", 1, true), text)
  check.truthy(C.format(t, "md"):find("^| ") ~= nil, "markdown")
  check.eq(select(2, C.format(t, "csv"):gsub("\n", "")), 3, "csv: header + 2 rows")
  check.eq(#require("cjson").decode(C.format(t, "json")).rows, 2, "json rows")
  check.raises(function() C.format(t, "xml") end, "--format xml: text, md, csv or json")
  local diff = C.diff(runs[1], runs[4])
  check.eq(#diff, 2, "k and seed differ")
  check.eq(diff[1][1] .. "=" .. diff[1][2] .. "/" .. diff[1][3], "schedule.k=1/2", "the diff")
  -- runs of another task: its metric columns blank, no error
  local ner = d .. "/ner.lua"
  write(ner, ([[
return {
  model = { name = "%s/tests/fixtures/bert/tiny_tokcls", max_length = 16 },
  task = { kind = "token_classification", labels = { "O", "B-PER", "I-PER", "B-LOC", "I-LOC" } },
  data = { train = { path = "%s/tests/fixtures/train/tiny_ner.conll", format = "conll", limit = 16 }, batch_size = 8 },
  train = { epochs = 1 }, output = { dir = "%s/nerrun" },
}
]]):format(ROOT, ROOT, d))
  local out
  out, rc = pft("train " .. sh_quote(ner))
  check.eq(rc, 0, "a token-classification run: " .. out)
  local mixed = C.table(C.collect({ d .. "/sw/k=1,seed=1", d .. "/nerrun" }))
  check.eq(#mixed.rows, 2, "two rows")
  check.truthy(mixed.rows[2].dev[1] == nil, "accuracy blank for the NER run")
  check.raises(function() C.collect({ d .. "/nothing" }) end, "neither a run directory")
  -- charts: with gnuplot (when installed), and a message without it
  out = pft(("compare %s --charts %s"):format(sh_quote(d .. "/sw"), sh_quote(d .. "/charts")), "PATH=/nonexistent")
  check.truthy(out:find("gnuplot not found", 1, true), out)
  if os.execute("command -v gnuplot >/dev/null 2>&1") == 0 then
    out = pft(("compare %s"):format(sh_quote(d .. "/sw")))
    check.truthy(read(d .. "/sw/charts/metric-vs-params.png") and read(d .. "/sw/charts/curves.svg"), "charts written: " .. out)
  end
  out, rc = pft(("compare %s %s"):format(sh_quote(d .. "/sw/k=1,seed=1"), sh_quote(d .. "/sw/k=2,seed=2")))
  check.eq(rc, 0, "compare two runs")
  check.truthy(out:find("schedule.k: 1 vs 2", 1, true), out)
  rm(d)
end

return T
