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
local A = require "pft.actcache"
local fs = require "pft.fs"
local Ck = require "pft.checkpoint"
local Lora = require "pft.lora"
local D = require "pft.data"
local Model = require "pft.model"
local Mx = require "pft.metrics"
local Plan = require "pft.plan"
local Preflight = require "pft.preflight"
local Progress = require "pft.progress"
local R = require "pft.recipe"
local Schema = require "pft.recipe_schema"
local Run = require "pft.rundir"
local S = require "pft.schedule"

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

T.model_info = S.model_info -- the one view of a model (pft.schedule)

local function no_decay_match(name, patterns)
  for _, pat in ipairs(patterns or {}) do
    if name:find(pat, 1, true) then return true end
  end
  return false
end

-- "embeddings layer[1] head" from a trainable set; a group only partly trainable shows k/n parameters.
function T.format_trainable(trainable, info)
  local labels = S.group_labels(trainable, info)
  return #labels > 0 and table.concat(labels, " ") or "(none)"
end

-- The optimizer's groups: one per (schedule group x decay / no-decay), in parameter order. Parameters
-- whose name contains one of optim.no_decay (default "bias", "LayerNorm") get weight_decay 0.
-- -> array of {key = "layer[3]/no_decay", group = "layer[3]" (the schedule group, whose multiplier and
-- warm-up the optimizer group's rate follows), params = {...}, names = {...}, lr, weight_decay}
function T.param_groups(params, info, oc)
  local gindex, groups = {}, {}
  for _, p in ipairs(params) do
    local n = p:name()
    local nd = no_decay_match(n, oc.no_decay)
    local sg = info.group_of[n]
    local key = sg .. (nd and "/no_decay" or "")
    if not gindex[key] then
      groups[#groups + 1] = { params = {}, names = {}, lr = oc.lr, weight_decay = nd and 0 or oc.weight_decay, key = key,
        group = sg }
      gindex[key] = #groups
    end
    local g = groups[gindex[key]]
    g.params[#g.params + 1], g.names[#g.names + 1] = p, n
  end
  return groups
end

-- --- small helpers ---------------------------------------------------------------------------------

local function is_regression(recipe) return recipe.task.kind == "regression" end

local head_kind = Plan.head_kind

local function higher_is_better(metric)
  return not (metric == "loss" or metric == "mse")
end

local function finite(x) return type(x) == "number" and x == x and x ~= math.huge and x ~= -math.huge end

-- metrics for metrics.jsonl: a non-finite value (a Pearson of constant predictions) as null
local function json_safe(v)
  if type(v) == "number" then return finite(v) and v or cjson.null end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = json_safe(x) end
  return out
end

local function append(path, text) fs.write_file(path, text, "ab", "train") end

T.write_status = Run.write_status

-- --- evaluation ------------------------------------------------------------------------------------

-- Forward every batch of the loader in eval mode without a tape. Returns loss (mean per example),
-- predictions, gold labels and the probabilities per row (classification).
-- Token classification over a loader: per row, the predicted tag id of every word (-1 for a word cut
-- off by max_length) and the gold tags.
local function predict_words(bert, loader, item, logits, preds, gold)
  local ds = loader.ds
  local words = loader.enc:word_argmax(item.rows, logits, ds.labels or ds.words)
  for k, r in ipairs(item.rows) do
    preds[#preds + 1] = words[k]
    gold[#gold + 1] = ds.labels and ds.labels[r] or nil
  end
end

-- forward(item) -> hidden, pooled, logits: the trainer's (which may start from the activation cache);
-- the whole model by default.
local function predict_loader(m, loader, regression, want_probs, forward)
  local bert = m.bert or m
  local tokens = loader.ds.words ~= nil
  local sum, n, preds, gold, probs = 0, 0, {}, {}, {}
  forward = forward or function(item) return bert:forward(item.batch) end
  core.no_grad(function()
    for item in loader:epoch(0, 1) do
      local _, _, logits = forward(item)
      local B = #item.rows
      if item.labels and item.labels[1] ~= nil then
        local loss = bert:loss(logits, item.labels)
        sum, n = sum + loss:item() * B, n + B
        loss:free()
      end
      if tokens then
        predict_words(bert, loader, item, logits, preds, gold)
      elseif regression then
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

-- Tag ids -> tag names for seqeval-style scoring; a word without a prediction (cut off) is "O", so its
-- entities count as missed. Returns the sequences and how many words were cut off.
local function tag_names(seqs, names)
  local out, cut = {}, 0
  for i, s in ipairs(seqs) do
    local t = {}
    for j, id in ipairs(s) do
      if id < 0 then cut = cut + 1 end
      t[j] = id >= 0 and names[id + 1] or "O"
    end
    out[i] = t
  end
  return out, cut
end

local function compute_metrics(recipe, loss, preds, gold, label_names)
  local m
  if is_regression(recipe) then m = Mx.regression(preds, gold)
  elseif recipe.task.kind == "token_classification" then
    local p, cut = tag_names(preds, label_names)
    m = Mx.token_classification(p, (tag_names(gold, label_names)))
    m.words_cut = cut -- words beyond max_length: predicted O, their entities missed
  else m = Mx.classification(preds, gold, label_names) end
  m.loss = loss
  return m
end

-- --- the run's inputs: data, model, plan ---------------------------------------------------------------

local function read_split(spec, recipe, labels)
  return D.read(spec, { task = recipe.task.kind, labels = labels, on_error = recipe.data.on_error,
    preprocess = recipe.data.preprocess })
end

local function make_loader(ds, m, recipe, eval)
  return D.loader(ds, m.tokenizer, { batch_size = eval and recipe.data.eval_batch_size or recipe.data.batch_size,
    shuffle = not eval and recipe.data.shuffle, bucket = recipe.data.bucket, seed = recipe.train.seed,
    max_length = recipe.model.max_length, label_all_tokens = recipe.task.label_all_tokens })
end

-- The trainer and the evaluation read the logits only: with a sequence head the last layer then runs
-- past its attention only the [CLS] rows the head reads (nn.h, hidden_states). Returns m.
local function logits_only(m)
  m.bert:set_hidden_states(false)
  return m
end

-- LoRA adapters from the recipe: a PEFT adapter directory (model.adapter) or fresh ones (adapters.lora).
local function add_adapters(m, recipe)
  local spec = recipe.adapters and recipe.adapters.lora
  if recipe.model.adapter and spec then
    error("recipe: model.adapter and adapters.lora both add adapters; give one (model.adapter continues an existing adapter)", 0)
  end
  if recipe.model.adapter then Lora.load_adapter(m, recipe.model.adapter) end
  if spec then Lora.apply(m, spec) end
end

-- T.prepare(recipe) -> { recipe, train_ds, dev_ds, labels, model, info, loader, dev_loader, plan }: what
-- `pft validate` prints and `pft train` runs, computed by this one function for both. Seeds the RNG
-- first (the head's initialisation draws from it).
function T.prepare(recipe)
  Preflight.check(recipe) -- fail before training, not after (docs/recipes.md "Checked before training")
  core.seed(recipe.train.seed)
  if recipe.train.threads then core.set_threads(recipe.train.threads) end
  core.set_precision(Schema.precision_of(recipe))
  local train_ds = read_split(recipe.data.train, recipe, recipe.task.labels)
  local labels = not is_regression(recipe) and (recipe.task.labels or train_ds.label_names) or nil
  local dev_ds = recipe.data.dev and read_split(recipe.data.dev, recipe, labels) or nil
  local m = Model.load(recipe.model.name, { head = head_kind(recipe), num_labels = labels and #labels or 1, labels = labels,
    labels_from = is_regression(recipe) and "task.kind = \"regression\"" or recipe.task.labels and "task.labels" or
      (#labels <= 8 and ("the training data's labels (%s)"):format(table.concat(labels, ", ")) or "the training data's labels") })
  add_adapters(m, recipe)
  logits_only(m)
  local info = S.model_info(m.bert)
  local loader = make_loader(train_ds, m, recipe, false)
  local dev_loader = dev_ds and make_loader(dev_ds, m, recipe, true) or nil
  local splits = { train = { n = train_ds.n, ntok = loader.enc:tokens() } }
  if dev_loader then splits.dev = { n = dev_ds.n, ntok = dev_loader.enc:tokens() } end
  return { recipe = recipe, train_ds = train_ds, dev_ds = dev_ds, labels = labels, model = m, info = info,
    loader = loader, dev_loader = dev_loader,
    plan = Plan.new(recipe, info, train_ds.n, { splits = splits, width = m.bert:config().hidden_size,
      lora = m.bert:config().lora }) }
end

-- The optimizer: one group per (schedule group x decay/no-decay), every parameter in one from the start.
local function make_optimizer(oc, groups)
  local copt = {}
  for i, g in ipairs(groups) do copt[i] = { params = g.params, lr = g.lr, weight_decay = g.weight_decay } end
  if oc.name == "adamw" then return core.adamw(copt, { beta1 = oc.betas[1], beta2 = oc.betas[2], eps = oc.eps }) end
  if oc.name == "sgd" then return core.sgd(copt, { momentum = oc.momentum }) end
  error(("train: unknown optim.name '%s' (adamw, sgd)"):format(tostring(oc.name)), 0)
end

-- --- the trainer: one table for the run's state, and its steps in the order they happen ------------------

local Trainer = {}
Trainer.__index = Trainer

function Trainer.new(prep, run_dir, opts)
  local recipe, m = prep.recipe, prep.model
  local self = setmetatable({ recipe = recipe, tr = recipe.train, out_cfg = recipe.output, opts = opts,
    run_dir = run_dir, model = m, bert = m.bert, info = prep.info, plan = prep.plan, sched = prep.plan.sched,
    labels = prep.labels, train_ds = prep.train_ds, wall0 = core.clock(), status = "done",
    step = 0, epoch = 0, history = {}, bad_evals = 0, prev_trainable = {}, prev_log = nil, ever = {},
    elapsed_before = 0, trainable_numel = 0, loss_sum = 0, loss_n = 0, tokens = 0, step_seconds = 0 }, Trainer)
  local sizes = prep.plan.sizes
  self.total_steps, self.steps_per_epoch, self.epochs = sizes.total_steps, sizes.steps_per_epoch, sizes.epochs
  self.best = { metric = self.tr.best_metric }
  self.loader, self.dev_loader = prep.loader, prep.dev_loader
  self.num_batches = self.loader:num_batches()
  self.params = self.bert:params()
  self.by_name = {}
  for _, p in ipairs(self.params) do self.by_name[p:name()] = p end
  self.groups = T.param_groups(self.params, self.info, recipe.optim)
  self.opt = make_optimizer(recipe.optim, self.groups)
  local function env(name) return tonumber(os.getenv(name) or "") end
  self.interrupt_at = opts.interrupt_at_step or env("PFT_TEST_INTERRUPT_AT_STEP")
  self.nan_at = opts.nan_at_step or env("PFT_TEST_NAN_AT_STEP")
  self.nan_eval_at = opts.nan_eval_at_step or env("PFT_TEST_NAN_EVAL_AT_STEP")
  self.progress = Progress.new({ total = self.total_steps, log_every = self.tr.log_every, quiet = opts.quiet,
    out = opts.out or io.stdout })
  return self
end

function Trainer:say(s) self.progress:line(s) end

-- A new run's files: the recipe that reproduces it, the plan `pft validate` prints, empty logs.
function Trainer:write_run_files()
  local d = self.run_dir
  fs.write_file(d .. "/recipe.lua", R.dump(self.recipe), "wb", "train")
  fs.write_file(d .. "/plan.txt", table.concat(Plan.lines(self.plan), "\n") .. "\n", "wb", "train")
  fs.write_file(d .. "/metrics.jsonl", "", "wb", "train")
  fs.write_file(d .. "/trainable.log", "", "wb", "train")
end

-- Position, weights, optimizer state and bookkeeping from a checkpoint; what was written after it (an
-- evaluation, a trainable.log line) is cut off, to be written again.
function Trainer:restore(ck)
  local st = ck.state
  for name, t in pairs(ck.weights) do
    local p = self.by_name[name]
    if not p then error(("train: checkpoint %s has '%s', which the model lacks"):format(ck.path, name), 0) end
    p:copy_(t)
    self.ever[name] = true
  end
  self.opt:load_state(ck.optim)
  core.set_rng_state(st.rng[1], st.rng[2])
  self.step, self.epoch, self.history = st.step, st.epoch, st.history or {}
  self.best.value, self.best.step = tonumber(st.best_value), st.best_step
  self.bad_evals = st.bad_evals or 0
  self.loss_sum, self.loss_n = tonumber(st.loss_sum) or 0, st.loss_n or 0
  for _, n in ipairs(st.trainable or {}) do self.prev_trainable[n] = true end
  self.prev_log = st.trainable_log
  self.elapsed_before = st.elapsed or 0
  if st.metrics_bytes then Run.truncate_to(self.run_dir .. "/metrics.jsonl", st.metrics_bytes) end
  if st.trainable_log_bytes then Run.truncate_to(self.run_dir .. "/trainable.log", st.trainable_log_bytes) end
  for _, t in pairs(ck.weights) do t:free() end
  for _, s in pairs(ck.optim) do s.m:free(); if s.v then s.v:free() end end
  self.last_ck = ck.path
end

function Trainer:checkpoint_state()
  local seed, counter = core.rng_state()
  local tl = {}
  for n in pairs(self.prev_trainable) do tl[#tl + 1] = n end
  table.sort(tl)
  return { step = self.step, epoch = self.epoch, rng = { seed, counter }, history = self.history,
    best_value = self.best.value and ("%.17g"):format(self.best.value), best_step = self.best.step,
    bad_evals = self.bad_evals, trainable = tl, trainable_log = self.prev_log,
    loss_sum = ("%.17g"):format(self.loss_sum), loss_n = self.loss_n, -- the training-curve window so far
    elapsed = self.elapsed_before + core.clock() - self.wall0, total_steps = self.total_steps,
    metrics_bytes = fs.file_size(self.run_dir .. "/metrics.jsonl") or 0,
    trainable_log_bytes = fs.file_size(self.run_dir .. "/trainable.log") or 0 }
end

-- The parameters that were ever trainable, and the head (initialised here, not by the checkpoint).
function Trainer:save_checkpoint()
  local weights = {}
  for _, p in ipairs(self.params) do
    local n = p:name()
    if self.ever[n] or self.info.group_of[n] == "head" then weights[n] = p end
  end
  local ostate = self.opt:state()
  self.last_ck = Ck.save(self.run_dir, self.step, { weights = weights, optim = ostate, state = self:checkpoint_state() },
    self.out_cfg.keep, self.best.step)
  for _, s in pairs(ostate) do s.m:free(); if s.v then s.v:free() end end
  return self.last_ck
end

-- Eval mode for what does not train: a layer runs dropout only while one of its parameters trains.
function Trainer:apply_modes(trainable)
  local layer_on, emb_on, head_on = {}, false, false
  for n in pairs(trainable) do
    local g = self.info.group_of[n]
    local i = g:match("^layer%[(%d+)%]$")
    if i then layer_on[tonumber(i)] = true
    elseif g == "embeddings" then emb_on = true
    else head_on = true end -- pooler and classifier
  end
  local bert = self.bert
  bert:train(true)
  for i = 0, self.info.num_layers - 1 do bert:set_layer_training(i, layer_on[i] == true) end
  bert:set_embeddings_training(emb_on)
  bert:set_head_training(head_on)
end

-- This step's trainable set (requires_grad, dropout modes, trainable.log) and every optimizer group's
-- rate: base rate x the schedule's multiplier and warm-up for the group's schedule group.
function Trainer:apply_schedule()
  local at = self.sched:at(self.step, self.epoch, self.history)
  local tr_set = at.trainable
  for _, p in ipairs(self.params) do
    local n = p:name()
    local on = tr_set[n] == true
    if self.prev_trainable[n] and not on then p:zero_grad() end -- frozen again: no stale gradient
    p:requires_grad(on)
    if on then self.ever[n] = true end
  end
  local line = T.format_trainable(tr_set, self.info)
  if line ~= self.prev_log then
    append(self.run_dir .. "/trainable.log", ("step %d: %s\n"):format(self.step, line))
    self.prev_log = line
  end
  self.prev_trainable = tr_set
  self.boundary = A.boundary_of(self.ever, self.info, self.plan.cache.head) -- nothing below it ever trained
  self:apply_modes(tr_set)
  local base = self.recipe.optim.lr * T.lr_factor(self.recipe.lr_schedule, self.step, self.total_steps)
  for gi, g in ipairs(self.groups) do
    self.opt:set_lr(gi, base * (at.lr_mult[g.group] or 1) * (at.warmup[g.group] or 1))
  end
  self.base_lr = base
end

-- The activation cache for the boundaries the plan chose, its files opened or computed (after a
-- restore: the key hashes the weights as they are now).
function Trainer:open_cache()
  local c = self.plan.cache
  if not c.enabled or #c.chosen == 0 then return end
  self.cache = A.new(self.model, { train = self.loader, dev = self.dev_loader },
    { head = c.head, dir = c.dir, say = function(s) self:say(s) end })
  self.cache_seconds = self.cache:ensure(c.chosen)
end

-- forward(split, item) -> hidden, pooled, logits: from the activation cache at this step's boundary
-- when it holds it, else the whole model.
function Trainer:forward(split, item)
  if self.cache then
    local h, p, lg = self.cache:forward(split, self.boundary, item)
    if lg then return h, p, lg end
  end
  return self.bert:forward(item.batch)
end

-- Forward and backward over this step's micro-batches (the last step of an epoch may have fewer);
-- returns their mean loss and token count. A non-finite loss stops the run (the NaN policy).
function Trainer:micro_steps(iter)
  local accum = self.tr.grad_accum
  local in_step = math.min(accum, self.num_batches - (self.step - self.epoch * self.steps_per_epoch) * accum)
  local loss_sum, tokens = 0, 0
  for _ = 1, in_step do
    local item = iter()
    if not item then error("train: the data loader ended early (epoch " .. self.epoch .. ")", 0) end
    local _, _, logits = self:forward("train", item)
    local loss = self.bert:loss(logits, item.labels)
    local lv = loss:item()
    if self.nan_at and self.step + 1 == self.nan_at then lv = 0 / 0 end
    if not finite(lv) then error({ nan = lv ~= lv and "nan" or "inf" }) end
    loss_sum, tokens = loss_sum + lv, tokens + item.batch:tokens()
    local scaled = in_step > 1 and core.scale(loss, 1 / in_step) or loss
    scaled:backward()
    if scaled ~= loss then scaled:free() end
    loss:free()
    logits:free()
    item.batch:free()
  end
  return loss_sum / in_step, tokens
end

-- Clip, step the optimizer, count.
function Trainer:optimizer_step()
  local tl = {}
  for _, p in ipairs(self.params) do if p:requires_grad() then tl[#tl + 1] = p end end
  local scale = 1 -- clipping's factor, applied by the step as it reads the gradients (no pass that scales them)
  if self.tr.grad_clip > 0 then
    local norm, coef = core.grad_norm(tl, self.tr.grad_clip)
    if norm ~= norm or norm == math.huge then error({ nan = "non-finite gradient" }) end
    scale = coef
  end
  self.opt:step(scale)
  self.step = self.step + 1
  self.trainable_numel = 0
  for _, p in ipairs(tl) do self.trainable_numel = self.trainable_numel + p:numel() end
end

-- The dev split: metrics.jsonl, the best model (exported), the early-stopping count.
function Trainer:evaluate()
  if not self.dev_loader then return nil end
  local e0 = core.clock()
  self.bert:train(false)
  local loss, preds, gold = predict_loader(self.model, self.dev_loader, is_regression(self.recipe), false,
    function(item) return self:forward("dev", item) end)
  if self.nan_eval_at and self.step == self.nan_eval_at then loss = 0 / 0 end
  if loss ~= nil and not finite(loss) then error({ nan = loss ~= loss and "nan" or "inf", eval = true }) end
  local mx = compute_metrics(self.recipe, loss, preds, gold, self.labels)
  self.history[#self.history + 1] = { step = self.step, epoch = self.epoch, metrics = mx } -- all: best, plateaus
  local shown = self.recipe.eval.metrics
  append(self.run_dir .. "/metrics.jsonl", cjson.encode({ step = self.step, epoch = self.epoch, split = "dev",
    metrics = json_safe(Mx.only(mx, shown)) }) .. "\n")
  self:say(("eval step %d (epoch %d): %s"):format(self.step, self.epoch + 1, Mx.format(mx, shown)))
  local best, v = self.best, mx[self.best.metric]
  if v == nil then error(("train: best_metric '%s' is not among the evaluation metrics"):format(best.metric), 0) end
  local up = higher_is_better(best.metric)
  if best.value == nil or (up and v > best.value) or (not up and v < best.value) then
    best.value, best.step, self.bad_evals = v, self.step, 0
    self:export(self.run_dir .. "/best")
  else
    self.bad_evals = self.bad_evals + 1
  end
  if self.progress.t0 then self.progress.t0 = self.progress.t0 + (core.clock() - e0) end -- tok/s counts training only
  return mx
end

-- After an optimizer step: evaluate and checkpoint when due; returns the status that ends the run
-- (early_stopped, interrupted) or nil to go on.
function Trainer:after_step(epoch_end_step)
  local every, step = self.tr.eval_every, self.step
  local evaluated = false
  if (type(every) == "number" and step % every == 0) or (step == epoch_end_step and every == "epoch") then
    self:evaluate()
    evaluated = true
  end
  if evaluated and self.out_cfg.checkpoints ~= false then self:save_checkpoint() end
  local es = self.tr.early_stopping
  if evaluated and es and self.bad_evals >= es.patience then return "early_stopped" end
  if core.interrupted() or (self.interrupt_at and step == self.interrupt_at) then return "interrupted" end
end

-- metrics.jsonl's training curve: every train.log_every steps (and at the last), the mean loss of the
-- steps since the previous record and the base learning rate of the step just taken.
function Trainer:log_train_loss(loss)
  if loss == loss then self.loss_sum, self.loss_n = self.loss_sum + loss, self.loss_n + 1 end
  if self.step % self.tr.log_every == 0 or self.step == self.total_steps then self:flush_train_loss() end
end

function Trainer:flush_train_loss()
  if self.loss_n == 0 then return end
  append(self.run_dir .. "/metrics.jsonl", cjson.encode({ step = self.step, epoch = self.epoch, split = "train",
    loss = self.loss_sum / self.loss_n, lr = self.base_lr, steps = self.loss_n }) .. "\n")
  self.loss_sum, self.loss_n = 0, 0
end

-- The loop: epochs of steps, from wherever the run stands (0, or a checkpoint's position).
function Trainer:train_loop()
  self:open_cache()
  while self.step < self.total_steps do
    local accum, spe = self.tr.grad_accum, self.steps_per_epoch
    local iter = self.loader:epoch(self.epoch, (self.step - self.epoch * spe) * accum + 1)
    local epoch_end_step = math.min(self.total_steps, (self.epoch + 1) * spe)
    while self.step < epoch_end_step do
      local t0 = core.clock()
      self:apply_schedule()
      self.opt:zero_grad()
      local loss, tokens = self:micro_steps(iter)
      self:optimizer_step()
      self.step_seconds = self.step_seconds + core.clock() - t0
      if self.opts.on_step then self.opts.on_step(self.step, { model = self.model, optimizer = self.opt, groups = self.groups }) end
      self.progress:update({ step = self.step, epoch = self.epoch, loss = loss, lr = self.base_lr, tokens = tokens })
      self.tokens = self.tokens + tokens
      self:log_train_loss(loss)
      local stop = self:after_step(epoch_end_step)
      if stop then self.status = stop; return end
    end
    self.epoch = self.epoch + 1
  end
end

-- A model directory transformers loads (LoRA folded into the weights), and with adapters also the
-- PEFT adapter files and pft_adapter.json: which base groups trained fully besides the adapters (what
-- an adapter export cannot carry).
function Trainer:export(dir)
  self.model:export(dir, { labels = self.labels })
  if not Lora.has(self.bert) then return end
  Lora.save_adapter(self.model, dir, { task = self.recipe.task.kind, base = self.recipe.model.name })
  local thawed = {}
  for n in pairs(self.ever) do
    local g = self.info.group_of[n]
    if not n:find(".lora_", 1, true) and g ~= "head" then thawed[g] = true end
  end
  local groups = {}
  for _, g in ipairs(self.info.groups) do if thawed[g] then groups[#groups + 1] = g end end
  fs.write_atomic(dir .. "/pft_adapter.json", cjson.encode({ thawed = setmetatable(groups, cjson.array_mt) }) .. "\n", "train")
end

-- The model's memory goes now, not whenever the collector runs (compiled traces may anchor closures).
function Trainer:release()
  if self.cache then self.cache:free() end
  self.opt:free()
  for _, p in ipairs(self.params) do p:free() end
  self.bert:free()
end

function Trainer:summary()
  return { run_dir = self.run_dir, steps = self.step, best = self.best, trainable_numel = self.trainable_numel,
    labels = self.labels }
end

-- A NaN stop (loss, dev loss or gradient norm): the NaN policy's message and status; the checkpoints stay.
function Trainer:stopped_by_nan(err)
  local ck = self.last_ck or "none"
  local msg = ("loss is %s at step %d; stopped, last good checkpoint: %s"):format(err.nan, self.step + 1, ck)
  if err.eval then
    msg = ("dev loss is %s at step %d; stopped, last good checkpoint: %s"):format(err.nan, self.step, ck)
  elseif err.nan == "non-finite gradient" then
    msg = ("gradient norm is not finite at step %d; stopped, last good checkpoint: %s"):format(self.step + 1, ck)
  end
  io.stderr:write("pft: ", msg, "\n")
  local s = self:summary()
  s.status, s.exit_code, s.message, s.checkpoint = "nan", T.EXIT_FAILED, msg, self.last_ck
  Run.write_status(self.run_dir, "nan: " .. msg)
  return s
end

function Trainer:stopped_by_interrupt()
  local path = self:save_checkpoint()
  self:say(("interrupted at step %d: checkpoint %s; continue with --resume %s"):format(self.step, path, self.run_dir))
  local s = self:summary()
  s.status, s.exit_code, s.checkpoint = "interrupted", T.EXIT_INTERRUPTED, path
  Run.write_status(self.run_dir, "interrupted")
  return s
end

-- The test split, scored by the model selected on dev (the last one without dev).
function Trainer:test(summary)
  local d = self.run_dir
  local chosen = fs.exists(d .. "/best/config.json") and d .. "/best" or summary.model_dir
  local b = self.cache and self.plan.cache.is_chosen[self.boundary] and self.boundary or nil
  local mx = T.evaluate(chosen, self.recipe.data.test, self.recipe.task.kind, self.recipe, b)
  summary.test = mx
  local shown = self.recipe.eval.metrics
  append(d .. "/metrics.jsonl", cjson.encode({ step = self.step, epoch = self.epoch, split = "test",
    model = chosen:sub(#d + 2), metrics = json_safe(Mx.only(mx, shown)) }) .. "\n")
  self:say(("test (%s model): %s"):format(chosen:sub(#d + 2), Mx.format(mx, shown)))
end

-- A run that ended normally (done or early_stopped): last checkpoint, the final export, the test split.
function Trainer:finish()
  if self.status == "done" then self.epoch = self.epochs end -- as after the last epoch, also when resumed at the end
  self:flush_train_loss() -- an early stop ends the curve where training ended
  if self.out_cfg.checkpoints ~= false and (not self.last_ck or not self.last_ck:match("step%-" .. self.step .. "$")) then
    self:save_checkpoint()
  end
  self:export(self.run_dir .. "/model")
  self:release()
  local s = self:summary()
  s.status, s.exit_code, s.checkpoint, s.model_dir = self.status, T.EXIT_OK, self.last_ck, self.run_dir .. "/model"
  s.train_wall_s = self.elapsed_before + core.clock() - self.wall0
  if self.recipe.data.test then self:test(s) end
  s.wall_s = self.elapsed_before + core.clock() - self.wall0
  local best = self.best
  local es = self.tr.early_stopping
  local ended = self.status == "early_stopped" and
    ("stopped early at step %d of %d (dev %s did not improve for %d evaluation%s)"):format(self.step,
      self.total_steps, best.metric, es.patience, es.patience == 1 and "" or "s") or
    ("done: %d steps"):format(self.step)
  self:say(("%s in %s (training %s)%s; %d trainable parameters; model in %s%s"):format(ended,
    Progress.fmt_time(s.wall_s), Progress.fmt_time(s.train_wall_s),
    best.value and (", best %s %.4f at step %d"):format(best.metric, best.value, best.step) or "",
    self.trainable_numel, s.model_dir, best.value and (", best model in " .. self.run_dir .. "/best") or ""))
  self:write_summary(s)
  Run.write_status(self.run_dir, self.status)
  return s
end

-- RUN_DIR/summary.json (atomic): how the run ended and its numbers, what `pft compare` and `pft sweep` read.
-- tokens and tokens_per_s count the training tokens of this process (a resumed run: since the resume),
-- tokens_per_s over the time of the training steps alone (not evaluations, checkpoints or the cache pass).
function Trainer:write_summary(s)
  local t = s.train_wall_s or 0
  local best = self.best.value and { metric = self.best.metric, value = self.best.value, step = self.best.step } or nil
  fs.write_atomic(self.run_dir .. "/summary.json", cjson.encode({ status = s.status, steps = self.step,
    total_steps = self.total_steps, best = best, test = s.test and json_safe(s.test) or nil,
    trainable_params = self.trainable_numel, total_params = self.plan.total_params, wall_s = s.wall_s,
    train_wall_s = t, tokens = self.tokens, tokens_per_s = self.step_seconds > 0 and self.tokens / self.step_seconds or nil,
    optimizer_bytes = self.sched:optimizer_bytes(self.trainable_numel), cache = self:cache_summary() }) .. "\n", "train")
end

-- summary.json's cache record: the boundaries served and the seconds spent computing them (0: all read).
function Trainer:cache_summary()
  local c = self.plan.cache
  if not self.cache then return { enabled = c.enabled, boundaries = {} } end
  local labels = {}
  for _, b in ipairs(c.chosen) do labels[#labels + 1] = A.label(b, self.info, c.head) end
  return { enabled = true, boundaries = labels, compute_s = self.cache_seconds or 0, batches_served = self.cache.served }
end

-- Runs the loop with Ctrl-C watched, then ends the run the way it stopped.
function Trainer:run(resume_ck)
  if resume_ck then self:restore(resume_ck) else self:write_run_files() end
  if not self.opts.quiet then
    self:say(("run %s: %d steps (%d epoch%s of %d), %d examples%s"):format(self.run_dir, self.total_steps, self.epochs,
      self.epochs == 1 and "" or "s", self.steps_per_epoch, self.train_ds.n, resume_ck and (", resumed at step " .. self.step) or ""))
  end
  core.watch_interrupts(true)
  local ok, err = pcall(self.train_loop, self)
  core.watch_interrupts(false)
  self.progress:finish()
  if not ok then
    if type(err) == "table" and err.nan then
      local s = self:stopped_by_nan(err)
      self:release()
      return s
    end
    self:release()
    error(err, 0)
  end
  if self.status == "interrupted" then
    local s = self:stopped_by_interrupt()
    self:release()
    return s
  end
  return self:finish()
end

-- T.run(recipe, opts) -> summary {status = "done"|"early_stopped"|"interrupted"|"nan", exit_code, run_dir,
-- steps, best = {metric, value, step}, wall_s, trainable_numel, model_dir, checkpoint}.
-- opts: run_dir, resume (a run dir to continue), quiet, out (a file for progress; io.stdout), warn(msg),
-- interrupt_at_step (testing: behave as if Ctrl-C arrived after that step; env PFT_TEST_INTERRUPT_AT_STEP),
-- nan_at_step (testing: the loss of that step is NaN; env PFT_TEST_NAN_AT_STEP), nan_eval_at_step (the
-- dev loss; PFT_TEST_NAN_EVAL_AT_STEP), on_step (testing: called as on_step(steps_done, {model, optimizer,
-- groups}) after each optimizer step).
function T.run(recipe, opts)
  opts = opts or {}
  local warn = opts.warn or function(msg) io.stderr:write("pft: ", msg, "\n") end
  Preflight.check(recipe)
  local run_dir, resume_ck = Run.open(recipe, { run_dir = opts.run_dir, resume = opts.resume, warn = warn })
  Run.write_status(run_dir, "running")
  local ok, res = pcall(function()
    local prep = T.prepare(recipe)
    return Trainer.new(prep, run_dir, opts):run(resume_ck)
  end)
  if ok then return res end
  local msg = type(res) == "table" and (res.msg or tostring(res)) or tostring(res)
  pcall(Run.write_status, run_dir, "failed: " .. msg)
  error(res, 0)
end

-- --- using a trained model -------------------------------------------------------------------------

-- A run directory's recipe.lua (the resolved recipe), run in the recipe sandbox like any recipe; nil
-- when src has none (a model directory).
local function read_recipe(run_dir)
  local path = run_dir .. "/recipe.lua"
  local src = fs.read_file(path)
  if not src then return nil end
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
  if type(src) ~= "string" then error("train: expected a run directory, a model directory or a model", 3) end
  local recipe = read_recipe(src)
  if recipe then
    for _, sub in ipairs({ "best", "model" }) do
      if fs.exists(src .. "/" .. sub .. "/config.json") then return logits_only(Model.load(src .. "/" .. sub)), recipe, true end
    end
    error(("train: run %s has no exported model (best/ or model/)"):format(src), 3)
  end
  return logits_only(Model.load(src)), nil, true
end

-- Frees a model this module opened, now rather than at some later collection.
local function close_model(m, owned)
  if owned then m.bert:free() end
end

-- Evaluation and prediction from a run compute in the run's train.precision (so `pft eval` gives the numbers
-- its training reported); where this processor lacks it, in fp32, said on stderr.
local function use_run_precision(recipe)
  local want = Schema.precision_of(recipe)
  local ok = pcall(core.set_precision, want)
  if not ok then
    core.set_precision("fp32")
    io.stderr:write(("pft: warning: the run trained with train.precision = \"%s\", which this processor lacks; computing in fp32\n"):format(want))
  end
end

-- What evaluating a bare model directory (no run, no recipe) uses: the schema's defaults.
local function default_recipe(m, kind)
  return { task = { kind = kind or (m.bert:config().num_labels == 1 and "regression" or "classification") },
    data = Schema.complete("data", {}), model = Schema.complete("model", {}), train = Schema.complete("train", {}) }
end

-- T.evaluate(run_dir_or_model, split_spec[, task_kind]) -> metrics (loss included), the names the run's
-- eval.metrics asks to report (nil: all)
-- boundary (optional): start from the activation cache there (computed if missing; the key checks the
-- model's own weights below it, so a wrong boundary only misses, it never gives other numbers).
function T.evaluate(src, split, kind, run_recipe, boundary)
  local m, recipe, owned = open_model(src)
  recipe = run_recipe or recipe or default_recipe(m, kind)
  use_run_precision(recipe)
  local labels = recipe.task.kind ~= "regression" and m.labels or nil
  local ds = read_split(split, recipe, labels)
  local loader = make_loader(ds, m, recipe, true)
  m.bert:train(false)
  local cache, forward
  if boundary and recipe.train.cache ~= false then
    cache = A.new(m, { test = loader }, { head = Plan.head_kind(recipe) })
    cache:ensure({ boundary })
    forward = function(item)
      local h, p, lg = cache:forward("test", boundary, item)
      if lg then return h, p, lg end
      return m.bert:forward(item.batch)
    end
  end
  local ok, loss, preds, gold = pcall(predict_loader, m, loader, recipe.task.kind == "regression", false, forward)
  if cache then cache:free() end
  close_model(m, owned)
  if not ok then error(loss, 0) end
  return compute_metrics(recipe, loss, preds, gold, labels), recipe.eval and recipe.eval.metrics
end

-- T.predict(run_dir_or_model, input_path[, out_path]): one JSON line per input row, to out_path or
-- standard output: {text, label, probs = {label = p}} (regression: {text, score}). A .tsv, .csv or
-- .jsonl input is read by pft.data (its "sentence" column; a label column is ignored); any other file
-- holds one text per line.
-- T.predict for a token-classification model: the input's sentences (a .conll, .jsonl, .tsv or .csv
-- file read as the run's data are, else one sentence per line split on whitespace), one JSON line each:
-- {words, tags, tagged = "EU/B-ORG rejects/O ...", entities = {{type, start, end, text}}} (1-based word
-- positions, end inclusive); a word cut off by max_length gets the tag "O".
local function predict_tokens(m, recipe, input_path, out)
  local words = {}
  local fmt = input_path:match("%.(%w+)$")
  if fmt and D.READERS[fmt:lower() == "ndjson" and "jsonl" or fmt:lower()] then
    local spec = { path = input_path, label = false }
    if recipe.data.train and fmt:lower() ~= "conll" then spec.text = recipe.data.train.text end
    words = D.read(spec, { task = "token_classification" }).words
  else
    local f = io.open(input_path, "rb")
    if not f then error("train: cannot open " .. input_path, 0) end
    for line in f:lines() do
      local w = {}
      for x in line:gmatch("%S+") do w[#w + 1] = x end
      if #w > 0 then words[#words + 1] = w end
    end
    f:close()
  end
  local texts = {}
  for i, w in ipairs(words) do texts[i] = table.concat(w, " ") end
  local ds = { n = #words, texts = texts, words = words }
  local loader = D.loader(ds, m.tokenizer, { batch_size = recipe.data.eval_batch_size, max_length = recipe.model.max_length,
    cache = false })
  m.bert:train(false)
  local _, preds = predict_loader(m, loader, false, false)
  local tags = tag_names(preds, m.labels)
  for i, w in ipairs(words) do
    local tagged, ents = {}, {}
    for j, x in ipairs(w) do tagged[j] = x .. "/" .. tags[i][j] end
    for _, e in ipairs(Mx.entities(tags[i])) do
      ents[#ents + 1] = { type = e[1], start = e[2], ["end"] = e[3], text = table.concat(w, " ", e[2], e[3]) }
    end
    for k, e in ipairs(ents) do ents[k] = cjson.encode(e) end -- an empty list must stay a JSON list
    local head = cjson.encode({ words = w, tags = tags[i], tagged = table.concat(tagged, " ") })
    out:write(head:sub(1, -2), ',"entities":[', table.concat(ents, ","), "]}\n")
  end
  return #words
end

function T.predict(src, input_path, out_path)
  local m, recipe, owned = open_model(src)
  recipe = recipe or default_recipe(m)
  use_run_precision(recipe)
  if m.head == "tokcls" then
    local out = out_path and io.open(out_path, "wb") or io.stdout
    if not out then error("train: cannot write " .. out_path, 2) end
    local n = predict_tokens(m, recipe, input_path, out)
    if out ~= io.stdout then out:close() end
    close_model(m, owned)
    return n
  end
  local max_length = recipe.model.max_length
  local texts = {}
  if input_path:match("%.tsv$") or input_path:match("%.csv$") or input_path:match("%.jsonl$") then
    local spec = { path = input_path, label = false }
    if recipe.data.train then spec.text = recipe.data.train.text end
    texts = D.read(spec, {}).texts
  else
    local f = io.open(input_path, "rb")
    if not f then error("train: cannot open " .. input_path, 2) end
    for line in f:lines() do
      line = line:gsub("\r$", "")
      if line ~= "" then texts[#texts + 1] = line end
    end
    f:close()
  end
  local pre = recipe.data.preprocess
  local inputs = texts
  if pre then -- the model sees what it was trained on; the output shows the input as given
    inputs = {}
    for i, t in ipairs(texts) do inputs[i] = pre(t) end
  end
  local out = out_path and io.open(out_path, "wb") or io.stdout
  if not out then error("train: cannot write " .. out_path, 2) end
  local regression = m.bert:config().num_labels == 1
  m.bert:train(false)
  local bs = recipe.data.eval_batch_size
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
-- form "adapter": the PEFT adapter files of a LoRA run (refused when base groups trained too: an adapter
-- cannot carry them); else the merged model directory.
local function export_adapter(dir, dest)
  if not fs.exists(dir .. "/adapter_config.json") then
    error(("train: %s has no LoRA adapter to export (the run had no adapters.lora or model.adapter)"):format(dir), 0)
  end
  local info = cjson.decode(fs.read_file(dir .. "/pft_adapter.json") or "{}")
  if info.thawed and #info.thawed > 0 then
    error(("train: the run also trained %s fully besides the adapters; an adapter export would lose them: " ..
      "export the merged model instead (pft export RUN DEST --merged)"):format(S.compress_groups(info.thawed)), 0)
  end
  local ok, err = core.mkdir(dest)
  if not ok then error("train: " .. err, 0) end
  for _, f in ipairs({ "adapter_config.json", "adapter_model.safetensors" }) do
    fs.write_atomic(dest .. "/" .. f, assert(fs.read_file(dir .. "/" .. f)), "export")
  end
end

function T.export(run_dir, dest, which, form)
  local order = which == "final" and { "model" } or which == "best" and { "best" } or { "best", "model" }
  for _, sub in ipairs(order) do
    local dir = run_dir .. "/" .. sub
    if form == "adapter" and fs.exists(dir .. "/config.json") then
      export_adapter(dir, dest)
      return dest, sub
    elseif fs.exists(dir .. "/config.json") then
      local m = Model.load(dir)
      m:export(dest, { labels = m.labels })
      m.bert:free()
      return dest, sub
    end
  end
  error(("train: %s has no %s model to export"):format(run_dir, which or "best or final"), 2)
end

return T
