-- pft.lora: LoRA adapters on a model, from a recipe's `adapters.lora` or from a PEFT adapter directory,
-- and the adapter written back in PEFT's format (core/nn.h has the math: W x + b + scale B A dropout(x)).
--
--   local Lora = require "pft.lora"
--   Lora.apply(m, { r = 8, alpha = 16, dropout = 0.1, targets = { "query", "value" }, layers = "all" })
--   Lora.load_adapter(m, "path/to/peft_adapter")   -- adapter_config.json + adapter_model.safetensors
--   Lora.save_adapter(m, "out/dir", { task = "classification" })
--
-- Parameters are named as PEFT names them inside the model (bert.encoder.layer.3.attention.self.query.
-- lora_A.weight), belong to their layer's schedule group, and are selected by `lora`, `lora.<selector>`
-- (lora.top(2), lora.layer[4-5]) or globs. The model's model.safetensors is always written merged (a
-- plain BERT, nn.h); the adapter files are what peft.PeftModel.from_pretrained loads over the base model.
local core = require "pft.core"
local cjson = require "cjson"
local fs = require "pft.fs"
local S = require "pft.schedule"

local L = {}

-- The projections an adapter can sit on: the recipe's names, and their paths inside a layer.
L.TARGETS = { "query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense" }
L.PATHS = {
  query = "attention.self.query", key = "attention.self.key", value = "attention.self.value",
  ["attention.output.dense"] = "attention.output.dense", ["intermediate.dense"] = "intermediate.dense",
  ["output.dense"] = "output.dense",
}

local function fail(msg) error("lora: " .. msg, 0) end

local function distance(a, b) -- Levenshtein, for "did you mean"
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a:sub(i, i) == b:sub(j, j) and 0 or 1))
    end
    prev = cur
  end
  return prev[#b]
end

local function check_target(t, where)
  if L.PATHS[t] then return end
  local best, bd = nil, math.huge
  for _, name in ipairs(L.TARGETS) do
    local d = distance(t, name)
    if d < bd then best, bd = name, d end
  end
  fail(("%s: unknown target '%s'%s (targets: %s)"):format(where, tostring(t),
    bd <= 3 and (", did you mean '" .. best .. "'?") or "", table.concat(L.TARGETS, ", ")))
end

-- The 0-based layers a selector names ("all", "top(2)", "layer[4-5]", ...), in order.
function L.layer_indices(sel, info, where)
  if sel == nil or sel == "all" then
    local all = {}
    for i = 0, info.num_layers - 1 do all[#all + 1] = i end
    return all
  end
  local ok, names = pcall(S.select, sel, info)
  if not ok then fail(("%s: %s"):format(where, tostring(names):gsub("^schedule: ", ""))) end
  local seen, out = {}, {}
  for _, n in ipairs(names) do
    local i = tonumber((info.group_of[n] or ""):match("^layer%[(%d+)%]$"))
    if i and not seen[i] then seen[i], out[#out + 1] = true, i end
  end
  if #out == 0 then fail(("%s: selector '%s' names no encoder layer"):format(where, S.selector_text(sel))) end
  table.sort(out)
  return out
end

-- Lora.apply(m, spec[, where]): adapters from a recipe's adapters.lora on m (a pft.model or pft.Bert).
function L.apply(m, spec, where)
  where = where or "adapters.lora"
  local bert = m.bert or m
  for i, t in ipairs(spec.targets or {}) do check_target(t, ("%s.targets[%d]"):format(where, i)) end
  if #(spec.targets or {}) == 0 then fail(where .. ".targets: name at least one projection") end
  local info = S.model_info(bert)
  local per_layer = {}
  for i = 1, info.num_layers do per_layer[i] = {} end
  for _, l in ipairs(L.layer_indices(spec.layers, info, where .. ".layers")) do per_layer[l + 1] = spec.targets end
  bert:add_lora({ r = spec.r, alpha = spec.alpha, dropout = spec.dropout or 0, targets = per_layer })
end

-- The names of every LoRA parameter of a model, in order.
function L.names(bert)
  local out = {}
  for _, p in ipairs(bert:params()) do
    if p:name():find(".lora_", 1, true) then out[#out + 1] = p:name() end
  end
  return out
end

function L.has(bert) return (bert.bert or bert):config().lora ~= nil end

-- PEFT's file names: "base_model.model." before the model's own name (the classifier without
-- modules_to_save's ".modules_to_save.default", which PEFT drops when it saves)
local PEFT_PREFIX = "base_model.model."

local function read_json(path)
  local text = fs.read_file(path)
  if not text then fail(("%s: cannot read"):format(path)) end
  local ok, v = pcall(cjson.decode, text)
  if not ok or type(v) ~= "table" then fail(("%s: not a JSON object"):format(path)) end
  return v
end

-- The adapted projections a PEFT file holds: {[layer + 1] = {target, ...}}, checked against the model.
local function file_targets(tensors, info, path)
  local per_layer = {}
  for i = 1, info.num_layers do per_layer[i] = {} end
  local by_path = {}
  for name, p in pairs(L.PATHS) do by_path[p] = name end
  for key in pairs(tensors) do
    local rest = key:sub(#PEFT_PREFIX + 1)
    local l, proj = rest:match("encoder%.layer%.(%d+)%.(.+)%.lora_A%.weight$")
    if l then
      l = tonumber(l)
      if l >= info.num_layers then fail(("%s: '%s' is for layer %d; the model has %d layers"):format(path, key, l, info.num_layers)) end
      if not by_path[proj] then fail(("%s: '%s' adapts '%s', which pft cannot adapt"):format(path, key, proj)) end
      local list = per_layer[l + 1]
      list[#list + 1] = by_path[proj]
    end
  end
  return per_layer
end

-- Lora.load_adapter(m, dir): a PEFT LoRA adapter over m: its config, its A and B (shapes checked
-- against the model, named in the message), its classifier when it saved one.
function L.load_adapter(m, dir)
  local bert = m.bert or m
  local cpath = dir .. "/adapter_config.json"
  local cfg = read_json(cpath)
  if cfg.peft_type ~= "LORA" then
    fail(("%s: peft_type is %s; pft loads LORA adapters only"):format(cpath, tostring(cfg.peft_type)))
  end
  if cfg.use_dora then fail(("%s: a DoRA adapter (use_dora); pft loads plain LoRA only"):format(cpath)) end
  local wpath = dir .. "/adapter_model.safetensors"
  if not fs.exists(wpath) then fail(("%s: missing (only safetensors adapters are read)"):format(wpath)) end
  local tensors = core.read_safetensors(wpath)
  local info = S.model_info(bert)
  local r, alpha = cfg.r, cfg.lora_alpha
  if type(r) ~= "number" or r < 1 or type(alpha) ~= "number" then fail(("%s: r and lora_alpha must be numbers"):format(cpath)) end
  local scale = cfg.use_rslora and alpha / math.sqrt(r) or alpha / r
  local per_layer = file_targets(tensors, info, wpath)
  local any = false
  for _, l in ipairs(per_layer) do any = any or #l > 0 end
  if not any then fail(("%s: no lora_A weights"):format(wpath)) end
  bert:add_lora({ r = r, alpha = alpha, dropout = cfg.lora_dropout or 0, scale = scale, targets = per_layer })
  local by_name = {}
  for _, p in ipairs(bert:params()) do by_name[p:name()] = p end
  for key, t in pairs(tensors) do
    local name = key:sub(1, #PEFT_PREFIX) == PEFT_PREFIX and key:sub(#PEFT_PREFIX + 1) or key
    name = name:gsub("%.modules_to_save%.default", "")
    local p = by_name[name]
    if not p then fail(("%s: '%s' matches no parameter of the model"):format(wpath, key)) end
    local want, got = table.concat(p:shape(), ", "), table.concat(t:shape(), ", ")
    if want ~= got then
      fail(("%s: '%s' is [%s], the model's %s is [%s] (an adapter for another base model?)"):format(wpath, key, got, name, want))
    end
    p:copy_(t)
  end
  for _, t in pairs(tensors) do t:free() end
end

-- The PEFT target_modules of a model's adapters: a regular expression that names exactly the adapted
-- modules (PEFT full-matches a string against each module's name), and the plain target names.
local function target_modules(bert)
  local mods, names, seen = {}, {}, {}
  for _, n in ipairs(L.names(bert)) do
    local mod = n:match("^(.*)%.lora_A%.weight$")
    if mod then
      mods[#mods + 1] = (mod:gsub("%.", "\\."))
      local proj = mod:match("encoder%.layer%.%d+%.(.+)$")
      if not seen[proj] then seen[proj], names[#names + 1] = true, proj end
    end
  end
  return "^(" .. table.concat(mods, "|") .. ")$", names
end

-- Lora.save_adapter(m, dir, {task = recipe.task.kind, base = name_or_path}): adapter_config.json and
-- adapter_model.safetensors as peft's save_pretrained writes them (the adapters and the classifier).
function L.save_adapter(m, dir, opts)
  opts = opts or {}
  local bert = m.bert or m
  local lc = bert:config().lora
  if not lc then fail("the model has no LoRA adapters to save") end
  local regex = target_modules(bert)
  local tensors = {}
  for _, p in ipairs(bert:params()) do
    local n = p:name()
    if n:find(".lora_", 1, true) or n:match("^classifier%.") then tensors[PEFT_PREFIX .. n] = p end
  end
  local ok, err = core.mkdir(dir)
  if not ok then fail(err) end
  core.save_tensors(dir .. "/adapter_model.safetensors", tensors, { format = "pt" })
  local token = opts.task == "token_classification"
  local cfg = { peft_type = "LORA", task_type = token and "TOKEN_CLS" or "SEQ_CLS", r = lc.r,
    lora_alpha = lc.scale * lc.r, lora_dropout = lc.dropout, target_modules = regex, modules_to_save = { "classifier" },
    bias = "none", fan_in_fan_out = false, inference_mode = true, init_lora_weights = true, use_rslora = false,
    use_dora = false, base_model_name_or_path = opts.base or cjson.null }
  fs.write_atomic(dir .. "/adapter_config.json", cjson.encode(cfg) .. "\n", "lora")
end

return L
