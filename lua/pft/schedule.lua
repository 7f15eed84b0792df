-- pft.schedule: which parameters train when, and at what learning-rate multiplier. A schedule is a
-- pure function of (step, epoch, eval history); the trainer asks it before every optimizer step.
--
--   local S = require "pft.schedule"
--   local info = S.model_info(model.bert)   -- names, numel, group_of, num_layers
--   local sched = S.build(recipe, info, { steps_per_epoch = 250, epochs = 3 })
--   for _, ph in ipairs(sched:plan()) do print(ph.label, ph.trainable_numel) end
--   local st = sched:at(step, epoch, history) -- st.trainable[name], st.lr_mult[group], st.warmup[group]
--
-- Groups, low to high: "embeddings", "layer[0]" .. "layer[L-1]", "pooler", "head".
-- Steps and epochs are 0-based; a change triggered at step s applies to steps >= s.
local S = {}

-- ---------------------------------------------------------------------------------------------
-- Model info

-- The group of an HF parameter name, or nil for a name outside the four families. The encoder's names
-- carry "bert." when a head sits beside it (a bare encoder's do not).
function S.group_of_name(name)
  local rest = name:match("^bert%.(.*)$") or name
  if rest:match("^embeddings%.") then return "embeddings" end
  local i = rest:match("^encoder%.layer%.(%d+)%.")
  if i then return "layer[" .. i .. "]" end
  if rest:match("^pooler%.") then return "pooler" end
  if name:match("^classifier%.") then return "head" end
end

-- S.model_info(bert or {names}, [numel]) -> { names, numel = {[name] = n}, num_layers, group_of, groups }:
-- the one view of a model that the schedule, the trainer and `pft validate` share. Accepts a model table
-- (with .bert), the pft.Bert userdata, or a list of names and a numel table (for tests: no model needed).
function S.model_info(m, numel)
  local names, counts = {}, {}
  if type(m) == "table" and m.bert then m = m.bert end
  if type(m) == "table" then
    for i, n in ipairs(m) do names[i] = n; counts[n] = numel and numel[n] or 1 end
  else
    for i, p in ipairs(m:params()) do
      names[i] = p:name()
      counts[names[i]] = p:numel()
    end
  end
  local info = { names = names, numel = counts, group_of = {}, num_layers = 0 }
  for _, n in ipairs(names) do
    local g = S.group_of_name(n)
    if not g then error(("schedule: parameter '%s' belongs to no group (embeddings, layer[i], pooler, head)"):format(n), 2) end
    info.group_of[n] = g
    local i = g:match("^layer%[(%d+)%]$")
    if i then info.num_layers = math.max(info.num_layers, tonumber(i) + 1) end
  end
  info.groups = S.group_names(info.num_layers)
  return info
end

function S.group_names(L)
  local g = { "embeddings" }
  for i = 0, L - 1 do g[#g + 1] = "layer[" .. i .. "]" end
  g[#g + 1] = "pooler"
  g[#g + 1] = "head"
  return g
end

-- ---------------------------------------------------------------------------------------------
-- Selectors

local function glob_pattern(g)
  return "^" .. g:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".") .. "$"
end

local function sel_text(sel)
  if type(sel) == "string" then return sel end
  local parts = {}
  for _, s in ipairs(sel) do parts[#parts + 1] = sel_text(s) end
  if #parts == 1 and not sel.minus then return parts[1] end
  local t = "{" .. table.concat(parts, ", ")
  if sel.minus then t = t .. ", minus = " .. sel_text(sel.minus) end
  return t .. "}"
end
S.selector_text = sel_text

local function layer_set(info, a, b, sel)
  local L = info.num_layers
  if a < 0 or b > L - 1 then
    error(("schedule: selector '%s' is out of range (the model has %d layers: layer[0-%d])"):format(sel, L, L - 1), 0)
  end
  local want = {}
  for i = a, b do want["layer[" .. i .. "]"] = true end
  return function(n) return want[info.group_of[n]] end
end

-- A predicate on names for one string selector.
local function matcher(s, info)
  local L = info.num_layers
  if s == "all" then return function() return true end end
  if s == "embeddings" or s == "pooler" or s == "head" then return function(n) return info.group_of[n] == s end end
  if s == "bias" then return function(n) return n:match("%.bias$") ~= nil end end
  if s == "LayerNorm" then return function(n) return n:find("LayerNorm", 1, true) ~= nil end end
  if s == "lora" then return function(n) return n:find(".lora_", 1, true) ~= nil end end
  local inner = s:match("^lora%.(.+)$") -- the adapters within a selection: lora.top(2), lora.layer[4-5]
  if inner then
    local m = matcher(inner, info)
    return function(n) return n:find(".lora_", 1, true) ~= nil and m(n) end
  end
  local i = s:match("^layer%[(%d+)%]$")
  if i then return layer_set(info, tonumber(i), tonumber(i), s) end
  local a, b = s:match("^layer%[(%d+)%-(%d+)%]$")
  if a then return layer_set(info, tonumber(a), tonumber(b), s) end
  local k = s:match("^top%((%d+)%)$")
  if k then
    k = tonumber(k)
    if k < 1 or k > L then error(("schedule: selector '%s': k must be 1..%d (the model's layers)"):format(s, L), 0) end
    return layer_set(info, L - k, L - 1, s)
  end
  k = s:match("^bottom%((%d+)%)$")
  if k then
    k = tonumber(k)
    if k < 1 or k > L then error(("schedule: selector '%s': k must be 1..%d (the model's layers)"):format(s, L), 0) end
    return layer_set(info, 0, k - 1, s)
  end
  if s:find("[%[%]%(%)]") then error(("schedule: '%s' is not a selector"):format(s), 0) end
  local pat = glob_pattern(s)
  return function(n) return n:match(pat) ~= nil end
end

local function select_set(sel, info)
  local set = {}
  if type(sel) == "string" then
    local m = matcher(sel, info)
    for _, n in ipairs(info.names) do if m(n) then set[n] = true end end
    if next(set) == nil then error(("schedule: selector '%s' matches no parameter"):format(sel), 0) end
    return set
  end
  if type(sel) ~= "table" or #sel == 0 then error(("schedule: bad selector %s"):format(tostring(sel)), 0) end
  for _, s in ipairs(sel) do for n in pairs(select_set(s, info)) do set[n] = true end end
  if sel.minus ~= nil then for n in pairs(select_set(sel.minus, info)) do set[n] = nil end end
  if next(set) == nil then error(("schedule: selector '%s' matches no parameter"):format(sel_text(sel)), 0) end
  return set
end

-- S.select(selector, info) -> names in model order. Raises naming the selector when it matches nothing.
function S.select(sel, info)
  local set = select_set(sel, info)
  local out = {}
  for _, n in ipairs(info.names) do if set[n] then out[#out + 1] = n end end
  return out
end

-- ---------------------------------------------------------------------------------------------
-- Building: a start set plus events { at = trigger, step = activation step (static) or nil,
-- unfreeze = set or nil, freeze = set or nil, label }

local function set_of(names)
  local s = {}
  for _, n in ipairs(names) do s[n] = true end
  return s
end

local function union(...)
  local s = {}
  for _, t in ipairs({ ... }) do for n in pairs(t) do s[n] = true end end
  return s
end

local function group_set(info, g)
  local s = {}
  for _, n in ipairs(info.names) do if info.group_of[n] == g then s[n] = true end end
  return s
end

local Schedule = {}
Schedule.__index = Schedule

-- "epoch" or N steps -> the step where the i-th move happens (i >= 1), and a trigger for it.
local function every_trigger(every, i)
  if every == "epoch" then return { epoch = i } end
  return { step = i * every }
end

-- The presets, in the order the schema lists them. Each: name; start and after, what trains at step 0 and
-- what follows (docs/recipes.md's preset table and `pft presets` print these); needs_head; and
-- build(sc, info, where) -> the start set and the events (sc: the resolved schedule section).
local function moves(sc, info, groups, fn)
  local ev = {}
  for i, g in ipairs(groups) do ev[i] = fn(every_trigger(sc.every, i), group_set(info, g), g) end
  return ev
end

S.PRESETS = {
  { name = "full", start = "everything", after = "—", build = function(_, info) return set_of(info.names), {} end },
  { name = "head", start = "`head` only (a linear probe: the pooler stays frozen too)", after = "—", needs_head = true,
    build = function(_, info) return group_set(info, "head"), {} end },
  { name = "top_k", start = "`top(k)` + `pooler` + `head`", after = "—", needs_head = true,
    build = function(sc, info, where)
      if sc.k > info.num_layers then
        error(("%s: schedule.k = %d but the model has %d layers"):format(where("schedule.k"), sc.k, info.num_layers), 0)
      end
      return union(set_of(S.select("top(" .. sc.k .. ")", info)), group_set(info, "pooler"), group_set(info, "head")), {}
    end },
  { name = "gradual", start = "`head` + `pooler`", needs_head = true,
    after = "every `every` (an epoch, or N steps) one more group from the top: `layer[L-1]`, ..., `layer[0]`, then `embeddings` (ULMFiT gradual unfreezing)",
    build = function(sc, info)
      local groups = {}
      for i = info.num_layers - 1, 0, -1 do groups[#groups + 1] = "layer[" .. i .. "]" end
      groups[#groups + 1] = "embeddings"
      return union(group_set(info, "head"), group_set(info, "pooler")), moves(sc, info, groups, function(at, gs, g)
        return { at = at, unfreeze = gs, what = "unfreeze " .. g }
      end)
    end },
  { name = "chain_thaw", start = "`head` only", needs_head = true,
    after = "every `every`: each group *alone*, bottom to top: `embeddings`, `layer[0]`, ..., `layer[L-1]`, `pooler`; then everything (ULMFiT / DeepMoji chain-thaw). L + 3 phases in all",
    build = function(sc, info)
      local groups = { "embeddings" }
      for i = 0, info.num_layers - 1 do groups[#groups + 1] = "layer[" .. i .. "]" end
      groups[#groups + 1] = "pooler"
      local prev = group_set(info, "head")
      local ev = moves(sc, info, groups, function(at, gs, g)
        local e = { at = at, unfreeze = gs, freeze = prev, what = g .. " alone" }
        prev = gs
        return e
      end)
      ev[#ev + 1] = { at = every_trigger(sc.every, #groups + 1), unfreeze = set_of(info.names), what = "everything" }
      return group_set(info, "head"), ev
    end },
  { name = "bitfit", start = "every `*.bias` + the whole `head`", after = "—", needs_head = true,
    build = function(_, info) return union(set_of(S.select("bias", info)), group_set(info, "head")), {} end },
  { name = "lora", start = "every LoRA adapter (`adapters.lora`) + the whole `head`, as PEFT trains them", after = "—",
    needs_head = true,
    build = function(_, info)
      local ok, names = pcall(S.select, "lora", info)
      if not ok then error("schedule: preset 'lora' needs adapters: add adapters.lora to the recipe (or model.adapter)", 0) end
      return union(set_of(names), group_set(info, "head")), {}
    end },
}
for _, p in ipairs(S.PRESETS) do S.PRESETS[p.name] = p end

-- The preset names in order (the schema's enum).
function S.preset_names()
  local out = {}
  for i, p in ipairs(S.PRESETS) do out[i] = p.name end
  return out
end

-- The markdown table of the presets (docs/recipes.md carries it; a test keeps the two equal).
function S.preset_table()
  local out = { "| preset | start | then |", "|---|---|---|" }
  for _, p in ipairs(S.PRESETS) do out[#out + 1] = ("| `%s` | %s | %s |"):format(p.name, p.start, p.after) end
  return table.concat(out, "\n") .. "\n"
end

-- The preset's start set and events.
local function preset(sc, info, where)
  local p = S.PRESETS[sc.preset]
  if not p then error("schedule: unknown preset '" .. tostring(sc.preset) .. "'", 0) end
  if p.needs_head and next(group_set(info, "head")) == nil then
    error(("schedule: preset '%s' needs a head, and the model has no classifier.* parameters"):format(p.name), 0)
  end
  return p.build(sc, info, where)
end

-- LR multiplier per group (before warm-up): discriminative rates, then the head multiplier. lr and optim:
-- the resolved sections.
local function group_lr(lr, optim, info)
  local L, groups = info.num_layers, S.group_names(info.num_layers)
  local mult = {}
  for _, g in ipairs(groups) do mult[g] = 1 end
  local d = lr.discriminative
  if d and d.decay then
    mult.embeddings = d.decay ^ L
    for i = 0, L - 1 do mult["layer[" .. i .. "]"] = d.decay ^ (L - 1 - i) end
  elseif d and d.spread then
    local lo, hi, n = d.spread[1], d.spread[2], #groups
    for j, g in ipairs(groups) do mult[g] = lo * (hi / lo) ^ ((j - 1) / (n - 1)) / optim.lr end
  end
  mult.head = mult.head * lr.head_multiplier
  return mult
end

local function trigger_text(at, default_metric)
  if at.epoch then return ("epoch %d"):format(at.epoch) end
  if at.step then return ("step %d"):format(at.step) end
  if at.fraction then return ("%g of training"):format(at.fraction) end
  local p = at.plateau
  local n = p.patience or 1
  return ("when dev %s stops improving for %d evaluation%s"):format(p.metric or default_metric, n, n == 1 and "" or "s")
end

-- S.build(recipe, info, { steps_per_epoch, total_steps, epochs }) -> schedule. Raises when a selector
-- matches nothing, naming the recipe key (and its file:line when the recipe came from pft.recipe).
function S.build(recipe, info, opts)
  opts = opts or {}
  local Schema, R = require "pft.recipe_schema", require "pft.recipe" -- (here: they require this module)
  local sc = Schema.complete("schedule", recipe.schedule)
  sc.rules = sc.rules or {}
  local function where(key)
    local w = R.where(recipe, key)
    return w and (w .. ": " .. key) or key
  end
  local function sel(s, key)
    local ok, r = pcall(S.select, s, info)
    if not ok then error(("%s: %s"):format(where(key), tostring(r):gsub("^schedule: ", "")), 0) end
    return set_of(r)
  end
  local train = Schema.complete("train", recipe.train)
  local spe = opts.steps_per_epoch or 1
  local epochs = opts.epochs or train.epochs
  local total = opts.total_steps or spe * epochs
  local metric = train.best_metric or Schema.default_best_metric(recipe.task and recipe.task.kind)

  if sc.custom ~= nil and (sc.initial ~= nil or #(sc.rules or {}) > 0) then
    error(("%s: schedule.custom replaces schedule.initial and schedule.rules: give one or the other"):format(
      where("schedule.custom")), 0)
  end
  local start, events = preset(sc, info, where)
  if sc.custom ~= nil then start, events = {}, {} end
  if sc.initial ~= nil then start = sel(sc.initial, "schedule.initial") end
  for i, r in ipairs(sc.rules) do
    local key = ("schedule.rules[%d]"):format(i)
    local e = { at = r.at, rule = i }
    if r.unfreeze ~= nil then e.unfreeze = sel(r.unfreeze, key .. ".unfreeze") end
    if r.freeze ~= nil then e.freeze = sel(r.freeze, key .. ".freeze") end
    e.what = (r.unfreeze ~= nil and "unfreeze " .. sel_text(r.unfreeze) or "freeze " .. sel_text(r.freeze))
    events[#events + 1] = e
  end
  for i, e in ipairs(events) do
    e.order = i
    local at = e.at
    if at.epoch then e.step = at.epoch * spe
    elseif at.step then e.step = at.step
    elseif at.fraction then e.step = math.floor(at.fraction * total + 0.5)
    else
      e.plateau = { metric = at.plateau.metric or metric, patience = at.plateau.patience or 1 }
      e.step = nil
    end
    e.label = trigger_text(at, metric)
  end
  local static, dynamic = {}, {}
  for _, e in ipairs(events) do
    if e.step then static[#static + 1] = e else dynamic[#dynamic + 1] = e end
  end
  table.sort(static, function(a, b)
    if a.step ~= b.step then return a.step < b.step end
    return a.order < b.order
  end)
  local lr, optim = Schema.complete("lr", recipe.lr), Schema.complete("optim", recipe.optim)
  local self = setmetatable({
    info = info, start = start, static = static, dynamic = dynamic, lr_mult = group_lr(lr, optim, info),
    warmup_steps = lr.unfreeze_warmup, steps_per_epoch = spe, total_steps = total,
    epochs = epochs, metric = metric, optim = optim, base_lr = optim.lr,
    custom = sc.custom, custom_where = sc.custom and where("schedule.custom"), eval_every = train.eval_every,
  }, Schedule)
  return self
end

local function apply(set, e)
  if e.freeze then for n in pairs(e.freeze) do set[n] = nil end end
  if e.unfreeze then for n in pairs(e.unfreeze) do set[n] = true end end
end

-- Higher is better except for losses and errors.
local function lower_is_better(metric) return metric:match("loss") or metric == "mse" or metric:match("error") end

-- The steps at which the plateau events fire, given the eval history (in order of the rules: each
-- waits for its own plateau, counted from the evaluation after the previous one fired).
function Schedule:plateau_steps(history)
  local fired = {}
  if #self.dynamic == 0 or not history then return fired end
  local recs = {}
  for _, h in ipairs(history) do recs[#recs + 1] = h end
  table.sort(recs, function(a, b) return (a.step or 0) < (b.step or 0) end)
  local k, best, since = 1, nil, 0
  for _, h in ipairs(recs) do
    local e = self.dynamic[k]
    if not e then break end
    local v = h.metrics and h.metrics[e.plateau.metric]
    if v ~= nil then
      local better = best == nil or (lower_is_better(e.plateau.metric) and v < best) or (not lower_is_better(e.plateau.metric) and v > best)
      if better then best, since = v, 0 else since = since + 1 end
      if since >= e.plateau.patience then
        fired[k] = h.step
        k, best, since = k + 1, v, 0
      end
    end
  end
  return fired
end

-- The groups of a trainable set, low to high: { name, params, lr_mult, trainable_numel }.
function Schedule:groups_of(set)
  local out = {}
  for _, g in ipairs(self.info.groups) do
    local params, n = {}, 0
    for _, name in ipairs(self.info.names) do
      if set[name] and self.info.group_of[name] == g then
        params[#params + 1] = name
        n = n + (self.info.numel[name] or 0)
      end
    end
    if #params > 0 then out[#out + 1] = { name = g, params = params, lr_mult = self.lr_mult[g], trainable_numel = n } end
  end
  return out
end

-- ---------------------------------------------------------------------------------------------
-- schedule.custom: the recipe's function names what trains at each step

-- The set schedule.custom returns at `step`, given the dev evaluations done by then; raises naming the
-- step when the function fails or returns something that is not a selector matching a parameter.
function Schedule:custom_set(step, history)
  local hist = {}
  for i, h in ipairs(history or {}) do
    local m = {}
    for k, v in pairs(h.metrics or {}) do m[k] = v end
    hist[i] = { step = h.step, epoch = h.epoch, metrics = m }
  end
  local ctx = { step = step, epoch = math.floor(step / self.steps_per_epoch), total_steps = self.total_steps,
    steps_per_epoch = self.steps_per_epoch, num_layers = self.info.num_layers, history = hist }
  local where = ("%s at step %d"):format(self.custom_where, step)
  local ok, sel = pcall(self.custom, ctx)
  if not ok then error(("%s: %s"):format(where, tostring(sel)), 0) end
  if type(sel) ~= "string" and type(sel) ~= "table" then
    error(("%s: returned %s, expected a selector (a string such as \"top(2)\", or a list of them)"):format(where,
      sel == nil and "nothing" or "a " .. type(sel)), 0)
  end
  local ok2, names = pcall(S.select, sel, self.info)
  if not ok2 then error(("%s: %s"):format(where, tostring(names):gsub("^schedule: ", "")), 0) end
  return set_of(names)
end

-- Steps 0..step of schedule.custom, in order (memoized: the trainer asks step by step; a resumed run
-- replays the steps before its checkpoint, each with the evaluations done by then), and since[n], the
-- step where parameter n's current trainable streak began (for unfreeze_warmup).
function Schedule:custom_until(step, history)
  local tr = self.trace
  if not tr or step < tr.last then tr = { last = -1, set = nil, since = {} }; self.trace = tr end
  for j = tr.last + 1, step do
    local seen = {}
    for _, h in ipairs(history or {}) do if (h.step or 0) <= j then seen[#seen + 1] = h end end
    local set = self:custom_set(j, seen)
    for n in pairs(tr.since) do if not set[n] then tr.since[n] = nil end end
    for n in pairs(set) do if not tr.since[n] then tr.since[n] = j end end
    tr.set, tr.last = set, j
  end
  local set, since = {}, {}
  for n in pairs(tr.set) do -- trainable from step 0: no ramp, as a preset's start
    set[n] = true
    if tr.since[n] > 0 then since[n] = tr.since[n] end
  end
  return set, since
end

-- The trainable set at a step, and since[n] (the step n last became trainable) for the warm-up.
function Schedule:trainable_at(step, epoch, history)
  if self.custom then return self:custom_until(step, history) end
  local fired = self:plateau_steps(history)
  local evs = {}
  for _, e in ipairs(self.static) do
    local on = (e.at.epoch and epoch >= e.at.epoch) or (not e.at.epoch and step >= e.step)
    if on then evs[#evs + 1] = { e = e, step = e.at.epoch and math.min(e.step, step) or e.step } end
  end
  for k, e in ipairs(self.dynamic) do
    if fired[k] and step >= fired[k] then evs[#evs + 1] = { e = e, step = fired[k] } end
  end
  table.sort(evs, function(a, b)
    if a.step ~= b.step then return a.step < b.step end
    return a.e.order < b.e.order
  end)
  local set, since = {}, {}
  for n in pairs(self.start) do set[n] = true end
  for _, x in ipairs(evs) do
    local before = {}
    for n in pairs(set) do before[n] = true end
    apply(set, x.e)
    for n in pairs(set) do if not before[n] then since[n] = x.step end end
  end
  return set, since
end

-- sched:at(step, epoch, history) -> { trainable = {[param] = true}, lr_mult = {[group or param] = x},
-- warmup = {[group or param] = factor in (0, 1]}, groups = { {name, params, lr_mult, warmup}, ... } }.
-- Epoch triggers read `epoch`; step and fraction triggers read `step`; plateau triggers read history.
function Schedule:at(step, epoch, history)
  epoch = epoch or math.floor(step / self.steps_per_epoch)
  local set, since = self:trainable_at(step, epoch, history)
  local st = { trainable = set, lr_mult = {}, warmup = {}, groups = {} }
  local W = self.warmup_steps
  for _, g in ipairs(self:groups_of(set)) do
    local f = 1
    if W > 0 then
      for _, n in ipairs(g.params) do
        if since[n] then f = math.min(f, math.min(1, (step - since[n] + 1) / W)) end
      end
    end
    g.warmup = f
    st.lr_mult[g.name], st.warmup[g.name] = g.lr_mult, f
    for _, n in ipairs(g.params) do st.lr_mult[n], st.warmup[n] = g.lr_mult, f end
    st.groups[#st.groups + 1] = g
  end
  return st
end

-- The groups of a trainable set, in model order, as labels: "layer[1]" when the whole group trains,
-- "layer[0](8/16)" when 8 of its 16 parameters do (BitFit, `freeze` rules). trainable.log and the plan
-- both print these.
function S.group_labels(set, info)
  local count, total = {}, {}
  for _, n in ipairs(info.names) do
    local g = info.group_of[n]
    total[g] = (total[g] or 0) + 1
    if set[n] then count[g] = (count[g] or 0) + 1 end
  end
  local labels = {}
  for _, g in ipairs(info.groups) do
    if count[g] then labels[#labels + 1] = count[g] == total[g] and g or ("%s(%d/%d)"):format(g, count[g], total[g]) end
  end
  return labels
end

-- "layer[4-5], pooler, head": group labels with runs of consecutive layers (same k/n suffix) compressed,
-- "layer[0-5](8/16)".
function S.compress_groups(names)
  local out, i = {}, 1
  while i <= #names do
    local a, suffix = names[i]:match("^layer%[(%d+)%](.*)$")
    if a then
      a = tonumber(a)
      local b, j = a, i + 1
      while j <= #names and names[j] == ("layer[" .. (b + 1) .. "]" .. suffix) do b, j = b + 1, j + 1 end
      out[#out + 1] = (a == b and ("layer[" .. a .. "]") or ("layer[" .. a .. "-" .. b .. "]")) .. suffix
      i = j
    else
      out[#out + 1] = names[i]
      i = i + 1
    end
  end
  return table.concat(out, ", ")
end

local function phase_label(self, from, to)
  local spe = self.steps_per_epoch
  if spe > 0 and from % spe == 0 and (to + 1) % spe == 0 then
    local e1, e2 = from / spe + 1, (to + 1) / spe
    return e1 == e2 and ("epoch %d"):format(e1) or ("epochs %d-%d"):format(e1, e2)
  end
  return ("steps %d-%d"):format(from, to)
end

-- A phase: its trainable set and groups, and state_numel, the parameters the optimizer holds state for
-- (every one trained so far: state is kept when a group is frozen again, as it may thaw later).
local function make_phase(self, set, ever, from, to, label, extra)
  local ph = { from_step = from, to_step = to, label = label, trainable = {}, groups = self:groups_of(set),
    trainable_numel = 0, state_numel = 0 }
  for n in pairs(set) do ph.trainable[n] = true; ever[n] = true end
  ph.touched = {} -- trained in this phase or an earlier one: what the activation cache may not serve
  for n in pairs(ever) do ph.state_numel = ph.state_numel + (self.info.numel[n] or 0); ph.touched[n] = true end
  for _, g in ipairs(ph.groups) do ph.trainable_numel = ph.trainable_numel + g.trainable_numel end
  for k, v in pairs(extra or {}) do ph[k] = v end
  return ph
end

-- sched:plan() -> phases { from_step, to_step (inclusive), label, trainable, groups, trainable_numel,
-- state_numel, touched (every parameter trained so far), change (what began it), unreached (starts after training ends) }; then one phase per
-- plateau rule (from_step nil, label "when dev accuracy stops improving for 1 evaluation"), applied on top
-- of the last phase.
-- The eval points (0, then every evaluation before the end): where the plan samples schedule.custom.
function Schedule:sample_steps()
  local every = self.eval_every == "epoch" and self.steps_per_epoch or self.eval_every
  local out = { 0 }
  for s = every, self.total_steps - 1, every do out[#out + 1] = s end
  return out
end

-- schedule.custom's plan: the function sampled at the eval points with no dev history yet (what a run
-- does may differ where the function reads the history); equal neighbours merge into one phase.
function Schedule:custom_plan()
  local phases, ever, samples = {}, {}, self:sample_steps()
  local prev
  for i, s in ipairs(samples) do
    local set = self:custom_set(s, {})
    local key = {}
    for n in pairs(set) do key[#key + 1] = n end
    table.sort(key)
    key = table.concat(key, "\0")
    local to = (samples[i + 1] or self.total_steps) - 1
    if prev and prev.key == key then
      prev.ph.to_step = to
    else
      local ph = make_phase(self, set, ever, s, to, nil, { change = i == 1 and "start" or "schedule.custom" })
      phases[#phases + 1] = ph
      prev = { key = key, ph = ph }
    end
  end
  for _, ph in ipairs(phases) do ph.label = phase_label(self, ph.from_step, ph.to_step) end
  return phases
end

function Schedule:plan()
  if self.custom then return self:custom_plan() end
  local phases, set, ever = {}, {}, {}
  for n in pairs(self.start) do set[n] = true end
  local from, change = 0, "start"
  local i = 1
  local ev = self.static
  local total = self.total_steps
  while true do
    local nxt = ev[i] and ev[i].step
    if from >= total then -- after training ends: shown, marked
      local ph = make_phase(self, set, ever, from, nxt and nxt - 1 or nil, ("from step %d"):format(from),
        { change = change, unreached = true })
      phases[#phases + 1] = ph
    else
      local to = math.min(nxt or total, total) - 1
      if to >= from then
        phases[#phases + 1] = make_phase(self, set, ever, from, to, phase_label(self, from, to), { change = change })
      end
    end
    if not nxt then break end
    local changes = {}
    while ev[i] and ev[i].step == nxt do
      apply(set, ev[i])
      changes[#changes + 1] = ev[i].what
      i = i + 1
    end
    from, change = nxt, table.concat(changes, "; ")
  end
  for _, e in ipairs(self.dynamic) do
    apply(set, e)
    phases[#phases + 1] = make_phase(self, set, ever, nil, nil, e.label, { change = e.what, dynamic = true })
  end
  return phases
end

-- Optimizer state bytes for n trainable parameters: AdamW keeps m and v (2 x fp32), SGD a momentum
-- buffer (fp32) when momentum > 0.
function Schedule:optimizer_bytes(n)
  if self.optim.name == "sgd" then return self.optim.momentum > 0 and 4 * n or 0 end
  return 8 * n
end

return S
