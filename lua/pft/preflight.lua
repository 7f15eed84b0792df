-- pft.preflight: what `pft validate` and `pft train` check before any training, so that a mistake that
-- would stop a run halfway (or after its last epoch) stops it at the start, with a message that names the
-- file, key or line (issue 10, "Fail before training, not after"; the list is in docs/recipes.md, "Checked
-- before training").
--
--   local P = require "pft.preflight"
--   local info = P.check(recipe)   -- raises "recipes/x.lua:7: ..." / "data.test: /p/test.tsv: ..." / "model m: ..."
--   info.labels, info.num_labels, info.model_dir, info.config
--
-- The checks: the recipe against the schema again (a table given to pft.train.run need not come from
-- pft.recipe.load); train.best_metric (and plateau metrics, eval.metrics) against what the task's evaluation
-- produces; the model's config.json and vocab.txt against each other and against model.max_length; every
-- data split read in full, with its labels checked against the training labels (or task.labels), and a
-- classification with fewer than two classes refused. Reading the splits costs about as much as the trainer's
-- own read (well under a second for SST-2); no model weights are loaded.
local P = {}

-- What pft.metrics (through pft.train's evaluation) reports, per task kind (pft.metrics' TASKS).
P.METRICS = {}
for kind, t in pairs(require("pft.metrics").TASKS) do P.METRICS[kind] = t.names end

local R = require "pft.recipe"
local D = require "pft.data"
local short = D.short

-- "recipes/x.lua:7: " where the recipe set key, else "" (a default, or a table not from pft.recipe.load).
local function where(r, key)
  local w = R.where(r, key)
  return w and (w .. ": ") or ""
end

local function fail(r, key, msg) error(where(r, key) .. msg, 0) end

local distance = R.distance -- Levenshtein, for "did you mean"

local function suggest(name, choices)
  local lname = name:lower()
  for _, c in ipairs(choices) do if #lname > 0 and c:sub(1, #lname) == lname then return c end end
  local best, bestd
  for _, c in ipairs(choices) do
    local d = distance(lname, c)
    if not bestd or d < bestd then best, bestd = c, d end
  end
  if best and bestd <= math.max(1, math.floor(#name / 3)) then return best end
end

-- P.check_metric(kind, name, key) -> nil, or the message for a metric the task does not produce.
function P.check_metric(kind, name, key)
  local produced = P.METRICS[kind] or P.METRICS.classification
  for _, m in ipairs(produced) do if m == name then return nil end end
  local msg = ("%s '%s' is not a metric that %s produces (%s)"):format(key, short(name), (kind:gsub("_", " ")),
    table.concat(produced, ", "))
  local sug = suggest(name, produced)
  if sug then msg = msg .. ("; did you mean '%s'?"):format(sug) end
  return msg
end

local function check_metrics(r)
  local kind = r.task and r.task.kind or "classification"
  local tr = r.train or {}
  local has_dev = r.data and r.data.dev
  -- token classification evaluates to the loss only: its (default) best_metric matters when there is a dev split
  if tr.best_metric ~= nil and (kind ~= "token_classification" or has_dev) then
    local e = P.check_metric(kind, tr.best_metric, "train.best_metric")
    if e then fail(r, "train.best_metric", e) end
  end
  for i, rule in ipairs(r.schedule and r.schedule.rules or {}) do
    local pl = type(rule.at) == "table" and rule.at.plateau
    if type(pl) == "table" and pl.metric ~= nil then
      local key = ("schedule.rules[%d].at.plateau.metric"):format(i)
      local e = P.check_metric(kind, pl.metric, key)
      if e then fail(r, key, e) end
    end
  end
  for i, m in ipairs(r.eval and r.eval.metrics or {}) do
    local e = P.check_metric(kind, m, ("eval.metrics[%d]"):format(i))
    if e then fail(r, "eval.metrics", e) end
  end
end

-- --- the model ----------------------------------------------------------------------------------------

local read_file = require("pft.fs").read_file

-- Entries of a vocab.txt, counted as the tokenizer counts them (core/text.c: \n, \r\n or \r end a line).
function P.vocab_entries(text)
  local s = text:gsub("\r\n", "\n"):gsub("\r", "\n")
  local n = select(2, s:gsub("\n", "\n"))
  if #s > 0 and s:sub(-1) ~= "\n" then n = n + 1 end
  return n
end

local DROPOUTS = { "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout" }

local function check_model(r, info)
  local name = r.model and r.model.name
  if name == nil then return end
  local Model = require "pft.model"
  local ok, dir = pcall(Model.resolve, name)
  if not ok then fail(r, "model.name", (tostring(dir):gsub("^[^:\n]*%.lua:%d+: ", ""))) end
  local label = ("model %s: "):format(name)
  local cpath = dir .. "/config.json"
  local text = read_file(cpath)
  if not text then fail(r, "model.name", label .. ("%s: cannot open (a model directory holds config.json, vocab.txt and model.safetensors)"):format(cpath)) end
  local cjson = require "cjson"
  local okj, cfg = pcall(cjson.decode, text)
  if not okj or type(cfg) ~= "table" then fail(r, "model.name", label .. ("%s is not a JSON object"):format(cpath)) end
  info.model_dir, info.config = dir, cfg

  local vocab = read_file(dir .. "/vocab.txt")
  if vocab and type(cfg.vocab_size) == "number" then
    local n = P.vocab_entries(vocab)
    if n > cfg.vocab_size then
      fail(r, "model.name", label .. ("vocab.txt has %d entries but config.json vocab_size is %d (token ids past %d have no embedding row)")
        :format(n, cfg.vocab_size, cfg.vocab_size - 1))
    end
  end
  local maxpos = cfg.max_position_embeddings
  local ml = r.model.max_length
  if type(maxpos) == "number" and type(ml) == "number" and ml > maxpos then
    fail(r, "model.max_length", ("model.max_length %d is above max_position_embeddings %d in %s (the model has no position past %d)")
      :format(ml, maxpos, cpath, maxpos - 1))
  end
  local bad = {}
  for _, k in ipairs(DROPOUTS) do
    local v = cfg[k]
    if v ~= nil and v ~= cjson.null and (type(v) ~= "number" or not (v >= 0 and v < 1)) then
      bad[#bad + 1] = ("%s is %s"):format(k, type(v) == "number" and ("%g"):format(v) or short(tostring(v)))
    end
  end
  if #bad > 0 then
    fail(r, "model.name", label .. ("%s: %s (a dropout probability must be >= 0 and < 1)"):format(cpath, table.concat(bad, ", ")))
  end
end

-- --- the data -----------------------------------------------------------------------------------------

local function read_split(r, which, labels)
  local D = require "pft.data"
  local spec = r.data[which]
  local key = "data." .. which
  local kind = r.task and r.task.kind or "classification"
  local s = {}
  for k, v in pairs(spec) do s[k] = v end
  local ok, ds = pcall(D.read, s, { task = kind, on_error = r.data.on_error })
  if not ok then
    local msg = tostring(ds):gsub("^[^:\n]*%.lua:%d+: ", ""):gsub("^data: ", "")
    fail(r, key .. ".path", key .. ": " .. msg)
  end
  return ds
end

-- The first row of ds whose label (or tag) is not in set: name, line.
local function first_unknown(ds, set)
  if not ds.labels or not ds.label_names then return nil end
  for i = 1, ds.n do
    local l = ds.labels[i]
    local ids = type(l) == "table" and l or { l }
    for _, id in ipairs(ids) do
      local name = ds.label_names[id + 1]
      if not set[name] then return name, ds.lines[i] end
    end
  end
end

local function check_data(r, info)
  if not r.data or not r.data.train then return end
  local kind = r.task and r.task.kind or "classification"
  local train = read_split(r, "train")
  if kind == "regression" or not train.label_names then
    for _, which in ipairs({ "dev", "test" }) do if r.data[which] then read_split(r, which) end end
    info.num_labels = 1
    return
  end
  local fixed = r.task.labels
  local labels = fixed or train.label_names
  local set = {}
  for _, l in ipairs(labels) do set[l] = true end
  local what = kind == "token_classification" and "tag" or "label"
  if fixed then
    if #fixed < 2 then
      fail(r, "task.labels", ("task.labels has %d label; a %s needs at least 2"):format(#fixed, (kind:gsub("_", " "))))
    end
    local name, line = first_unknown(train, set)
    if name then
      fail(r, "data.train.path", ("data.train: %s: %s '%s' (line %d) is not one of task.labels (%s)"):format(train.path, what,
        short(name), line, short(table.concat(fixed, ", "))))
    end
  elseif #labels < 2 then
    fail(r, "data.train.path", ("data.train: %s has only one %s ('%s'); a %s needs at least 2 (for numeric targets set task.kind = \"regression\"; or list the classes in task.labels)")
      :format(train.path, what, short(labels[1] or ""), (kind:gsub("_", " "))))
  end
  for _, which in ipairs({ "dev", "test" }) do
    if r.data[which] then
      local ds = read_split(r, which)
      local name, line = first_unknown(ds, set)
      if name then
        fail(r, "data." .. which .. ".path", ("data.%s: %s: %s '%s' (line %d) %s (%ss: %s)"):format(which, ds.path, what,
          short(name), line, fixed and "is not one of task.labels" or "does not occur in the training data", what,
          short(table.concat(labels, ", "))))
      end
    end
  end
  info.labels, info.num_labels = { unpack(labels) }, #labels
end

-- train.precision against this processor: the core says what it lacks (the context is left as it was)
local function check_precision(r)
  local core = require "pft.core"
  local want, before = require("pft.recipe_schema").precision_of(r), core.precision()
  local ok, e = pcall(core.set_precision, want)
  core.set_precision(before)
  if not ok then fail(r, "train.precision", tostring(e)) end
end

-- P.check(recipe) -> info {labels, num_labels, model_dir, config}; raises on the first problem found.
function P.check(r)
  local R = require "pft.recipe"
  R.validate(r) -- a table handed to pft.train.run directly has not been through R.load
  local info = {}
  check_precision(r)
  check_metrics(r)
  check_model(r, info)
  check_data(r, info)
  return info
end

return P
