-- pft.plan: the run's plan, computed once for `pft validate` (which prints it) and `pft train` (which
-- writes it to RUN_DIR/plan.txt): optimizer steps from the training rows the loader counts, the schedule
-- over them, and the plan as text.
--
--   local Plan = require "pft.plan"
--   local p = Plan.new(recipe, S.model_info(bert), train_ds.n, { splits = { train = { n =, ntok = }, dev = ... } })
--   p.sizes.total_steps, p.sched:at(step, epoch, history)
--   p.cache.chosen                      -- the activation cache's boundaries (pft.actcache), {} when off
--   for _, line in ipairs(Plan.lines(p)) do print(line) end
local A = require "pft.actcache"
local D = require "pft.data"
local S = require "pft.schedule"
local Schema = require "pft.recipe_schema"
local core = require "pft.core"

local P = {}

-- 1234567 -> "1,234,567"
function P.group3(n)
  local s = ("%d"):format(n)
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end

function P.mib(bytes)
  if bytes < 1024 * 1024 then return ("%.1f KiB"):format(bytes / 1024) end
  if bytes < 1024 ^ 3 then return ("%.1f MiB"):format(bytes / 1024 ^ 2) end
  return ("%.2f GiB"):format(bytes / 1024 ^ 3)
end

function P.fmt_lr(x) return (("%.2g"):format(x):gsub("e%-0", "e-")) end

-- P.sizes(recipe, rows) -> { rows, batches, steps_per_epoch, total_steps, epochs }: batches as the
-- loader makes them, optimizer steps of grad_accum batches (the last one of an epoch may be shorter),
-- epochs x steps per epoch cut to train.max_steps; epochs is then how many epochs those steps touch.
function P.sizes(recipe, rows)
  local tr = recipe.train
  local batches = D.num_batches(rows, recipe.data.batch_size)
  local spe = math.max(1, math.ceil(batches / tr.grad_accum))
  local total = spe * tr.epochs
  if tr.max_steps then total = math.min(total, tr.max_steps) end
  return { rows = rows, batches = batches, steps_per_epoch = spe, total_steps = total,
    epochs = math.ceil(total / spe) }
end

-- The model's head for a task: token classification has a head per token, the others one per sequence.
function P.head_kind(recipe)
  return recipe.task.kind == "token_classification" and "tokcls" or "seqcls"
end

-- The activation cache's plan: which boundaries the phases need, which of them fit the budget (most
-- steps first), and their bytes over the splits ({name = {n =, ntok =}}; without splits, no sizes).
function P.cache_plan(recipe, info, sched, splits, width)
  local head = P.head_kind(recipe)
  local c = { enabled = recipe.train.cache ~= false, head = head, chosen = {}, skipped = {}, bytes = 0 }
  if not c.enabled then return c end
  c.needed = A.needed(sched:plan(), info, head)
  c.dir = D.cache_dir() .. "/acts"
  local mib = recipe.train.cache_budget
  c.budget = mib and mib * 1024 * 1024 or A.default_budget(c.dir)
  c.budget_given = mib ~= nil
  local function cost(b)
    local sum = 0
    for _, sp in pairs(splits or {}) do sum = sum + A.split_bytes(b, info, head, width or 0, sp.n, sp.ntok) end
    return sum
  end
  c.chosen, c.skipped, c.bytes = A.choose(c.needed, cost, c.budget)
  c.is_chosen = {}
  for _, b in ipairs(c.chosen) do c.is_chosen[b] = true end
  return c
end

-- P.new(recipe, info, rows[, {splits = {train = {n, ntok}, ...}, width = hidden size, lora = the model's
-- config().lora}])
-- -> { recipe, info, sizes, sched, total_params, cache, gemm }; gemm: the bf16 GEMM the context uses ("amx",
-- "avx512") when train.precision is bf16, else nil (T.prepare sets the precision before the plan)
function P.new(recipe, info, rows, opts)
  opts = opts or {}
  local sizes = P.sizes(recipe, rows)
  local total_params = 0
  for _, n in ipairs(info.names) do total_params = total_params + info.numel[n] end
  local sched = S.build(recipe, info, sizes)
  return { recipe = recipe, info = info, sizes = sizes, total_params = total_params, sched = sched,
    cache = P.cache_plan(recipe, info, sched, opts.splits, opts.width), splits = opts.splits, lora = opts.lora,
    gemm = Schema.precision_of(recipe) == "bf16" and (core.precision():gsub("^bf16%-", "")) or nil }
end

-- "adapters: LoRA r 8, scale 2, dropout 0.1 on query, value in layer[0-5]: 73,728 parameters (12,288 per
-- layer)", or nil without adapters.
local function adapter_line(plan)
  if not plan.lora then return nil end
  local info, per_layer, targets, seen, total = plan.info, {}, {}, {}, 0
  for _, n in ipairs(info.names) do
    local proj = n:match("encoder%.layer%.%d+%.(.-)%.lora_A%.weight$")
    if proj and not seen[proj] then seen[proj], targets[#targets + 1] = true, proj:gsub("^attention%.self%.", "") end
    if n:find(".lora_", 1, true) then
      local g = info.group_of[n]
      per_layer[g] = (per_layer[g] or 0) + info.numel[n]
      total = total + info.numel[n]
    end
  end
  local groups, counts, same = {}, nil, true
  for _, g in ipairs(info.groups) do
    if per_layer[g] then
      groups[#groups + 1] = g
      if counts and counts ~= per_layer[g] then same = false end
      counts = per_layer[g]
    end
  end
  local each = same and (" (%s per layer)"):format(P.group3(counts or 0)) or ""
  return ("adapters: LoRA r %d, scale %s, dropout %s on %s in %s: %s parameters%s"):format(plan.lora.r,
    P.fmt_lr(plan.lora.scale), P.fmt_lr(plan.lora.dropout), table.concat(targets, ", "), S.compress_groups(groups),
    P.group3(total), each)
end

-- A phase's cache cell: the boundary it starts from ("layer[4] in", "pooled"), or "live".
local function cache_cell(plan, ph)
  local c = plan.cache
  local b = not ph.unreached and ph.touched and A.boundary_of(ph.touched, plan.info, c.head)
  if b == nil or b == false or b == 0 then return "live" end -- 0: the embeddings, cheaper live than stored
  if not c.is_chosen[b] then return "live (budget)" end
  return A.label(b, plan.info, c.head)
end

-- One table row per phase: steps, epochs, trainable groups, parameters, optimizer memory, change.
local function phase_rows(plan)
  local sched, spe = plan.sched, plan.sizes.steps_per_epoch
  local cached = plan.cache.enabled
  local rows = { { "phase", "steps", "epochs", "trainable groups", "params", "optimizer", cached and "cache" or nil, "change" } }
  local peak_n, peak_b, kept = 0, 0, false
  for i, ph in ipairs(sched:plan()) do
    local labels = S.group_labels(ph.trainable, plan.info)
    local steps, epochs
    if ph.dynamic then
      steps, epochs = ph.label, ""
    elseif ph.unreached then
      steps, epochs = ("%d-"):format(ph.from_step), "not run"
    else
      steps = ("%d-%d"):format(ph.from_step, ph.to_step)
      local e1, e2 = math.floor(ph.from_step / spe) + 1, math.floor(ph.to_step / spe) + 1
      epochs = e1 == e2 and tostring(e1) or (e1 .. "-" .. e2)
    end
    local bytes = sched:optimizer_bytes(ph.state_numel)
    if not ph.unreached then
      peak_n, peak_b = math.max(peak_n, ph.trainable_numel), math.max(peak_b, bytes)
      kept = kept or ph.state_numel > ph.trainable_numel
    end
    local row = { tostring(i), steps, epochs, #labels > 0 and S.compress_groups(labels) or "(nothing)",
      P.group3(ph.trainable_numel), P.mib(bytes) }
    if cached then row[#row + 1] = cache_cell(plan, ph) end
    row[#row + 1] = ph.change or ""
    rows[#rows + 1] = row
  end
  return rows, peak_n, peak_b, kept
end

-- Columns padded to their widest cell; params and optimizer right-aligned; the last column unpadded.
local function aligned(rows)
  local w, out = {}, {}
  for _, row in ipairs(rows) do for c, cell in ipairs(row) do w[c] = math.max(w[c] or 0, #cell) end end
  for _, row in ipairs(rows) do
    local cells = {}
    for c, cell in ipairs(row) do
      local right = c == 5 or c == 6 -- params, optimizer
      cells[c] = c == #row and cell or (right and (" "):rep(w[c] - #cell) .. cell or cell .. (" "):rep(w[c] - #cell))
    end
    out[#out + 1] = (table.concat(cells, "  "):gsub("%s+$", ""))
  end
  return out
end

-- "layer[0-3] 1e-5, layer[4-5], pooler 2e-5, head 2e-4": peak rates per group, runs of equal rates merged.
local function rate_text(sched, groups)
  local parts, i = {}, 1
  while i <= #groups do
    local lr = sched.base_lr * sched.lr_mult[groups[i]]
    local j = i
    while j < #groups and math.abs(sched.base_lr * sched.lr_mult[groups[j + 1]] - lr) <= 1e-12 * lr do j = j + 1 end
    local names = {}
    for k = i, j do names[#names + 1] = groups[k] end
    local label = (i == 1 and j == #groups) and "all groups" or S.compress_groups(names)
    parts[#parts + 1] = label .. " " .. P.fmt_lr(lr)
    i = j + 1
  end
  return table.concat(parts, ", ")
end

-- What the activation cache holds and costs, or why it is off.
local function cache_lines(plan)
  local c = plan.cache
  if not c.enabled then return { "activation cache: off (train.cache = false): every step runs the whole model" } end
  if #c.needed == 0 then return { "activation cache: not used (the embeddings train from the start)" } end
  local labels, out = {}, {}
  for _, b in ipairs(c.chosen) do labels[#labels + 1] = A.label(b, plan.info, c.head) end
  local splits = {}
  for _, name in ipairs({ "train", "dev" }) do
    local sp = plan.splits and plan.splits[name]
    if sp then splits[#splits + 1] = ("%s %s rows"):format(name, P.group3(sp.n)) end
  end
  -- the default budget is not printed as a number: free memory changes from one minute to the next,
  -- and validate's plan must be the plan.txt that train writes
  local budget = c.budget_given and ("budget %s"):format(P.mib(c.budget)) or "budget: half of free memory or disk"
  if #c.chosen > 0 then
    out[1] = ("activation cache: %s for %s: %s on disk (%s); layers below run once per split"):format(
      table.concat(labels, ", "), table.concat(splits, ", "), P.mib(c.bytes), budget)
  end
  if #c.skipped > 0 then
    local sk = {}
    for _, b in ipairs(c.skipped) do sk[#sk + 1] = A.label(b, plan.info, c.head) end
    out[#out + 1] = ("activation cache: %s not stored, over the %s: those phases run live"):format(table.concat(sk, ", "), budget)
  end
  return out
end

-- P.lines(plan) -> the plan as text lines: the phase table, the learning rates, the totals.
function P.lines(plan)
  local r, sched = plan.recipe, plan.sched
  local rows, peak_n, peak_b, kept = phase_rows(plan)
  local lines = aligned(rows)
  if kept then
    lines[#lines + 1] = "optimizer: state is kept for groups frozen again (they may thaw later), so it counts every"
    lines[#lines + 1] = "parameter trained so far"
  end
  if sched.custom then
    lines[#lines + 1] = ("schedule.custom sampled at the %d evaluation points, with no dev history yet: where it reads"):format(
      #sched:sample_steps())
    lines[#lines + 1] = "the history, training may differ"
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "learning rates (peak, before the " .. r.lr_schedule.name .. " schedule): " ..
    rate_text(sched, plan.info.groups)
  if sched.warmup_steps > 0 then
    lines[#lines + 1] = ("a group that unfreezes ramps its rate from 0 over %d steps"):format(sched.warmup_steps)
  end
  lines[#lines + 1] = adapter_line(plan)
  if plan.gemm then
    lines[#lines + 1] = ("precision: bf16 GEMMs (%s): operands rounded to bfloat16, sums in fp32; weights, optimizer state and the rest fp32"):format(plan.gemm)
  end
  for _, l in ipairs(cache_lines(plan)) do lines[#lines + 1] = l end
  lines[#lines + 1] = ("total: %s steps; model %s params; peak trainable %s (%.1f%%); peak optimizer state %s (%s)"):format(
    P.group3(plan.sizes.total_steps), P.group3(plan.total_params), P.group3(peak_n),
    100 * peak_n / math.max(1, plan.total_params), P.mib(peak_b),
    r.optim.name == "sgd" and "SGD: 4 bytes per trainable parameter with momentum" or "AdamW: 8 bytes per trainable parameter")
  return lines
end

return P
