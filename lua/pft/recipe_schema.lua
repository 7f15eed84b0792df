-- pft.recipe_schema: every recipe key, its type, range, default and documentation, as data that
-- pft.recipe checks recipes against and that docs/recipes.md's key table is printed from.
--
--   local Schema = require "pft.recipe_schema"
--   Schema.SCHEMA.by.optim.by.lr.default   --> 2e-05
local M = {}
-- ---------------------------------------------------------------------------------------------
-- Schema. Each spec: kind, default, doc, want (what a valid value is, for messages), and for
-- tables `fields` (ordered). nullable: `false` in a file or `~key` on the command line sets it to
-- nothing (nil) instead of its default.

-- Quoted text in messages is cut to this many characters (a CR-only or binary file is one long "line").
local QUOTE_MAX = 80
local function short(s)
  s = tostring(s)
  if #s > QUOTE_MAX then s = s:sub(1, QUOTE_MAX) .. "..." end
  return s
end

local function describe(v)
  local t = type(v)
  if t == "string" then return ("string %s"):format(short(("%q"):format(v):gsub("\\\n", "\\n"))) end
  if t == "number" or t == "boolean" then return t .. " " .. tostring(v) end
  if t == "table" then -- a short list of scalars is shown: {"a", "a"}
    local items, n = {}, 0
    for _ in pairs(v) do n = n + 1 end
    if n > 0 and n == #v then
      for i, x in ipairs(v) do
        if type(x) == "string" then items[i] = ("%q"):format(x)
        elseif type(x) == "number" or type(x) == "boolean" then items[i] = tostring(x)
        else items = nil; break end
      end
      if items then return short("{ " .. table.concat(items, ", ") .. " }") end
    end
  end
  return "a " .. t
end

-- Numbers: every number key must be finite; integers lie within +-2^53 (where doubles stop counting by 1),
-- or within a smaller `max` that a key sets (train.epochs, ...).
local MAX_INT = 2 ^ 53
local function fmt_bound(x)
  if x == MAX_INT then return "2^53" end
  return tostring(x)
end

local function num(default, doc, o)
  o = o or {}
  -- o.max (and, for integers, 2^53): a cap named in the message only when a value breaks it or is not finite
  local cap = o.max
  if o.int and (cap == nil or cap > MAX_INT) then cap = MAX_INT end
  local parts = {}
  if o.gt then parts[#parts + 1] = "> " .. fmt_bound(o.gt) end
  if o.ge then parts[#parts + 1] = ">= " .. fmt_bound(o.ge) end
  if o.lt then parts[#parts + 1] = "< " .. fmt_bound(o.lt) end
  if o.le then parts[#parts + 1] = "<= " .. fmt_bound(o.le) end
  local range = #parts > 0 and " " .. table.concat(parts, " and ") or ""
  local capped = cap and (range .. (range ~= "" and " and" or "") .. " <= " .. fmt_bound(cap)) or range
  local want = (o.int and "an integer" or "a number") .. range
  local spec = { kind = "number", default = default, doc = doc, want = want, nullable = o.nullable,
    tname = o.int and "integer" or "number" }
  spec.check = function(v)
    local finite = type(v) == "number" and v == v and v > -math.huge and v < math.huge
    -- the message that follows a failed check reads `want`: name finiteness or the cap when that failed
    if type(v) == "number" and not finite then
      spec.want = (o.int and "a finite integer" or "a finite number") .. capped
    elseif finite and cap and math.abs(v) > cap then
      spec.want = (o.int and "an integer" or "a number") .. capped
    else
      spec.want = want
    end
    return finite and (not o.int or v == math.floor(v)) and (not cap or math.abs(v) <= cap) and (not o.gt or v > o.gt)
      and (not o.ge or v >= o.ge) and (not o.lt or v < o.lt) and (not o.le or v <= o.le)
  end
  return spec
end

local function str(default, doc, o)
  o = o or {}
  return { kind = "string", default = default, doc = doc, want = o.nonempty and "a non-empty string" or "a string",
    nullable = o.nullable, tname = "string",
    check = function(v) return type(v) == "string" and (not o.nonempty or v ~= "") end }
end

local function bool(default, doc)
  return { kind = "boolean", default = default, doc = doc, want = "a boolean (true or false)", tname = "boolean",
    check = function(v) return type(v) == "boolean" end }
end

local function enum(choices, default, doc)
  local set, quoted = {}, {}
  for i, c in ipairs(choices) do set[c] = true; quoted[i] = ("'%s'"):format(c) end
  return { kind = "enum", choices = choices, default = default, doc = doc, tname = table.concat(choices, " \\| "),
    want = "one of " .. table.concat(quoted, ", "), check = function(v) return set[v] == true end }
end

-- A list of scalars of one spec (elem), optionally of a fixed length.
local function list(elem, default, doc, o)
  o = o or {}
  local want = (o.len and ("a list of %d "):format(o.len) or "a list of ") .. (o.unique and "distinct " or "")
    .. (elem.want == "a non-empty string" and "non-empty " or "") .. elem.tname .. "s"
  return {
    kind = "list", elem = elem, default = default, doc = doc, want = want, nullable = o.nullable,
    tname = "list of " .. elem.tname .. (o.len and (" (" .. o.len .. ")") or ""),
    check = function(v)
      if type(v) ~= "table" then return false end
      local n = 0
      for k in pairs(v) do
        if type(k) ~= "number" or k < 1 or k ~= math.floor(k) then return false end
        n = n + 1
      end
      if n ~= #v or (o.len and n ~= o.len) then return false end
      local seen = {}
      for _, x in ipairs(v) do
        if not elem.check(x) or (o.unique and seen[x]) then return false end
        seen[x] = true
      end
      return true
    end,
  }
end

local function fn(doc)
  return { kind = "function", doc = doc, want = "a function", nullable = true, tname = "function",
    check = function(v) return type(v) == "function" end }
end

-- One of several specs (the first that accepts the value wins).
local function alt(alts, default, doc, o)
  o = o or {}
  local wants, names = {}, {}
  for i, a in ipairs(alts) do wants[i] = a.want; names[i] = a.tname end
  return {
    kind = "alt", alts = alts, default = default, doc = doc, want = table.concat(wants, " or "), nullable = o.nullable,
    tname = table.concat(names, " or "),
    check = function(v)
      for _, a in ipairs(alts) do if a.check(v) then return true end end
      return false
    end,
  }
end

-- A table with named fields (ordered pairs {name, spec}). o.absent: not filled in when not given
-- (an optional section); o.post(v) -> nil or message: a check across fields.
local function struct(fields, doc, o)
  o = o or {}
  local by = {}
  for _, f in ipairs(fields) do by[f[1]] = f[2] end
  return { kind = "struct", fields = fields, by = by, doc = doc, want = "a table", tname = "table",
    absent = o.absent, nullable = o.nullable or o.absent, post = o.post,
    check = function(v) return type(v) == "table" end }
end

local function array(elem, doc)
  return { kind = "array", elem = elem, doc = doc, want = "a list of tables", tname = "list", default = nil,
    check = function(v) return type(v) == "table" end }
end

-- Selector syntax (matching against a model happens in pft.schedule.select).
local function selector_syntax_error(s)
  if s == "" then return "an empty selector" end
  local inner = s:match("^lora%.(.+)$") -- the LoRA adapters inside a selection: lora.top(2)
  if inner then return selector_syntax_error(inner) end
  if s:find("[%[%]%(%)]") then
    if s:match("^layer%[%d+%]$") or s:match("^layer%[%d+%-%d+%]$") or s:match("^top%(%d+%)$")
      or s:match("^bottom%(%d+%)$") then
      local a, b = s:match("^layer%[(%d+)%-(%d+)%]$")
      if a and tonumber(a) > tonumber(b) then return ("'%s': empty range"):format(s) end
      local k = s:match("%((%d+)%)$")
      if k and tonumber(k) < 1 then return ("'%s': k must be >= 1"):format(s) end
      return nil
    end
    return ("'%s' is not a selector (groups: embeddings, layer[i], layer[i-j], top(k), bottom(k), pooler, head, all; kinds: bias, LayerNorm, lora, lora.<selector>; or a name glob with * and ?)"):format(s)
  end
end

local function selector(doc, o)
  o = o or {}
  local spec = { kind = "selector", doc = doc, nullable = true, tname = "selector",
    want = "a selector (a string, or a list of selectors with an optional `minus = selector`)" }
  local function chk(v, depth)
    if depth > 8 then return false end
    if type(v) == "string" then
      local e = selector_syntax_error(v)
      if e then return false, e end
      return true
    end
    if type(v) ~= "table" then return false end
    local n = 0
    for k in pairs(v) do
      if k ~= "minus" and (type(k) ~= "number" or k < 1 or k ~= math.floor(k)) then
        return false, ("unknown key '%s' in a selector (only a list and `minus`)"):format(tostring(k))
      end
      if k ~= "minus" then n = n + 1 end
    end
    if n ~= #v or n == 0 then return false, "a selector list must be a non-empty list" end
    for _, x in ipairs(v) do
      local ok, e = chk(x, depth + 1)
      if not ok then return false, e end
    end
    if v.minus ~= nil then
      local ok, e = chk(v.minus, depth + 1)
      if not ok then return false, e end
    end
    return true
  end
  spec.check = function(v) return chk(v, 0) end
  return spec
end

local function exactly_one(names)
  return function(v)
    local got = {}
    for _, n in ipairs(names) do if v[n] ~= nil then got[#got + 1] = n end end
    if #got ~= 1 then
      return ("needs exactly one of %s (got %s)"):format(table.concat(names, ", "),
        #got == 0 and "none" or table.concat(got, ", "))
    end
  end
end

local every_spec = alt({ enum({ "epoch" }), num(nil, nil, { int = true, ge = 1 }) }, "epoch", nil)

local trigger = struct({
  { "epoch", num(nil, "at the start of this epoch (0-based: epoch = 1 is after the first epoch)", { int = true, ge = 0, nullable = true }) },
  { "step", num(nil, "at this global optimizer step (0-based)", { int = true, ge = 0, nullable = true }) },
  { "fraction", num(nil, "at this fraction of the total steps", { ge = 0, le = 1, nullable = true }) },
  { "plateau", struct({
      { "metric", str(nil, "dev metric to watch (default: train.best_metric)", { nullable = true }) },
      { "patience", num(1, "evaluations without improvement", { int = true, ge = 1 }) },
    }, "when the dev metric stops improving", { absent = true }) },
}, "when a rule fires", { post = exactly_one({ "epoch", "step", "fraction", "plateau" }) })

local rule = struct({
  { "at", trigger },
  { "unfreeze", selector("parameters to make trainable") },
  { "freeze", selector("parameters to freeze") },
}, "a schedule rule", {
  post = function(v)
    if v.at == nil then return "needs `at` (a trigger)" end
    return exactly_one({ "unfreeze", "freeze" })(v)
  end,
})

local function split(path_default, doc, nullable)
  return struct({
    { "path", str(path_default, "file to read; ${PFT_DATA} expands to the data root; stored absolute", { nonempty = true }) },
    { "format", enum(require("pft.data").format_names(), nil, "file format (default: from the extension)") },
    { "header", bool(true, "first line names the columns (tsv, csv)") },
    { "text", alt({ str(), num(nil, nil, { int = true, ge = 1 }) }, "sentence", "text column (name or 1-based index)") },
    { "text_pair", alt({ str(), num(nil, nil, { int = true, ge = 1 }) }, nil, "second text column for sentence pairs", { nullable = true }) },
    { "label", alt({ str(), num(nil, nil, { int = true, ge = 1 }) }, "label", "label column (name or 1-based index)") },
    { "limit", num(nil, "read at most this many rows", { int = true, ge = 1, nullable = true }) },
  }, doc, { nullable = nullable })
end

local SCHEMA = struct({
  { "name", str(nil, "run name (default: the recipe file's base name)", { nonempty = true }) },
  { "base", str(nil, "a shipped recipe name or a path (relative to this file) to start from", { nullable = true }) },
  { "model", struct({
      { "name", str("all-MiniLM-L6-v2", "model name (under models/ or $PFT_MODELS) or a Hugging Face BERT directory", { nonempty = true }) },
      { "max_length", num(128, "tokens per example (longer texts are truncated)", { int = true, ge = 2, max = 1048576 }) },
      { "adapter", str(nil, "a PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors) applied over the model: train on from it or evaluate it", { nullable = true, nonempty = true }) },
    }, "the pretrained model") },
  { "adapters", struct({
      { "lora", struct({
          { "r", num(8, "LoRA rank", { int = true, ge = 1, max = 65536 }) },
          { "alpha", num(16, "LoRA alpha: the update is scaled by alpha / r", { gt = 0 }) },
          { "dropout", num(0.1, "dropout on the adapter's input", { ge = 0, lt = 1 }) },
          { "targets", list(str(nil, nil, { nonempty = true }), { "query", "value" }, "projections adapted: query, key, value, attention.output.dense, intermediate.dense, output.dense", { unique = true }) },
          { "layers", selector("the layers that get adapters (default: all)") },
        }, "LoRA adapters (PEFT's LoRA: W x + alpha/r B A dropout(x), A Kaiming-uniform, B zero); train them with schedule.preset = \"lora\" or the `lora` selector", { absent = true }) },
    }, "parameter-efficient adapters added to the model") },
  { "task", struct({
      { "kind", enum({ "classification", "regression", "token_classification" }, "classification", "what the head predicts") },
      { "labels", list(str(nil, nil, { nonempty = true }), nil, "label names in a fixed order (default: the training labels, sorted)", { nullable = true, unique = true }) },
      { "label_all_tokens", bool(false, "token classification: a word's later tokens are labelled too (B-X as I-X), not ignored in the loss") },
    }, "the task and its head") },
  { "data", struct({
      { "train", split("${PFT_DATA}/sst2/train.tsv", "training split") },
      { "dev", split("${PFT_DATA}/sst2/dev.tsv", "model-selection split (false or ~data.dev: none; none by default when data.train.path is set)", true) },
      { "test", split("${PFT_DATA}/sst2/test.tsv", "final-evaluation split (false or ~data.test: none; none by default when data.train.path is set)", true) },
      { "batch_size", num(32, "training batch size", { int = true, ge = 1 }) },
      { "eval_batch_size", num(64, "evaluation batch size", { int = true, ge = 1 }) },
      { "shuffle", bool(true, "shuffle the training data every epoch") },
      { "bucket", bool(true, "batch examples of similar length together") },
      { "on_error", enum({ "fail", "skip" }, "fail", "what a malformed row does") },
      { "preprocess", fn("function(text) -> text, applied before tokenizing") },
      { "cache", bool(true, "cache tokenized ids") },
    }, "datasets") },
  { "schedule", struct({
      { "preset", enum(require("pft.schedule").preset_names(), "full", "the freeze schedule") },
      { "k", num(2, "layers trained by top_k", { int = true, ge = 1 }) },
      { "every", every_spec },
      { "initial", selector("what trains at step 0 (replaces the preset's start)") },
      { "rules", array(rule, "extra {at = TRIGGER, unfreeze|freeze = SELECTOR} rules, applied after the preset's") },
      { "custom", fn("function(ctx) -> SELECTOR, what trains at each step (ctx: step, epoch, total_steps, steps_per_epoch, num_layers, history); replaces preset, initial and rules") },
    }, "which parameters train when") },
  { "lr", struct({
      { "discriminative", struct({
          { "decay", num(nil, "layer i gets decay^(L-1-i), embeddings decay^L", { gt = 0, le = 1, nullable = true }) },
          { "spread", list(num(nil, nil, { gt = 0 }), nil, "{lo, hi}: geometric from embeddings (lo) to head (hi)", { len = 2, nullable = true }) },
        }, "layer-wise learning rates", { absent = true, post = exactly_one({ "decay", "spread" }) }) },
      { "head_multiplier", num(1.0, "multiplies the head's learning rate", { gt = 0 }) },
      { "unfreeze_warmup", num(0, "steps over which a newly unfrozen group ramps from 0 to its rate", { int = true, ge = 0 }) },
    }, "learning-rate knobs per group") },
  { "optim", struct({
      { "name", enum({ "adamw", "sgd" }, "adamw", "optimizer") },
      { "lr", num(2e-5, "base learning rate", { gt = 0 }) },
      { "weight_decay", num(0.01, "decoupled weight decay", { ge = 0 }) },
      { "betas", list(num(nil, nil, { ge = 0, lt = 1 }), { 0.9, 0.999 }, "AdamW betas", { len = 2 }) },
      { "eps", num(1e-8, "AdamW epsilon", { gt = 0 }) },
      { "momentum", num(0.9, "SGD momentum", { ge = 0, lt = 1 }) },
      { "no_decay", list(str(), { "bias", "LayerNorm" }, "name parts exempt from weight decay") },
    }, "optimizer") },
  { "lr_schedule", struct({
      { "name", enum({ "linear", "constant", "cosine", "slanted_triangular", "one_cycle" }, "linear", "learning-rate schedule over training") },
      { "warmup", num(0.06, "warm-up: a fraction of the total steps if < 1, else steps", { ge = 0 }) },
      { "cut_frac", num(0.1, "slanted_triangular: fraction of steps rising", { gt = 0, lt = 1 }) },
      { "ratio", num(32, "slanted_triangular: peak / lowest rate", { ge = 1 }) },
    }, "learning-rate schedule") },
  { "train", struct({
      { "epochs", num(3, "passes over the training data", { int = true, ge = 1, max = 1e6 }) },
      { "max_steps", num(nil, "stop after this many optimizer steps", { int = true, ge = 1, nullable = true }) },
      { "grad_clip", num(1.0, "clip the global gradient norm (0: off)", { ge = 0 }) },
      { "grad_accum", num(1, "batches per optimizer step", { int = true, ge = 1 }) },
      { "seed", num(42, "random seed", { int = true, ge = 0 }) },
      { "threads", num(nil, "CPU threads (default: all cores)", { int = true, ge = 1, max = 4096, nullable = true }) },
      { "precision", enum({ "fp32", "bf16" }, "fp32", "GEMM precision: bf16 rounds the GEMMs' operands to bfloat16 and sums in fp32 (Intel AMX, else AVX512-BF16; refused on a processor with neither); weights, optimizer state and everything else stay fp32 (docs/training.md)") },
      { "eval_every", every_spec },
      { "log_every", num(50, "log every N steps", { int = true, ge = 1 }) },
      { "cache", bool(true, "activation cache: the frozen lower layers run once per split and their output is reused; steps run only the layers above (docs/training.md)") },
      { "cache_budget", num(nil, "MiB the activation cache may store (default: half of free memory, at most half of the cache directory's free disk); boundaries beyond it run live", { ge = 0, nullable = true }) },
      { "early_stopping", struct({
          { "patience", num(2, "evaluations without improvement before stopping", { int = true, ge = 1 }) },
        }, "stop when the dev metric stops improving", { absent = true }) },
      { "best_metric", str(nil, "dev metric that picks the best checkpoint (default: accuracy; pearson for regression; f1 for token classification)") },
    }, "training loop") },
  { "eval", struct({
      { "metrics", list(str(), nil, "metrics printed and logged to metrics.jsonl at each evaluation, in this order (default: all the task produces; best_metric and plateau metrics are computed whatever this says)", { nullable = true }) },
    }, "evaluation") },
  { "output", struct({
      { "dir", str(nil, "run directory (default: runs/<name>-<yyyymmdd-hhmmss>); stored absolute", { nonempty = true }) },
      { "checkpoints", bool(true, "save checkpoints at evaluations") },
      { "keep", num(2, "checkpoints kept (the best is always kept)", { int = true, ge = 1 }) },
    }, "where results go") },
}, "a recipe")
every_spec.doc = nil

-- The docs for `every` differ by place; set after construction since every_spec is shared.
local EVERY_DOCS = {
  ["schedule.every"] = "\"epoch\" or N: gradual / chain_thaw move one group per epoch or per N steps",
  ["train.eval_every"] = "\"epoch\" or N: evaluate on dev every epoch or every N steps",
}

-- The dev metric that picks the best checkpoint when train.best_metric is not set.
function M.default_best_metric(task_kind)
  local t = require("pft.metrics").TASKS[task_kind or "classification"]
  return t and t.best or "accuracy"
end

-- A deep copy (tables only; functions and strings are shared): defaults are never handed out by reference.
local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return out
end
M.deep_copy = copy

-- M.complete(section, t) -> a copy of t (a top-level section such as "schedule", possibly partial, as
-- tests and library callers build them) with the schema's default for every key it lacks. A loaded
-- recipe has every key already; this is how code that accepts a part of one avoids restating defaults.
function M.complete(section, t)
  local spec = SCHEMA.by[section]
  if not spec then error("recipe_schema: no section '" .. tostring(section) .. "'", 2) end
  local out = copy(t or {})
  for _, f in ipairs(spec.fields) do
    if out[f[1]] == nil then out[f[1]] = copy(f[2].default) end
  end
  return out
end

-- The recipe's train.precision ("fp32", "bf16"), a partial recipe's being the schema's default.
function M.precision_of(r) return M.complete("train", r.train).precision end

M.SCHEMA, M.EVERY_DOCS, M.describe, M.short, M.MAX_INT = SCHEMA, EVERY_DOCS, describe, short, MAX_INT
return M
