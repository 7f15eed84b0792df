-- pft.schedule: selectors, every preset's plan, discriminative rates, warm-up, plateau triggers.
-- A hand-built 4-layer model_info keeps these independent of any checkpoint.
local S = require "pft.schedule"
local check = require "check"

local T = {}

local L = 4
local function info4()
  local names, numel = {}, {}
  local function add(n, k) names[#names + 1] = n; numel[n] = k end
  add("bert.embeddings.word_embeddings.weight", 1000)
  add("bert.embeddings.position_embeddings.weight", 100)
  add("bert.embeddings.LayerNorm.weight", 10)
  add("bert.embeddings.LayerNorm.bias", 10)
  for i = 0, L - 1 do
    local p = "bert.encoder.layer." .. i .. "."
    add(p .. "attention.self.query.weight", 100)
    add(p .. "attention.self.query.bias", 10)
    add(p .. "attention.output.LayerNorm.weight", 10)
    add(p .. "attention.output.LayerNorm.bias", 10)
    add(p .. "output.dense.weight", 100)
    add(p .. "output.dense.bias", 10)
  end
  add("bert.pooler.dense.weight", 100)
  add("bert.pooler.dense.bias", 10)
  add("classifier.weight", 20)
  add("classifier.bias", 2)
  return S.model_info(names, numel)
end
local LAYER = 240 -- params per layer

local function recipe(schedule, lr, optim)
  return { schedule = schedule, lr = lr or { head_multiplier = 1, unfreeze_warmup = 0 }, optim = optim or { name = "adamw", lr = 1e-4 },
    train = { epochs = 3, best_metric = "accuracy" } }
end

local function groups(ph)
  local out = {}
  for _, g in ipairs(ph.groups) do out[#out + 1] = g.name end
  return S.compress_groups(out)
end

local function plan_summary(sched)
  local out = {}
  for _, ph in ipairs(sched:plan()) do out[#out + 1] = ph.label .. ": " .. groups(ph) end
  return table.concat(out, " | ")
end

local function has(s, needle) check.truthy(s:find(needle, 1, true), s .. " lacks " .. needle) end

function T.model_info_groups()
  local info = info4()
  check.eq(info.num_layers, 4, "layers")
  check.eq(info.group_of["bert.encoder.layer.3.output.dense.bias"], "layer[3]", "layer group")
  check.eq(info.group_of["classifier.weight"], "head", "head")
  check.eq(table.concat(info.groups, ","), "embeddings,layer[0],layer[1],layer[2],layer[3],pooler,head", "group order")
end

function T.selectors()
  local info = info4()
  check.eq(#S.select("bert.encoder.layer.*.attention.*", info), 16, "glob")
  check.eq(#S.select("bert.encoder.layer.?.output.dense.weight", info), 4, "? glob")
  check.eq(#S.select("layer[1]", info), 6, "layer[i]")
  check.eq(#S.select("layer[1-2]", info), 12, "layer[i-j]")
  check.eq(#S.select("top(1)", info), 6, "top(k)")
  check.eq(S.select("bottom(1)", info)[1], "bert.encoder.layer.0.attention.self.query.weight", "bottom(k)")
  check.eq(#S.select("bias", info), 1 + 12 + 1 + 1, "bias")
  check.eq(#S.select("LayerNorm", info), 2 + 8, "LayerNorm")
  check.eq(#S.select({ "pooler", "head" }, info), 4, "union")
  check.eq(#S.select({ "all", minus = { "embeddings", "bias" } }, info), 32 - 4 - 14, "difference")
  check.raises(function() S.select("layer[7]", info) end, "out of range (the model has 4 layers")
  check.raises(function() S.select("bert.nothing.*", info) end, "selector 'bert.nothing.*' matches no parameter")
  check.raises(function() S.select({ "head", minus = "head" }, info) end, "matches no parameter")
  check.raises(function() S.select("top(5)", info) end, "k must be 1..4")
end

function T.preset_full_head_bitfit_top_k()
  local info = info4()
  local o = { steps_per_epoch = 10, epochs = 3 }
  check.eq(plan_summary(S.build(recipe({ preset = "full" }), info, o)), "epochs 1-3: embeddings, layer[0-3], pooler, head", "full")
  check.eq(plan_summary(S.build(recipe({ preset = "head" }), info, o)), "epochs 1-3: head", "head: pooler frozen")
  local bit = S.build(recipe({ preset = "bitfit" }), info, o):plan()[1]
  check.eq(groups(bit), "embeddings, layer[0-3], pooler, head", "bitfit groups")
  check.eq(bit.trainable_numel, 10 + 4 * 30 + 10 + 22, "bitfit: biases + whole head")
  check.eq(bit.trainable["classifier.weight"], true, "head weight trains")
  check.eq(bit.trainable["bert.pooler.dense.weight"], nil, "pooler weight frozen")
  local top = S.build(recipe({ preset = "top_k", k = 2 }), info, o):plan()
  check.eq(plan_summary(S.build(recipe({ preset = "top_k", k = 2 }), info, o)), "epochs 1-3: layer[2-3], pooler, head", "top_k")
  check.eq(top[1].trainable_numel, 2 * LAYER + 110 + 22, "top_k params")
  check.raises(function() S.build(recipe({ preset = "top_k", k = 5 }), info, o) end, "schedule.k = 5 but the model has 4 layers")
end

function T.preset_gradual()
  local info = info4()
  local s = S.build(recipe({ preset = "gradual", every = "epoch" }), info, { steps_per_epoch = 10, epochs = 6 })
  check.eq(plan_summary(s), "epoch 1: pooler, head | epoch 2: layer[3], pooler, head | epoch 3: layer[2-3], pooler, head"
    .. " | epoch 4: layer[1-3], pooler, head | epoch 5: layer[0-3], pooler, head | epoch 6: embeddings, layer[0-3], pooler, head", "gradual by epoch")
  s = S.build(recipe({ preset = "gradual", every = 5 }), info, { steps_per_epoch = 10, epochs = 2 })
  local p = s:plan()
  check.eq(p[2].label, "steps 5-9", "every 5 steps")
  check.eq(groups(p[2]), "layer[3], pooler, head", "one more layer")
  check.eq(p[2].change, "unfreeze layer[3]", "change")
  check.eq(groups(p[6]), "embeddings, layer[0-3], pooler, head", "embeddings last")
  s = S.build(recipe({ preset = "gradual" }), info, { steps_per_epoch = 10, epochs = 2 })
  p = s:plan()
  check.eq(#p, 6, "phases incl. the ones after training")
  check.eq(p[3].unreached, true, "epoch 2 on is past a 2-epoch run")
end

function T.preset_chain_thaw()
  local info = info4()
  local s = S.build(recipe({ preset = "chain_thaw", every = 10 }), info, { steps_per_epoch = 10, epochs = 8 })
  check.eq(plan_summary(s), "epoch 1: head | epoch 2: embeddings | epoch 3: layer[0] | epoch 4: layer[1] | epoch 5: layer[2]"
    .. " | epoch 6: layer[3] | epoch 7: pooler | epoch 8: embeddings, layer[0-3], pooler, head", "chain-thaw")
end

function T.initial_and_rules()
  local info = info4()
  local s = S.build(recipe({ preset = "head", initial = { "head", "pooler" }, rules = {
    { at = { step = 15 }, unfreeze = "top(2)" },
    { at = { fraction = 0.5 }, freeze = "pooler" },
  } }), info, { steps_per_epoch = 10, epochs = 4 })
  check.eq(plan_summary(s), "steps 0-14: pooler, head | steps 15-19: layer[2-3], pooler, head | epochs 3-4: layer[2-3], head", "rules")
  check.raises(function()
    S.build(recipe({ preset = "head", rules = { { at = { epoch = 1 }, unfreeze = "layer[9]" } } }), info, {})
  end, "schedule.rules[1].unfreeze: selector 'layer[9]' is out of range")
end

function T.at_matches_plan()
  local info = info4()
  local s = S.build(recipe({ preset = "gradual", every = "epoch" }), info, { steps_per_epoch = 10, epochs = 6 })
  local st = s:at(9, 0, {})
  check.eq(st.trainable["bert.encoder.layer.3.output.dense.weight"], nil, "layer 3 frozen in epoch 0")
  st = s:at(10, 1, {})
  check.eq(st.trainable["bert.encoder.layer.3.output.dense.weight"], true, "layer 3 trains in epoch 1")
  check.eq(st.trainable["bert.encoder.layer.2.output.dense.weight"], nil, "layer 2 still frozen")
  check.eq(#st.groups, 3, "groups")
end

function T.discriminative_lr()
  local info = info4()
  local s = S.build(recipe({ preset = "full" }, { discriminative = { decay = 0.5 }, head_multiplier = 10, unfreeze_warmup = 0 }), info, { steps_per_epoch = 10 })
  local st = s:at(0, 0, {})
  check.near(st.lr_mult["layer[3]"], 1, 1e-12, "top layer")
  check.near(st.lr_mult["layer[0]"], 0.125, 1e-12, "decay^(L-1-i)")
  check.near(st.lr_mult["embeddings"], 0.0625, 1e-12, "embeddings decay^L")
  check.near(st.lr_mult["pooler"], 1, 1e-12, "pooler")
  check.near(st.lr_mult["head"], 10, 1e-12, "head multiplier")
  check.near(st.lr_mult["bert.encoder.layer.0.output.dense.weight"], 0.125, 1e-12, "by parameter name too")
  s = S.build(recipe({ preset = "full" }, { discriminative = { spread = { 1e-6, 1e-4 } }, head_multiplier = 1, unfreeze_warmup = 0 }, { lr = 1e-4 }), info, {})
  st = s:at(0, 0, {})
  check.near(st.lr_mult.embeddings, 0.01, 1e-9, "spread: lowest group at lo")
  check.near(st.lr_mult.head, 1, 1e-9, "spread: head at hi")
  check.near(st.lr_mult["layer[2]"], 0.01 * 100 ^ (3 / 6), 1e-9, "geometric")
end

function T.unfreeze_warmup()
  local info = info4()
  local s = S.build(recipe({ preset = "gradual", every = 10 }, { head_multiplier = 1, unfreeze_warmup = 4 }), info, { steps_per_epoch = 100 })
  local st = s:at(5, 0, {})
  check.eq(st.warmup.head, 1, "groups trainable from the start do not ramp")
  st = s:at(10, 0, {})
  check.near(st.warmup["layer[3]"], 0.25, 1e-12, "first step after unfreezing")
  check.near(s:at(11, 0, {}).warmup["layer[3]"], 0.5, 1e-12, "second")
  check.near(s:at(13, 0, {}).warmup["layer[3]"], 1, 1e-12, "ramp done")
  check.near(s:at(13, 0, {}).warmup["bert.encoder.layer.3.output.dense.bias"], 1, 1e-12, "by parameter name")
end

function T.plateau_trigger()
  local info = info4()
  local s = S.build(recipe({ preset = "head", rules = {
    { at = { plateau = { metric = "accuracy", patience = 2 } }, unfreeze = "top(1)" },
    { at = { plateau = { patience = 1 } }, unfreeze = "all" },
  } }), info, { steps_per_epoch = 10, epochs = 10 })
  local p = s:plan()
  check.eq(p[#p - 1].label, "when dev accuracy stops improving for 2 evaluations", "plateau in the plan")
  check.eq(p[#p].from_step, nil, "no static step")
  local h = {
    { step = 10, epoch = 0, metrics = { accuracy = 0.70 } },
    { step = 20, epoch = 1, metrics = { accuracy = 0.75 } },
    { step = 30, epoch = 2, metrics = { accuracy = 0.74 } },
  }
  check.eq(s:at(31, 3, h).trainable["bert.encoder.layer.3.output.dense.weight"], nil, "one eval without improvement: patience 2 not reached")
  h[#h + 1] = { step = 40, epoch = 3, metrics = { accuracy = 0.75 } }
  check.eq(s:at(39, 3, h).trainable["bert.encoder.layer.3.output.dense.weight"], nil, "before the eval's step")
  check.eq(s:at(40, 4, h).trainable["bert.encoder.layer.3.output.dense.weight"], true, "fires at the second eval without improvement")
  check.eq(s:at(40, 4, h).trainable["bert.embeddings.word_embeddings.weight"], nil, "second rule waits")
  h[#h + 1] = { step = 50, epoch = 4, metrics = { accuracy = 0.80 } }
  h[#h + 1] = { step = 60, epoch = 5, metrics = { accuracy = 0.79 } }
  check.eq(s:at(60, 6, h).trainable["bert.embeddings.word_embeddings.weight"], true, "second plateau fires")
end

-- schedule.custom: a function of the step that spells gradual unfreezing gives the preset's sets and
-- warm-up factors at every step.
function T.custom_equals_the_preset_it_spells()
  local info = info4()
  local lr = { head_multiplier = 1, unfreeze_warmup = 4 }
  local preset = S.build(recipe({ preset = "gradual", every = 10 }, lr), info, { steps_per_epoch = 100 })
  local calls = 0
  local custom = S.build(recipe({ custom = function(ctx)
    calls = calls + 1
    local k, sel = math.floor(ctx.step / 10), { "head", "pooler" }
    for i = 1, math.min(k, L) do sel[#sel + 1] = "layer[" .. (L - i) .. "]" end
    if k > L then sel[#sel + 1] = "embeddings" end
    return sel
  end }, lr), info, { steps_per_epoch = 100 })
  for step = 0, 70 do
    local a, b = preset:at(step, 0, {}), custom:at(step, 0, {})
    for _, n in ipairs(info.names) do
      check.eq(b.trainable[n], a.trainable[n], ("step %d: %s trainable"):format(step, n))
      check.eq(b.warmup[n], a.warmup[n], ("step %d: %s warm-up"):format(step, n))
    end
  end
  check.eq(calls, 71, "one call per step (memoized)")
  -- asked for a late step first (a resumed run): the steps before it are replayed, same answer
  local fresh = S.build(recipe({ custom = custom.custom }, lr), info, { steps_per_epoch = 100 })
  check.near(fresh:at(41, 0, {}).warmup["layer[0]"], preset:at(41, 0, {}).warmup["layer[0]"], 0, "replayed warm-up")
end

-- ctx carries the dev history (as evaluated by that step), copied: the function cannot edit the trainer's.
function T.custom_reads_the_history()
  local info = info4()
  local s = S.build(recipe({ custom = function(ctx)
    for _, h in ipairs(ctx.history) do
      h.metrics.accuracy = 0 -- a copy
      if h.step >= 20 then return "all" end
    end
    return "head"
  end }), info, { steps_per_epoch = 10, epochs = 10 })
  local h = { { step = 10, epoch = 0, metrics = { accuracy = 0.7 } }, { step = 20, epoch = 1, metrics = { accuracy = 0.8 } } }
  check.eq(s:at(19, 1, h).trainable["bert.embeddings.word_embeddings.weight"], nil, "the eval at step 20 is not seen at 19")
  check.eq(s:at(20, 2, h).trainable["bert.embeddings.word_embeddings.weight"], true, "seen at step 20")
  check.eq(h[1].metrics.accuracy, 0.7, "history untouched")
end

function T.custom_errors_name_the_step()
  local info = info4()
  local function at_error(fn, step)
    local s = S.build(recipe({ custom = fn }), info, { steps_per_epoch = 10 })
    local ok, err = pcall(s.at, s, step, 0, {})
    check.eq(ok, false, "raises")
    return tostring(err)
  end
  has(at_error(function() return nil end, 0), "schedule.custom at step 0: returned nothing, expected a selector")
  has(at_error(function() return 42 end, 0), "schedule.custom at step 0: returned a number")
  has(at_error(function(ctx) if ctx.step == 3 then error("boom", 0) end return "head" end, 5), "schedule.custom at step 3: boom")
  has(at_error(function(ctx) return ctx.step < 2 and "head" or "layer[9]" end, 4),
    "schedule.custom at step 2: selector 'layer[9]'")
  local ok, err = pcall(S.build, recipe({ custom = function() return "head" end, rules = { { at = { step = 1 }, unfreeze = "all" } } }),
    info, { steps_per_epoch = 10 })
  check.eq(ok, false, "custom with rules refused")
  has(tostring(err), "schedule.custom replaces schedule.initial and schedule.rules")
end

-- The plan samples the function at every evaluation point and merges equal neighbours.
function T.custom_plan_samples_the_eval_points()
  local info = info4()
  local r = recipe({ custom = function(ctx) return ctx.step < 20 and "head" or { "top(1)", "head" } end })
  r.train.eval_every = 5
  local s = S.build(r, info, { steps_per_epoch = 10, epochs = 3 })
  check.eq(table.concat(s:sample_steps(), " "), "0 5 10 15 20 25", "samples")
  check.eq(plan_summary(s), "epochs 1-2: head | epoch 3: layer[3], head", "phases")
  local bad = recipe({ custom = function(ctx) return ctx.step < 10 and "head" or "nothing*" end })
  bad.train.eval_every = 5
  local ok, err = pcall(function() S.build(bad, info, { steps_per_epoch = 10, epochs = 3 }):plan() end)
  check.eq(ok, false, "a selector that matches nothing fails the plan")
  has(tostring(err), "schedule.custom at step 10")
end

return T
