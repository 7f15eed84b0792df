-- The frozen-prefix activation cache (lua/pft/actcache.lua, core/states.h) on the tiny fixture model:
-- cached states equal the live prefix, a run with the cache equals the run without it (losses, dev
-- metrics, weights), the boundary follows the schedule down and never back up, damaged and foreign
-- files are not used, the budget and train.cache = false are honoured, and the plan says all of it.
local core = require "pft.core"
local check = require "check"
local F = require "train_fixtures"
local A = require "pft.actcache"
local D = require "pft.data"
local Model = require "pft.model"
local Plan = require "pft.plan"
local S = require "pft.schedule"
local T = require "pft.train"
local cjson = require "cjson"

local ROOT = TEST_ROOT
local TMP = os.getenv("TMPDIR") or "/tmp"
local n_tmp = 0
local function tmpdir(tag)
  n_tmp = n_tmp + 1
  local d = ("%s/pft-test-actcache-%d-%s-%d"):format(TMP, os.time(), tag, n_tmp)
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

local function train_losses(dir)
  local out = {}
  for l in (read(dir .. "/metrics.jsonl") or ""):gmatch("[^\n]+") do
    local r = cjson.decode(l)
    if r.split == "train" then out[#out + 1] = r.loss end
  end
  return out
end

local function dev_metrics(dir)
  local out = {}
  for l in (read(dir .. "/metrics.jsonl") or ""):gmatch("[^\n]+") do
    local r = cjson.decode(l)
    if r.split == "dev" then out[#out + 1] = r.metrics end
  end
  return out
end

local function run(dir, over, opts)
  opts = opts or {}
  opts.quiet = true
  opts.run_dir = dir
  return T.run(F.recipe(ROOT, dir, over), opts)
end

-- max |a - b| / (1 + |b|) over two flat tables
local function max_rel(a, b)
  local m = 0
  for i = 1, math.max(#a, #b) do
    local d = math.abs((a[i] or 0 / 0) - (b[i] or 0 / 0)) / (1 + math.abs(b[i] or 0))
    if not (d <= m) then m = d end
  end
  return m
end

local function tiny_loader(m, opts)
  opts = opts or {}
  local ds = D.read({ path = ROOT .. "/tests/fixtures/train/tiny.tsv", format = "tsv", header = true, text = "sentence",
    label = "label" }, { task = "classification" })
  return D.loader(ds, m.tokenizer, { batch_size = opts.batch_size or 8, max_length = opts.max_length or 16, cache = false })
end

local function tiny_model()
  return Model.load(ROOT .. "/tests/fixtures/bert/tiny_seqcls", { head = "seqcls", num_labels = 3 })
end

local T_ = {}

-- Boundaries from trained sets: the lowest group trained so far; an embedding means no cache.
function T_.boundary_of_follows_the_lowest_group()
  local info = S.model_info({ "bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.query.weight",
    "bert.encoder.layer.1.output.dense.weight", "bert.pooler.dense.weight", "classifier.weight" })
  local head_only = { ["classifier.weight"] = true }
  check.eq(A.boundary_of(head_only, info, "seqcls"), 3, "head only: the pooled output (L + 1)")
  check.eq(A.kind(3, info, "seqcls"), "pooled", "kind of L + 1")
  check.eq(A.boundary_of({ ["bert.pooler.dense.weight"] = true }, info, "seqcls"), 2, "pooler: the last layer's [CLS]")
  check.eq(A.kind(2, info, "seqcls"), "first", "kind of L with a sequence head")
  check.eq(A.kind(2, info, "tokcls"), "tokens", "kind of L with a token head")
  check.eq(A.boundary_of(head_only, info, "tokcls"), 2, "token head only: the last layer's output")
  check.eq(A.boundary_of({ ["bert.encoder.layer.1.output.dense.weight"] = true, ["classifier.weight"] = true }, info, "seqcls"), 1,
    "top layer: its input")
  check.eq(A.boundary_of({ ["bert.encoder.layer.0.attention.self.query.weight"] = true }, info, "seqcls"), 0, "layer 0")
  check.eq(A.boundary_of({ ["bert.embeddings.word_embeddings.weight"] = true }, info, "seqcls"), nil, "embeddings: live")
  check.eq(A.label(nil, info, "seqcls"), "live", "label of nil")
  check.eq(A.label(1, info, "seqcls"), "layer[1] in", "label of a layer boundary")
  -- the budget keeps the boundaries that serve the most steps
  local chosen, skipped = A.choose({ { b = 1, steps = 10 }, { b = 2, steps = 30 }, { b = 3, steps = 5 } },
    function(b) return b * 100 end, 500)
  check.eq(table.concat(chosen, ","), "1,2", "chosen under a budget of 500: 2 (30 steps), then 1 fits")
  check.eq(table.concat(skipped, ","), "3", "skipped: 3 no longer fits")
end

-- The states a store holds equal the live frozen prefix of the same rows, computed in other batches.
function T_.cached_states_equal_the_live_prefix()
  local dir = tmpdir("states")
  local m = tiny_model()
  local loader = tiny_loader(m, { batch_size = 8 })
  local cache = A.new(m, { train = loader }, { dir = dir, head = "seqcls" })
  check.truthy(cache:ensure({ 0, 1, 2, 3 }) >= 0, "ensure")
  local rows = { 17, 3, 40, 9, 22 } -- not a batch the cache was computed in
  local batch = loader.enc:gather(rows, 0)
  m.bert:train(false)
  local hidden, pooled, logits, taps = core.no_grad(function() return m.bert:forward_taps(batch) end)
  for b = 0, 1 do
    local x = cache.stores.train[b]:gather(rows)
    local want = taps[b + 1]:flat()
    local got = x:flat()
    check.eq(#got, #want, "boundary " .. b .. ": as many floats as the live tap")
    check.truthy(max_rel(got, want) <= 1e-6, ("boundary %d: within 1e-6 relative (%.3g)"):format(b, max_rel(got, want)))
    x:free()
  end
  local cls = cache.stores.train[2]:gather(rows) -- the last layer's first token of each row
  local last, first, at = taps[3]:flat(), {}, 0
  for _, r in ipairs(rows) do
    for j = 1, 32 do first[#first + 1] = last[at + j] end
    at = at + loader.lengths[r] * 32
  end
  check.truthy(max_rel(cls:flat(), first) <= 1e-6, "[CLS] after the last layer within 1e-6")
  cls:free()
  local p = cache.stores.train[3]:gather(rows)
  check.truthy(max_rel(p:flat(), pooled:flat()) <= 1e-6, "pooled output within 1e-6")
  -- the forward from each boundary gives the live logits
  for b = 0, 3 do
    local _, _, lg = core.no_grad(function() return cache:forward("train", b, { rows = rows, batch = batch }) end)
    check.truthy(max_rel(lg:flat(), logits:flat()) <= 1e-5, "logits from boundary " .. b)
    lg:free()
  end
  p:free()
  for _, t in ipairs(taps) do t:free() end
  hidden:free(); pooled:free(); logits:free(); batch:free()
  cache:free()
  m.bert:free()
  rm(dir)
end

-- A run that starts its steps and evaluations from the cache gives the losses, dev metrics and weights
-- of the run without it. top_k k = 1 on 2 layers: boundary 1 for every step.
local function same_run(over, what)
  local a, b = tmpdir("with"), tmpdir("without")
  over["train.log_every"] = 1
  over["train.max_steps"] = 20
  over["train.epochs"] = 5
  over["train.eval_every"] = 10
  local with = {}
  for k, v in pairs(over) do with[k] = v end
  local test = { path = ROOT .. "/tests/fixtures/train/tiny_dev.tsv", format = "tsv", header = true, text = "sentence",
    label = "label" }
  with["data.test"], over["data.test"] = test, test
  local sa = run(a, with)
  over["train.cache"] = false
  local sb = run(b, over)
  check.eq(sa.steps, 20, what .. ": 20 steps")
  local la, lb = train_losses(a), train_losses(b)
  check.eq(#la, 20, what .. ": a loss per step")
  for i = 1, #lb do
    check.truthy(math.abs(la[i] - lb[i]) <= 1e-4, ("%s: step %d loss %.6f vs %.6f"):format(what, i, la[i], lb[i]))
  end
  check.truthy(sa.test and sb.test and math.abs(sa.test.loss - sb.test.loss) <= 1e-4 and sa.test.accuracy == sb.test.accuracy,
    what .. ": the same test metrics")
  local da, db = dev_metrics(a), dev_metrics(b)
  check.eq(#da, #db, what .. ": as many evaluations")
  for i = 1, #db do check.truthy(math.abs(da[i].loss - db[i].loss) <= 1e-4, what .. ": dev loss " .. i) end
  local wa, wb = core.read_safetensors(a .. "/model/model.safetensors"), core.read_safetensors(b .. "/model/model.safetensors")
  local worst = 0
  for n, t in pairs(wb) do
    worst = math.max(worst, max_rel(wa[n]:flat(), t:flat()))
  end
  check.truthy(worst <= 1e-4, ("%s: weights after 20 steps within 1e-4 relative (%.3g)"):format(what, worst))
  for _, t in pairs(wa) do t:free() end
  for _, t in pairs(wb) do t:free() end
  local summary = cjson.decode(read(a .. "/summary.json"))
  rm(a); rm(b)
  return summary, sa
end

function T_.a_cached_run_equals_the_live_run()
  local s = same_run({ ["schedule.preset"] = "top_k", ["schedule.k"] = 1 }, "top_k 1")
  check.eq(s.cache.enabled, true, "summary: cache on")
  check.eq(table.concat(s.cache.boundaries, ","), "layer[1] in", "summary: the boundary served")
  -- 20 steps of one batch, 2 evaluations of the dev split's one batch (40 rows of 8, 16 per dev batch)
  check.eq(s.cache.batches_served, 20 + 2 * 1, "every training and dev batch came from the cache")
end

function T_.head_only_runs_from_the_pooled_output()
  local s = same_run({ ["schedule.preset"] = "head" }, "head")
  check.eq(table.concat(s.cache.boundaries, ","), "pooled", "summary: the pooled output served")
  check.eq(s.cache.batches_served, 22, "head only: every batch from the cache")
end

-- gradual unfreezing lowers the boundary each phase (pooled... [CLS], layer[1] in, layer[0] in, live);
-- chain-thaw trains the embeddings first, so nothing below is ever frozen again: live throughout.
function T_.the_boundary_moves_with_the_schedule()
  local s = same_run({ ["schedule.preset"] = "gradual", ["schedule.every"] = 4 }, "gradual")
  -- every boundary it passes but layer[0] in (the embeddings' output: cheaper to compute than to read)
  check.eq(table.concat(s.cache.boundaries, ","), "layer[1] in,[CLS]", "gradual: the boundaries it passes")
  local r = F.recipe(ROOT, "/nonexistent", { ["schedule.preset"] = "gradual", ["schedule.every"] = 4, ["train.max_steps"] = 20 })
  local prep = T.prepare(r)
  local text = table.concat(Plan.lines(prep.plan), "\n")
  for _, want in ipairs({ "[CLS]", "layer[1] in", "live" }) do
    check.truthy(text:find(want, 1, true), "gradual plan shows " .. want .. ":\n" .. text)
  end
  prep.model.bert:free()
  local c = F.recipe(ROOT, "/nonexistent", { ["schedule.preset"] = "chain_thaw", ["schedule.every"] = 4, ["train.max_steps"] = 40 })
  prep = T.prepare(c)
  local phases = prep.plan.sched:plan()
  check.eq(A.boundary_of(phases[1].touched, prep.info, "seqcls"), 3, "chain_thaw phase 1: head only, pooled")
  check.eq(A.boundary_of(phases[3].touched, prep.info, "seqcls"), nil, "after the embeddings trained: live, also when frozen again")
  check.eq(A.boundary_of(phases[#phases].touched, prep.info, "seqcls"), nil, "last phase: live")
  prep.model.bert:free()
end

-- A flipped byte or a cut file is found and computed again, with a message; a cache of another
-- max_length or other weights is another file, never this one.
function T_.damaged_and_foreign_files_are_not_used()
  local dir = tmpdir("damaged")
  local m = tiny_model()
  local loader = tiny_loader(m)
  local said = {}
  local function new() return A.new(m, { train = loader }, { dir = dir, head = "seqcls", say = function(s) said[#said + 1] = s end }) end
  local c = new()
  check.truthy(c:ensure({ 1 }) > 0, "first ensure computes")
  local path = c:path("train", c:key("train", 1))
  c:free()
  local f = io.open(path, "r+b")
  f:seek("set", 64 + 10)
  local byte = f:read(1)
  f:seek("set", 64 + 10)
  f:write(string.char((byte:byte() + 1) % 256))
  f:close()
  said = {}
  c = new()
  check.truthy(c:ensure({ 1 }) > 0, "a flipped byte: computed again")
  check.truthy(table.concat(said, "\n"):find("corrupt: .*checksum mismatch; computing it again"), "message: " .. table.concat(said, "\n"))
  c:free()
  local data = read(path)
  f = io.open(path, "wb"); f:write(data:sub(1, #data - 7)); f:close()
  said = {}
  c = new()
  c:ensure({ 1 })
  check.truthy(table.concat(said, "\n"):find("corrupt: .*wrong size"), "truncated: " .. table.concat(said, "\n"))
  check.eq(c:ensure({ 1 }), 0, "then read, not computed")
  c:free()
  -- another max_length: other tokens, another key
  local l32 = tiny_loader(m, { max_length = 4 })
  local c32 = A.new(m, { train = l32 }, { dir = dir, head = "seqcls" })
  check.truthy(c32:key("train", 1) ~= new():key("train", 1), "max_length is in the key")
  -- other weights below the boundary: another key; above it: the same
  local k1, k0 = new():key("train", 1), new():key("train", 0)
  local q = m.bert:param("bert.encoder.layer.0.attention.self.query.weight")
  local top = m.bert:param("bert.encoder.layer.1.attention.self.query.weight")
  core.no_grad(function()
    for _, t in ipairs({ q, top }) do
      local one = core.full(t:shape(), 1e-3)
      local moved = core.add(t, one)
      t:copy_(moved)
      one:free(); moved:free()
    end
  end)
  check.truthy(new():key("train", 1) ~= k1, "a changed layer 0 changes boundary 1's key")
  check.eq(new():key("train", 0), k0, "a changed layer 0 or 1 leaves boundary 0's key")
  q:free(); top:free()
  c32:free()
  m.bert:free()
  rm(dir)
end

-- train.cache_budget too small: nothing stored, the plan says so and the run is live; train.cache =
-- false: the plan says the cache is off.
function T_.budget_and_off_switch()
  local r = F.recipe(ROOT, "/nonexistent", { ["schedule.preset"] = "top_k", ["schedule.k"] = 1, ["train.cache_budget"] = 0.001 })
  local prep = T.prepare(r)
  local text = table.concat(Plan.lines(prep.plan), "\n")
  check.truthy(text:find("layer[1] in not stored, over the budget 1.0 KiB", 1, true), "over budget:\n" .. text)
  check.truthy(text:find("live (budget)", 1, true), "phase marked live (budget)")
  check.eq(#prep.plan.cache.chosen, 0, "nothing chosen")
  prep.model.bert:free()
  r = F.recipe(ROOT, "/nonexistent", { ["schedule.preset"] = "top_k", ["schedule.k"] = 1, ["train.cache"] = false })
  prep = T.prepare(r)
  text = table.concat(Plan.lines(prep.plan), "\n")
  check.truthy(text:find("activation cache: off (train.cache = false)", 1, true), "off:\n" .. text)
  check.truthy(not text:find("layer[1] in", 1, true), "no cache column when off")
  prep.model.bert:free()
  r = F.recipe(ROOT, "/nonexistent", { ["schedule.preset"] = "top_k", ["schedule.k"] = 1 })
  prep = T.prepare(r)
  text = table.concat(Plan.lines(prep.plan), "\n")
  check.truthy(text:find("activation cache: layer[1] in for train 40 rows, dev", 1, true), "the cache line:\n" .. text)
  prep.model.bert:free()
end

-- Token classification caches every token of the last layer for a head-only run.
function T_.token_head_caches_the_encoder_output()
  local m = Model.load(ROOT .. "/tests/fixtures/bert/tiny_tokcls", { head = "tokcls", num_labels = 5 })
  local info = S.model_info(m.bert)
  local b = A.boundary_of({ ["classifier.weight"] = true }, info, "tokcls")
  check.eq(b, info.num_layers, "head only: the last layer's output")
  local dir = tmpdir("tok")
  local ds = D.read({ path = ROOT .. "/tests/fixtures/train/tiny_ner.conll" }, { task = "token_classification" })
  local loader = D.loader(ds, m.tokenizer, { batch_size = 4, max_length = 16, cache = false })
  local c = A.new(m, { train = loader }, { dir = dir, head = "tokcls" })
  c:ensure({ b })
  check.eq(c.stores.train[b]:vectors(), loader.enc:tokens(), "every token stored")
  local rows = { 3, 1 }
  local batch = loader.enc:gather(rows, 0)
  m.bert:train(false)
  local _, _, want = core.no_grad(function() return m.bert:forward(batch) end)
  local _, _, got = core.no_grad(function() return c:forward("train", b, { rows = rows, batch = batch }) end)
  check.truthy(max_rel(got:flat(), want:flat()) <= 1e-5, "token logits from the cache")
  got:free(); want:free(); batch:free()
  c:free()
  m.bert:free()
  rm(dir)
end

return T_
