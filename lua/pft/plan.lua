-- pft.plan: the run's plan, computed once for `pft validate` (which prints it) and `pft train` (which
-- writes it to RUN_DIR/plan.txt): optimizer steps from the training rows the loader counts, the schedule
-- over them, and the plan as text.
--
--   local Plan = require "pft.plan"
--   local p = Plan.new(recipe, S.model_info(bert), train_ds.n)
--   p.sizes.total_steps, p.sched:at(step, epoch, history)
--   for _, line in ipairs(Plan.lines(p)) do print(line) end
local D = require "pft.data"
local S = require "pft.schedule"

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

-- P.new(recipe, info, rows) -> { recipe, info, sizes, sched, total_params }
function P.new(recipe, info, rows)
  local sizes = P.sizes(recipe, rows)
  local total_params = 0
  for _, n in ipairs(info.names) do total_params = total_params + info.numel[n] end
  return { recipe = recipe, info = info, sizes = sizes, total_params = total_params,
    sched = S.build(recipe, info, sizes) }
end

-- One table row per phase: steps, epochs, trainable groups, parameters, optimizer memory, change.
local function phase_rows(plan)
  local sched, spe = plan.sched, plan.sizes.steps_per_epoch
  local rows = { { "phase", "steps", "epochs", "trainable groups", "params", "optimizer", "change" } }
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
    rows[#rows + 1] = { tostring(i), steps, epochs, #labels > 0 and S.compress_groups(labels) or "(nothing)",
      P.group3(ph.trainable_numel), P.mib(bytes), ph.change or "" }
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
      local right = c == 5 or c == 6
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
  lines[#lines + 1] = ("total: %s steps; model %s params; peak trainable %s (%.1f%%); peak optimizer state %s (%s)"):format(
    P.group3(plan.sizes.total_steps), P.group3(plan.total_params), P.group3(peak_n),
    100 * peak_n / math.max(1, plan.total_params), P.mib(peak_b),
    r.optim.name == "sgd" and "SGD: 4 bytes per trainable parameter with momentum" or "AdamW: 8 bytes per trainable parameter")
  return lines
end

return P
