-- pft.train: the training loop over a resolved recipe, evaluation, prediction and export.
--
--   local T = require "pft.train"
--   local summary = T.run(resolved_recipe, { run_dir = nil, resume = nil, quiet = false })
--   local metrics = T.evaluate("runs/sst2-...", recipe.data.dev)     -- a run dir, a model dir or a model
--   T.predict("runs/sst2-...", "sentences.txt", "preds.jsonl")     -- {text, label, probs = {label = p}}
--   T.export("runs/sst2-...", "out/model")
--
-- Per optimizer step: the schedule says which parameters train (requires_grad), their LR multipliers and
-- warm-up factors; layers without a trainable parameter run in eval mode (no dropout); grad_accum
-- micro-batches are forwarded and backpropagated, the trainable gradients are clipped to grad_clip, every
-- optimizer group gets lr = base_lr(step) x multiplier x warm-up, and the optimizer steps. Evaluation,
-- checkpoints, early stopping and the run directory are described in docs/training.md.
local core = require "pft.core"
local cjson = require "cjson"
local Ck = require "pft.checkpoint"
local Progress = require "pft.progress"

local T = {}

T.EXIT_OK, T.EXIT_FAILED, T.EXIT_INTERRUPTED = 0, 1, 130

-- --- learning-rate schedules: multipliers of optim.lr at a 0-based optimizer step ---------------------

local function warmup_steps(cfg, total)
  local w = cfg.warmup or 0
  if w < 1 then return math.ceil(w * total) end
  return math.floor(w)
end

-- T.lr_factor(lr_schedule, step, total_steps) -> factor; step 0-based (the step about to be taken).
-- linear/constant/cosine follow transformers' get_*_schedule_with_warmup, slanted_triangular Howard &
-- Ruder (2018) eq. 3, one_cycle torch.optim.lr_scheduler.OneCycleLR (cosine, div 25, final div 1e4).
function T.lr_factor(cfg, step, total)
  local name = cfg.name or "linear"
  local W = warmup_steps(cfg, total)
  if name == "constant" then
    if step < W then return step / math.max(1, W) end
    return 1
  elseif name == "linear" then
    if step < W then return step / math.max(1, W) end
    return math.max(0, (total - step) / math.max(1, total - W))
  elseif name == "cosine" then
    if step < W then return step / math.max(1, W) end
    local progress = (step - W) / math.max(1, total - W)
    return math.max(0, 0.5 * (1 + math.cos(math.pi * progress)))
  elseif name == "slanted_triangular" then
    local cut_frac, ratio = cfg.cut_frac or 0.1, cfg.ratio or 32
    local cut = math.max(1, math.floor(total * cut_frac))
    local p
    if step < cut then p = step / cut else p = 1 - (step - cut) / math.max(1, cut * (1 / cut_frac - 1)) end
    p = math.max(0, p)
    return (1 + p * (ratio - 1)) / ratio
  elseif name == "one_cycle" then
    local pct = cfg.pct_start or 0.3
    local div, final_div = 25, 1e4
    local initial, min = 1 / div, 1 / div / final_div
    local up_end = pct * total - 1
    local function anneal(a, b, x) return b + (a - b) / 2 * (math.cos(math.pi * x) + 1) end
    if step <= up_end then return anneal(initial, 1, up_end > 0 and step / up_end or 1) end
    return anneal(1, min, (step - up_end) / math.max(1e-12, (total - 1) - up_end))
  end
  error(("train: unknown lr_schedule.name '%s' (constant, linear, cosine, slanted_triangular, one_cycle)"):format(tostring(name)), 0)
end

-- --- model info and parameter groups ---------------------------------------------------------------

-- The schedule's view of a model (docs/recipe-contracts.md: model_info).
function T.model_info(bert)
  local names, numel, group_of = {}, {}, {}
  local L = bert:num_layers()
  for i, p in ipairs(bert:params()) do
    local n = p:name()
    names[i], numel[n] = n, p:numel()
    local layer = n:match("encoder%.layer%.(%d+)%.")
    if layer then group_of[n] = "layer[" .. layer .. "]"
    elseif n:find("embeddings.", 1, true) then group_of[n] = "embeddings"
    elseif n:find("pooler.", 1, true) then group_of[n] = "pooler"
    else group_of[n] = "head" end
  end
  local groups = { "embeddings" }
  for i = 0, L - 1 do groups[#groups + 1] = "layer[" .. i .. "]" end
  groups[#groups + 1] = "pooler"
  groups[#groups + 1] = "head"
  return { names = names, numel = numel, num_layers = L, group_of = group_of, groups = groups }
end

local function no_decay_match(name, patterns)
  for _, pat in ipairs(patterns or {}) do
    if name:find(pat, 1, true) then return true end
  end
  return false
end

-- "embeddings layer[1] head" from a trainable set; a group only partly trainable shows k/n parameters.
function T.format_trainable(trainable, info)
  local count, total = {}, {}
  for _, n in ipairs(info.names) do
    local g = info.group_of[n]
    total[g] = (total[g] or 0) + 1
    if trainable[n] then count[g] = (count[g] or 0) + 1 end
  end
  local parts = {}
  for _, g in ipairs(info.groups) do
    if count[g] then parts[#parts + 1] = count[g] == total[g] and g or ("%s(%d/%d)"):format(g, count[g], total[g]) end
  end
  return #parts > 0 and table.concat(parts, " ") or "(none)"
end

-- The optimizer's groups: one per (schedule group x decay / no-decay), in parameter order. Parameters
-- whose name contains one of optim.no_decay (default "bias", "LayerNorm") get weight_decay 0.
-- -> array of {key = "layer[3]/no_decay", params = {...}, names = {...}, lr, weight_decay}
function T.param_groups(params, info, oc)
  local no_decay = oc.no_decay or { "bias", "LayerNorm" }
  local gindex, groups = {}, {}
  for _, p in ipairs(params) do
    local n = p:name()
    local nd = no_decay_match(n, no_decay)
    local key = info.group_of[n] .. (nd and "/no_decay" or "")
    if not gindex[key] then
      groups[#groups + 1] = { params = {}, names = {}, lr = oc.lr, weight_decay = nd and 0 or (oc.weight_decay or 0), key = key }
      gindex[key] = #groups
    end
    local g = groups[gindex[key]]
    g.params[#g.params + 1], g.names[#g.names + 1] = p, n
  end
  return groups
end

-- --- small helpers ---------------------------------------------------------------------------------

local function write_file(path, data, mode)
  local f, err = io.open(path, mode or "wb")
  if not f then error("train: cannot write " .. path .. ": " .. tostring(err), 0) end
  f:write(data)
  f:close()
end

local function is_regression(recipe) return recipe.task.kind == "regression" end

local function head_kind(recipe)
  return recipe.task.kind == "token_classification" and "tokcls" or "seqcls"
end

local function higher_is_better(metric)
  return not (metric == "loss" or metric == "mse")
end

local function now_stamp() return os.date("%Y%m%d-%H%M%S") end

local function finite(x) return type(x) == "number" and x == x and x ~= math.huge and x ~= -math.huge end

-- metrics for metrics.jsonl: a non-finite value (a Pearson of constant predictions) as null
local function json_safe(v)
  if type(v) == "number" then return finite(v) and v or cjson.null end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = json_safe(x) end
  return out
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

-- Writes path atomically: path.tmp, then rename(2).
local function write_atomic(path, data)
  write_file(path .. ".tmp", data)
  local ok, err = os.rename(path .. ".tmp", path)
  if not ok then error("train: cannot rename " .. path .. ".tmp: " .. tostring(err), 0) end
end

-- Cuts path back to its first n bytes (what the checkpoint saw); a shorter file stays as it is.
local function truncate_to(path, n)
  local s = Ck.read_file(path)
  if s and #s > n then write_atomic(path, s:sub(1, n)) end
end

-- run_dir/status: running, done, early_stopped, interrupted, "nan: <message>", "failed: <message>".
local function write_status(run_dir, text)
  write_atomic(run_dir .. "/status", (text:gsub("\n", " ")) .. "\n")
end
T.write_status = write_status

-- A new run's directory, created exclusively: an automatic name (runs/<name>-<yyyymmdd-hhmmss>, output.dir
-- not set) that exists gets -2, -3, ...; a chosen directory must be new or empty.
local function create_run_dir(dir, auto)
  local parent = dir:match("^(.*)/[^/]+$")
  if parent and parent ~= "" then assert(core.mkdir(parent)) end
  local cand, n = dir, 1
  while true do
    local ok, err, code = core.mkdir_excl(cand)
    if ok then return cand end
    if code ~= "exists" then error("train: " .. tostring(err), 0) end
    if not auto then
      local names = core.list_dir(cand)
      if names and #names == 0 then return cand end
      error(("train: output directory %s already exists and is not empty; continue that run with --resume %s, or choose another output.dir"):format(cand, cand), 0)
    end
    n = n + 1
    cand = dir .. "-" .. n
  end
end

-- What may differ between a run's saved recipe and the one given with --resume (docs/training.md).
T.RESUME_MAY_CHANGE = { ["train.epochs"] = true, ["train.max_steps"] = true, ["train.log_every"] = true,
  ["output.keep"] = true, ["output.dir"] = true, name = true }

local function flatten(t, prefix, out)
  for k, v in pairs(t) do
    local key = prefix == "" and tostring(k) or (prefix .. "." .. tostring(k))
    if type(v) == "table" then
      if next(v) == nil then out[key] = "{}" else flatten(v, key, out) end
    elseif type(v) == "function" then
      local R = require "pft.recipe"
      out[key] = "function: " .. (R.function_text(v) or tostring(R.function_source(v)))
    else
      out[key] = v
    end
  end
  return out
end

local function show(v)
  if v == nil then return "none" end
  if type(v) == "string" then return ("%q"):format(v) end
  return tostring(v)
end

-- The resume check: the given recipe, normalised like the saved one (dumped and loaded), against the
-- run's recipe.lua. Returns the differences that are allowed; raises listing the others.
local function check_resume_recipe(run_dir, recipe)
  local R = require "pft.recipe"
  local path = run_dir .. "/recipe.lua"
  local saved_src = Ck.read_file(path)
  if not saved_src then error(("train: --resume %s: no recipe.lua there (not a run directory)"):format(run_dir), 0) end
  local problems = {}
  for l in saved_src:gmatch("[^\n]+") do
    if l:sub(1, #R.UNRESUMABLE_MARK) == R.UNRESUMABLE_MARK then problems[#problems + 1] = l:sub(#R.UNRESUMABLE_MARK + 1) end
  end
  if #problems > 0 then
    error(("train: --resume %s: this run cannot be resumed exactly: %s"):format(run_dir, table.concat(problems, "; ")), 0)
  end
  local given_src, gp = R.dump_checked(recipe)
  if #gp > 0 then error(("train: --resume %s: the given recipe cannot be compared: %s"):format(run_dir, table.concat(gp, "; ")), 0) end
  local tmp = run_dir .. "/.resume-check.lua"
  write_file(tmp, given_src)
  local ok, given = pcall(R.load, tmp)
  if not ok then os.remove(tmp); error(given, 0) end
  local saved = R.load(path)
  local a, b = flatten(saved, "", {}), flatten(given, "", {}) -- (functions are read from their files)
  os.remove(tmp)
  local keys, seen = {}, {}
  for k in pairs(a) do keys[#keys + 1] = k; seen[k] = true end
  for k in pairs(b) do if not seen[k] then keys[#keys + 1] = k end end
  table.sort(keys)
  local bad, allowed = {}, {}
  for _, k in ipairs(keys) do
    if a[k] ~= b[k] then
      local line = ("%s: %s (saved) vs %s (given)"):format(k, show(a[k]), show(b[k]))
      if T.RESUME_MAY_CHANGE[k] then allowed[#allowed + 1] = line else bad[#bad + 1] = line end
    end
  end
  if #bad > 0 then
    error(("train: --resume %s: the recipe differs from the run's recipe.lua in what would change the run:\n  %s\n(on resume only train.epochs, train.max_steps, train.log_every and output.keep may change)"):format(
      run_dir, table.concat(bad, "\n  ")), 0)
  end
  return allowed, given_src
end

-- --- evaluation ------------------------------------------------------------------------------------

-- Forward every batch of the loader in eval mode without a tape. Returns loss (mean per example),
-- predictions, gold labels and the probabilities per row (classification).
local function predict_loader(m, loader, regression, want_probs)
  local bert = m.bert or m
  local sum, n, preds, gold, probs = 0, 0, {}, {}, {}
  core.no_grad(function()
    for item in loader:epoch(0, 1) do
      local _, _, logits = bert:forward(item.batch)
      local B = #item.labels
      if item.labels[1] ~= nil then
        local loss = bert:loss(logits, item.labels)
        sum, n = sum + loss:item() * B, n + B
        loss:free()
      end
      if regression then
        local flat = logits:flat()
        for i = 1, B do preds[#preds + 1], gold[#gold + 1] = flat[i], item.labels[i] end
      else
        local p = core.softmax(logits)
        local rows = p:totable()
        for i, row in ipairs(rows) do
          local best, bi = -1, 0
          for k, v in ipairs(row) do if v > best then best, bi = v, k - 1 end end
          preds[#preds + 1], gold[#gold + 1] = bi, item.labels[i]
          if want_probs then probs[#probs + 1] = row end
        end
        p:free()
      end
      logits:free()
      item.batch:free()
    end
  end)
  return n > 0 and sum / n or nil, preds, gold, probs
end

local function compute_metrics(recipe, loss, preds, gold, label_names)
  local Mx = require "pft.metrics"
  local m
  if is_regression(recipe) then m = Mx.regression(preds, gold)
  elseif recipe.task.kind == "token_classification" then m = {} -- token metrics: not yet (docs/training.md)
  else m = Mx.classification(preds, gold, label_names) end
  m.loss = loss
  return m
end

-- --- the run ---------------------------------------------------------------------------------------

local function read_split(D, spec, recipe, labels)
  return D.read(spec, { task = recipe.task.kind, labels = labels, on_error = recipe.data.on_error,
    preprocess = recipe.data.preprocess })
end

local function make_loader(D, ds, m, recipe, eval)
  return D.loader(ds, m.tokenizer, { batch_size = eval and recipe.data.eval_batch_size or recipe.data.batch_size,
    shuffle = not eval and recipe.data.shuffle, bucket = recipe.data.bucket, seed = recipe.train.seed,
    max_length = recipe.model.max_length })
end

-- A human summary of the plan (plan.txt; `pft validate` prints sched:plan() too).
local function plan_text(plan, info)
  local lines = {}
  for _, ph in ipairs(plan) do
    lines[#lines + 1] = ("%s (steps %d-%d): %s  [%d trainable parameters]"):format(ph.label or "", ph.from_step,
      ph.to_step, T.format_trainable(ph.trainable, info), ph.trainable_numel or 0)
  end
  return table.concat(lines, "\n") .. "\n"
end

-- T.run(recipe, opts) -> summary {status = "done"|"early_stopped"|"interrupted"|"nan", exit_code, run_dir,
-- steps, best = {metric, value, step}, wall_s, trainable_numel, model_dir, checkpoint}.
-- opts: run_dir, resume (a run dir to continue), quiet, out (a file for progress; io.stdout),
-- interrupt_at_step (testing: behave as if Ctrl-C arrived after that step; env PFT_TEST_INTERRUPT_AT_STEP),
-- nan_at_step (testing: the loss of that step is NaN; env PFT_TEST_NAN_AT_STEP), on_step (testing: called
-- as on_step(steps_done, {model, optimizer, groups}) after each optimizer step).
local run_impl
function T.run(recipe, opts)
  opts = opts or {}
  local ctx = {}
  local ok, res = pcall(run_impl, recipe, opts, ctx)
  if ok then return res end
  if ctx.run_dir and ctx.owns_status then
    local msg = type(res) == "table" and (res.msg or tostring(res)) or tostring(res)
    pcall(write_status, ctx.run_dir, "failed: " .. msg)
  end
  error(res, 0)
end

function run_impl(recipe, opts, ctx)
  require("pft.preflight").check(recipe) -- fail before training, not after (docs/recipes.md "Checked before training")
  local D = require "pft.data"
  local S = require "pft.schedule"
  local Model = require "pft.model"
  local tr, out_cfg = recipe.train, recipe.output or {}
  local wall0 = core.clock()
  local interrupt_at = opts.interrupt_at_step or tonumber(os.getenv("PFT_TEST_INTERRUPT_AT_STEP") or "")
  local nan_at = opts.nan_at_step or tonumber(os.getenv("PFT_TEST_NAN_AT_STEP") or "")
  local nan_eval_at = opts.nan_eval_at_step or tonumber(os.getenv("PFT_TEST_NAN_EVAL_AT_STEP") or "")
  local function warn(msg)
    if opts.warn then opts.warn(msg) else io.stderr:write("pft: ", msg, "\n") end
  end

  local run_dir
  local resume_ck
  if opts.resume then
    run_dir = opts.resume
    local allowed, given_src = check_resume_recipe(run_dir, recipe)
    for _, n in ipairs(Ck.clean_tmp(run_dir)) do warn(("removed the unfinished checkpoint %s/checkpoints/%s"):format(run_dir, n)) end
    local latest, damaged = Ck.latest_valid(run_dir)
    if not latest then
      if #damaged == 0 then error(("train: --resume %s: no checkpoint in %s/checkpoints"):format(run_dir, run_dir), 0) end
      local why = {}
      for _, d in ipairs(damaged) do why[#why + 1] = d.name .. ": " .. d.reason end
      error(("train: --resume %s: no usable checkpoint (%s)"):format(run_dir, table.concat(why, "; ")), 0)
    end
    for i, d in ipairs(damaged) do
      local next_name = (damaged[i + 1] and damaged[i + 1].name) or latest:match("[^/]+$")
      warn(("checkpoint %s is damaged (%s); resuming from %s"):format(d.name, d.reason, next_name))
    end
    resume_ck = Ck.load(latest)
    if #allowed > 0 then write_atomic(run_dir .. "/recipe.lua", given_src) end
  else
    local R = require "pft.recipe"
    local dir = opts.run_dir or out_cfg.dir or ("runs/" .. (recipe.name or "run") .. "-" .. now_stamp())
    local base = dir:match("([^/]+)$") or dir
    local auto = not opts.run_dir and R.where(recipe, "output.dir") == nil and
      base:match("^" .. (recipe.name or "run"):gsub("%p", "%%%0") .. "%-%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d$") ~= nil
    run_dir = create_run_dir(dir, auto)
  end
  ctx.run_dir, ctx.owns_status = run_dir, true
  write_status(run_dir, "running")

  core.seed(tr.seed or 42)
  if tr.threads then core.set_threads(tr.threads) end

  -- data, labels, model
  local train_ds = read_split(D, recipe.data.train, recipe, recipe.task.labels)
  local labels = not is_regression(recipe) and (recipe.task.labels or train_ds.label_names) or nil
  local dev_ds = recipe.data.dev and read_split(D, recipe.data.dev, recipe, labels) or nil
  local m = Model.load(recipe.model.name, { head = head_kind(recipe), num_labels = labels and #labels or 1, labels = labels })
  local bert = m.bert
  local loader = make_loader(D, train_ds, m, recipe, false)
  local dev_loader = dev_ds and make_loader(D, dev_ds, m, recipe, true) or nil

  local accum = tr.grad_accum or 1
  local nb = loader:num_batches()
  local steps_per_epoch = math.ceil(nb / accum)
  -- as `pft validate` counts: epochs x steps per epoch, cut to max_steps when that is set
  local total_steps = (tr.epochs or 3) * steps_per_epoch
  if tr.max_steps then total_steps = math.min(total_steps, tr.max_steps) end
  local epochs = math.ceil(total_steps / steps_per_epoch)
  local info = T.model_info(bert)
  local sched = S.build(recipe, info, { steps_per_epoch = steps_per_epoch, total_steps = total_steps, epochs = epochs })
  local plan = sched:plan()

  -- optimizer: one group per (schedule group x decay/no-decay), every parameter in one from the start
  local params = bert:params()
  local by_name = {}
  for _, p in ipairs(params) do by_name[p:name()] = p end
  local oc = recipe.optim
  local groups = T.param_groups(params, info, oc)
  local copt = {}
  for i, g in ipairs(groups) do copt[i] = { params = g.params, lr = g.lr, weight_decay = g.weight_decay } end
  local opt
  if (oc.name or "adamw") == "adamw" then
    local b = oc.betas or { 0.9, 0.999 }
    opt = core.adamw(copt, { beta1 = b[1], beta2 = b[2], eps = oc.eps or 1e-8 })
  elseif oc.name == "sgd" then
    opt = core.sgd(copt, { momentum = oc.momentum or 0 })
  else
    error(("train: unknown optim.name '%s' (adamw, sgd)"):format(tostring(oc.name)), 0)
  end

  -- the run directory
  if not resume_ck then
    write_file(run_dir .. "/recipe.lua", (require("pft.recipe").dump(recipe)))
    write_file(run_dir .. "/plan.txt", plan_text(plan, info))
    write_file(run_dir .. "/metrics.jsonl", "")
    write_file(run_dir .. "/trainable.log", "")
  end

  -- position and bookkeeping (restored on resume)
  local step, epoch, history = 0, 0, {}
  local best = { metric = tr.best_metric or (is_regression(recipe) and "pearson" or "accuracy") }
  local bad_evals = 0
  local prev_trainable, prev_log = {}, nil
  local ever = {}
  local elapsed_before = 0
  if resume_ck then
    local st = resume_ck.state
    for name, t in pairs(resume_ck.weights) do
      local p = by_name[name]
      if not p then error(("train: checkpoint %s has '%s', which the model lacks"):format(resume_ck.path, name), 0) end
      p:copy_(t)
      ever[name] = true
    end
    opt:load_state(resume_ck.optim)
    core.set_rng_state(st.rng[1], st.rng[2])
    step, epoch, history = st.step, st.epoch, st.history or {}
    best.value, best.step = tonumber(st.best_value), st.best_step
    bad_evals = st.bad_evals or 0
    for _, n in ipairs(st.trainable or {}) do prev_trainable[n] = true end
    prev_log = st.trainable_log
    elapsed_before = st.elapsed or 0
    -- what was written after this checkpoint (an evaluation, a trainable.log line) is written again
    if st.metrics_bytes then truncate_to(run_dir .. "/metrics.jsonl", st.metrics_bytes) end
    if st.trainable_log_bytes then truncate_to(run_dir .. "/trainable.log", st.trainable_log_bytes) end
    for _, t in pairs(resume_ck.weights) do t:free() end
    for _, s in pairs(resume_ck.optim) do s.m:free(); if s.v then s.v:free() end end
  end

  local progress = Progress.new({ total = total_steps, log_every = tr.log_every or 50, quiet = opts.quiet,
    out = opts.out or io.stdout })
  local function say(s) progress:line(s) end

  local function checkpoint_state(batch_pos)
    local seed, counter = core.rng_state()
    local tl = {}
    for n in pairs(prev_trainable) do tl[#tl + 1] = n end
    table.sort(tl)
    return { step = step, epoch = epoch, batch = batch_pos, rng = { seed, counter }, history = history,
      best_value = best.value and ("%.17g"):format(best.value), best_step = best.step, bad_evals = bad_evals, trainable = tl,
      trainable_log = prev_log, elapsed = elapsed_before + core.clock() - wall0, total_steps = total_steps,
      metrics_bytes = file_size(run_dir .. "/metrics.jsonl") or 0,
      trainable_log_bytes = file_size(run_dir .. "/trainable.log") or 0 }
  end

  local last_ck = resume_ck and resume_ck.path or nil
  local function save_checkpoint()
    local weights = {}
    for _, p in ipairs(params) do
      local n = p:name()
      if ever[n] or info.group_of[n] == "head" then weights[n] = p end
    end
    local ostate = opt:state()
    last_ck = Ck.save(run_dir, step, { weights = weights, optim = ostate, state = checkpoint_state() }, out_cfg.keep or 2)
    for _, s in pairs(ostate) do s.m:free(); if s.v then s.v:free() end end
    return last_ck
  end

  -- eval mode for what does not train: a layer runs dropout only while one of its parameters trains
  local function apply_modes(trainable)
    local layer_on, emb_on, head_on = {}, false, false
    for n in pairs(trainable) do
      local g = info.group_of[n]
      local i = g:match("^layer%[(%d+)%]$")
      if i then layer_on[tonumber(i)] = true
      elseif g == "embeddings" then emb_on = true
      else head_on = true end -- pooler and classifier
    end
    bert:train(true)
    for i = 0, info.num_layers - 1 do bert:set_layer_training(i, layer_on[i] == true) end
    bert:set_embeddings_training(emb_on)
    bert:set_head_training(head_on)
  end

  local evaluate_body
  local function evaluate()
    if not dev_loader then return nil end
    local e0 = core.clock()
    local r = evaluate_body()
    if progress.t0 then progress.t0 = progress.t0 + (core.clock() - e0) end -- tok/s counts training time only
    return r
  end
  function evaluate_body()
    bert:train(false)
    local loss, preds, gold = predict_loader(m, dev_loader, is_regression(recipe), false)
    if nan_eval_at and step == nan_eval_at then loss = 0 / 0 end
    if loss ~= nil and not finite(loss) then
      status = "nan"
      error({ nan = loss ~= loss and "nan" or "inf", eval = true })
    end
    local mx = compute_metrics(recipe, loss, preds, gold, labels)
    local rec = { step = step, epoch = epoch, split = "dev", metrics = json_safe(mx) }
    history[#history + 1] = { step = step, epoch = epoch, metrics = mx }
    write_file(run_dir .. "/metrics.jsonl", cjson.encode(rec) .. "\n", "ab")
    local ok, Mx = pcall(require, "pft.metrics")
    local text = ok and Mx.format and Mx.format(mx) or ("loss %.4f"):format(loss or 0)
    say(("eval step %d (epoch %d): %s"):format(step, epoch + 1, text))
    -- best and early stopping
    local v = mx[best.metric]
    if v == nil then error(("train: best_metric '%s' is not among the evaluation metrics"):format(best.metric), 0) end
    local better = best.value == nil or (higher_is_better(best.metric) and v > best.value) or
      (not higher_is_better(best.metric) and v < best.value)
    if better then
      best.value, best.step, bad_evals = v, step, 0
      m:export(run_dir .. "/best", { labels = labels })
    else
      bad_evals = bad_evals + 1
    end
    return mx
  end

  local eval_every = tr.eval_every or "epoch"
  local status = "done"
  local trainable_numel = 0
  local function trainable_list()
    local l = {}
    for _, p in ipairs(params) do if p:requires_grad() then l[#l + 1] = p end end
    return l
  end

  if not opts.quiet then
    say(("run %s: %d steps (%d epochs of %d), %d examples%s"):format(run_dir, total_steps, epochs, steps_per_epoch,
      train_ds.n, resume_ck and (", resumed at step " .. step) or ""))
  end
  core.watch_interrupts(true)
  local ok_run, run_err = pcall(function()
    while step < total_steps do
      local start_batch = (step - epoch * steps_per_epoch) * accum + 1
      local iter = loader:epoch(epoch, start_batch)
      local epoch_end_step = math.min(total_steps, (epoch + 1) * steps_per_epoch)
      while step < epoch_end_step do
        -- the trainable set of this step
        local at = sched:at(step, epoch, history)
        local tr_set = at.trainable
        for _, p in ipairs(params) do
          local n = p:name()
          local on = tr_set[n] == true
          if prev_trainable[n] and not on then p:zero_grad() end -- frozen again: no stale gradient
          p:requires_grad(on)
          if on then ever[n] = true end
        end
        local line = T.format_trainable(tr_set, info)
        if line ~= prev_log then
          write_file(run_dir .. "/trainable.log", ("step %d: %s\n"):format(step, line), "ab")
          prev_log = line
        end
        prev_trainable = tr_set
        apply_modes(tr_set)
        local base = oc.lr * T.lr_factor(recipe.lr_schedule or {}, step, total_steps)
        for gi, g in ipairs(groups) do
          local n1 = g.names[1]
          local mult = (at.lr_mult and at.lr_mult[n1] or 1) * (at.warmup and at.warmup[n1] or 1)
          opt:set_lr(gi, base * mult)
        end
        local group_lr = base
        -- micro-batches
        opt:zero_grad()
        local in_step = math.min(accum, nb - (step - epoch * steps_per_epoch) * accum)
        local loss_sum, tokens = 0, 0
        for _ = 1, in_step do
          local item = iter()
          if not item then error("train: the data loader ended early (epoch " .. epoch .. ")", 0) end
          local _, _, logits = bert:forward(item.batch)
          local loss = bert:loss(logits, item.labels)
          local lv = loss:item()
          if nan_at and step + 1 == nan_at then lv = 0 / 0 end
          if lv ~= lv or lv == math.huge or lv == -math.huge then
            status = "nan"
            error({ nan = lv ~= lv and "nan" or "inf" })
          end
          loss_sum = loss_sum + lv
          tokens = tokens + item.batch:tokens()
          local scaled = in_step > 1 and core.scale(loss, 1 / in_step) or loss
          scaled:backward()
          if scaled ~= loss then scaled:free() end
          loss:free()
          logits:free()
          item.batch:free()
        end
        local tl = trainable_list()
        if tr.grad_clip and tr.grad_clip > 0 then
          local norm = core.clip_grad_norm(tl, tr.grad_clip)
          if norm ~= norm or norm == math.huge then
            status = "nan"
            error({ nan = "non-finite gradient" })
          end
        end
        opt:step()
        step = step + 1
        trainable_numel = 0
        for _, p in ipairs(tl) do trainable_numel = trainable_numel + p:numel() end
        if opts.on_step then opts.on_step(step, { model = m, optimizer = opt, groups = groups }) end
        progress:update({ step = step, epoch = epoch, loss = loss_sum / in_step, lr = group_lr, tokens = tokens })
        local evaluated = false
        if type(eval_every) == "number" and step % eval_every == 0 then evaluate(); evaluated = true end
        if step == epoch_end_step and eval_every == "epoch" then evaluate(); evaluated = true end
        if evaluated and out_cfg.checkpoints ~= false then save_checkpoint() end
        if evaluated and tr.early_stopping and bad_evals >= (tr.early_stopping.patience or 2) then
          status = "early_stopped"
          return
        end
        if core.interrupted() or (interrupt_at and step == interrupt_at) then
          status = "interrupted"
          return
        end
      end
      epoch = epoch + 1
    end
  end)
  core.watch_interrupts(false)
  progress:finish()

  local summary = { run_dir = run_dir, steps = step, best = best, trainable_numel = trainable_numel, labels = labels }
  -- the model's memory goes now, not whenever the collector runs (compiled traces may anchor closures)
  local function release()
    opt:free()
    for _, p in ipairs(params) do p:free() end
    bert:free()
  end
  if not ok_run then
    if type(run_err) == "table" and run_err.nan then
      local msg = ("loss is %s at step %d; stopped, last good checkpoint: %s"):format(run_err.nan, step + 1,
        last_ck or "none")
      if run_err.eval then
        msg = ("dev loss is %s at step %d; stopped, last good checkpoint: %s"):format(run_err.nan, step, last_ck or "none")
      elseif run_err.nan == "non-finite gradient" then
        msg = ("gradient norm is not finite at step %d; stopped, last good checkpoint: %s"):format(step + 1, last_ck or "none")
      end
      io.stderr:write("pft: ", msg, "\n")
      summary.status, summary.exit_code, summary.message, summary.checkpoint = "nan", T.EXIT_FAILED, msg, last_ck
      write_status(run_dir, "nan: " .. msg)
      release()
      return summary
    end
    release()
    error(run_err, 0)
  end
  if status == "interrupted" then
    local path = save_checkpoint()
    say(("interrupted at step %d: checkpoint %s; continue with --resume %s"):format(step, path, run_dir))
    summary.status, summary.exit_code, summary.checkpoint = status, T.EXIT_INTERRUPTED, path
    write_status(run_dir, "interrupted")
    release()
    return summary
  end
  if status == "done" then epoch = epochs end -- as after the last epoch's loop, also when resumed at the end
  if out_cfg.checkpoints ~= false and (not last_ck or not last_ck:match("step%-" .. step .. "$")) then save_checkpoint() end
  m:export(run_dir .. "/model", { labels = labels })
  release()
  summary.status, summary.exit_code, summary.checkpoint = status, T.EXIT_OK, last_ck
  summary.model_dir = run_dir .. "/model"
  summary.train_wall_s = elapsed_before + core.clock() - wall0
  -- the final number: the test split, scored by the model selected on dev (the last one without dev)
  if recipe.data.test then
    local chosen = Ck.read_file(run_dir .. "/best/config.json") and run_dir .. "/best" or summary.model_dir
    local mx = T.evaluate(chosen, recipe.data.test, recipe.task.kind, recipe)
    summary.test = mx
    write_file(run_dir .. "/metrics.jsonl", cjson.encode({ step = step, epoch = epoch, split = "test",
      model = chosen:sub(#run_dir + 2), metrics = json_safe(mx) }) .. "\n", "ab")
    local ok, Mx = pcall(require, "pft.metrics")
    say(("test (%s model): %s"):format(chosen:sub(#run_dir + 2), ok and Mx.format(mx) or ""))
  end
  summary.wall_s = elapsed_before + core.clock() - wall0
  say(("done: %d steps in %s (training %s)%s; %d trainable parameters; model in %s%s"):format(step,
    Progress.fmt_time(summary.wall_s), Progress.fmt_time(summary.train_wall_s),
    best.value and (", best %s %.4f at step %d"):format(best.metric, best.value, best.step) or "",
    trainable_numel, summary.model_dir, best.value and (", best model in " .. run_dir .. "/best") or ""))
  write_status(run_dir, status)
  return summary
end

-- --- using a trained model -------------------------------------------------------------------------

-- A run directory's recipe.lua (the resolved recipe), run in the recipe sandbox like any recipe; nil
-- when src has none (a model directory).
local function read_recipe(run_dir)
  local path = run_dir .. "/recipe.lua"
  local src = Ck.read_file(path)
  if not src then return nil end
  local R = require "pft.recipe"
  for l in src:gmatch("[^\n]+") do
    if l:sub(1, #R.UNRESUMABLE_MARK) == R.UNRESUMABLE_MARK then
      io.stderr:write("pft: warning: ", path, ": ", l:sub(#R.UNRESUMABLE_MARK + 1), " (it is not applied here)\n")
    end
  end
  local r = R.run_source(src, path)
  if type(r) ~= "table" then error(("%s: a recipe must return a table"):format(path), 0) end
  return r
end

-- A model from a run dir (its best export, else the final one), an exported directory, or a model.
local function open_model(src)
  if type(src) == "table" and src.bert then return src, nil, false end
  local Model = require "pft.model"
  if type(src) ~= "string" then error("train: expected a run directory, a model directory or a model", 3) end
  local recipe = read_recipe(src)
  if recipe then
    for _, sub in ipairs({ "best", "model" }) do
      if Ck.read_file(src .. "/" .. sub .. "/config.json") then return Model.load(src .. "/" .. sub), recipe, true end
    end
    error(("train: run %s has no exported model (best/ or model/)"):format(src), 3)
  end
  return Model.load(src), nil, true
end

-- Frees a model this module opened, now rather than at some later collection.
local function close_model(m, owned)
  if owned then m.bert:free() end
end

-- T.evaluate(run_dir_or_model, split_spec[, task_kind]) -> metrics (loss included)
function T.evaluate(src, split, kind, run_recipe)
  local D = require "pft.data"
  local m, recipe, owned = open_model(src)
  recipe = run_recipe or recipe or { task = { kind = kind or (m.bert:config().num_labels == 1 and "regression" or "classification") },
    data = { eval_batch_size = 64, on_error = "fail" }, model = { max_length = 128 }, train = { seed = 42 } }
  local labels = recipe.task.kind ~= "regression" and m.labels or nil
  local ds = D.read(split, { task = recipe.task.kind, labels = labels, on_error = recipe.data.on_error,
    preprocess = recipe.data.preprocess })
  local loader = make_loader(D, ds, m, recipe, true)
  m.bert:train(false)
  local loss, preds, gold = predict_loader(m, loader, recipe.task.kind == "regression", false)
  close_model(m, owned)
  return compute_metrics(recipe, loss, preds, gold, labels)
end

-- T.predict(run_dir_or_model, input_path[, out_path]): one JSON line per input row, to out_path or
-- standard output: {text, label, probs = {label = p}} (regression: {text, score}). A .tsv, .csv or
-- .jsonl input is read by pft.data (its "sentence" column; a label column is ignored); any other file
-- holds one text per line.
function T.predict(src, input_path, out_path)
  local m, recipe, owned = open_model(src)
  local max_length = recipe and recipe.model.max_length or 128
  local texts = {}
  if input_path:match("%.tsv$") or input_path:match("%.csv$") or input_path:match("%.jsonl$") then
    local spec = { path = input_path, label = false }
    if recipe and recipe.data and recipe.data.train then spec.text = recipe.data.train.text end
    texts = require("pft.data").read(spec, {}).texts
  else
    local f = io.open(input_path, "rb")
    if not f then error("train: cannot open " .. input_path, 2) end
    for line in f:lines() do
      line = line:gsub("\r$", "")
      if line ~= "" then texts[#texts + 1] = line end
    end
    f:close()
  end
  local pre = recipe and recipe.data and recipe.data.preprocess
  local inputs = texts
  if pre then -- the model sees what it was trained on; the output shows the input as given
    inputs = {}
    for i, t in ipairs(texts) do inputs[i] = pre(t) end
  end
  local out = out_path and io.open(out_path, "wb") or io.stdout
  if not out then error("train: cannot write " .. out_path, 2) end
  local regression = m.bert:config().num_labels == 1
  m.bert:train(false)
  local bs = 64
  core.no_grad(function()
    for i = 1, #texts, bs do
      local chunk, model_in = {}, {}
      for k = i, math.min(#texts, i + bs - 1) do chunk[#chunk + 1], model_in[#model_in + 1] = texts[k], inputs[k] end
      local batch = m.tokenizer:encode_batch(model_in, nil, { max_length = max_length })
      local _, _, logits = m.bert:forward(batch)
      if regression then
        local flat = logits:flat()
        for k, t in ipairs(chunk) do out:write(cjson.encode({ text = t, score = flat[k] }), "\n") end
      else
        local p = core.softmax(logits)
        for k, row in ipairs(p:totable()) do
          local probs, best, bi = {}, -1, 1
          for j, v in ipairs(row) do
            probs[m.labels[j]] = v
            if v > best then best, bi = v, j end
          end
          out:write(cjson.encode({ text = chunk[k], label = m.labels[bi], probs = probs }), "\n")
        end
        p:free()
      end
      logits:free()
      batch:free()
    end
  end)
  if out ~= io.stdout then out:close() end
  close_model(m, owned)
  return #texts
end

-- T.export(run_dir, dest[, which = "best" | "final"]): the best model when the run evaluated, else the final.
function T.export(run_dir, dest, which)
  local Model = require "pft.model"
  local order = which == "final" and { "model" } or which == "best" and { "best" } or { "best", "model" }
  for _, sub in ipairs(order) do
    local dir = run_dir .. "/" .. sub
    if Ck.read_file(dir .. "/config.json") then
      local m = Model.load(dir)
      m:export(dest, { labels = m.labels })
      m.bert:free()
      return dest
    end
  end
  error(("train: %s has no %s model to export"):format(run_dir, which or "best or final"), 2)
end

return T
