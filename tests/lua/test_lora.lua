-- LoRA (lua/pft/lora.lua, core/nn.c) against PEFT (tests/fixtures/lora/, tests/gen_lora_fixtures.py):
-- logits, loss and every adapter and classifier gradient of a PEFT adapter loaded over the tiny model;
-- the merged model; the adapter written back reads the same; initialisation as PEFT's; bad input.
local core = require "pft.core"
local check = require "check"
local Lora = require "pft.lora"
local Model = require "pft.model"

local FIX = TEST_ROOT .. "/tests/fixtures/lora/tiny_qv"
local TINY = TEST_ROOT .. "/tests/fixtures/bert/tiny_seqcls"
local TEXTS = { "hello world", "the movie is very good , i loved it", "a funny film" }
local LABELS = { 0, 2, 1 }
local TMP = os.getenv("TMPDIR") or "/tmp"

local T = {}

local function tiny() return Model.load(TINY, { head = "seqcls", num_labels = 3 }) end

-- max |a - b| / (1 + |b|)
local function max_rel(a, b)
  local fa, fb = a:flat(), b:flat()
  check.eq(#fa, #fb, "element count")
  local m = 0
  for i = 1, #fb do
    local d = math.abs(fa[i] - fb[i]) / (1 + math.abs(fb[i]))
    if not (d <= m) then m = d end
  end
  return m
end

local function free_all(t) for _, v in pairs(t) do v:free() end end

local function forward_loss(m)
  local b = m:encode(TEXTS)
  local _, _, logits = m.bert:forward(b)
  local loss = m.bert:loss(logits, LABELS)
  b:free()
  return logits, loss
end

function T.peft_adapter_matches_peft()
  local e = core.read_safetensors(FIX .. "/expected.safetensors")
  local m = tiny()
  Lora.load_adapter(m, FIX)
  m.bert:train(false)
  local b = m:encode(TEXTS)
  check.all_near(b:ids(), e.input_ids:totable(), 0, "the fixture's ids are pft's tokenization")
  b:free()
  local names = Lora.names(m.bert)
  check.eq(#names, 8, "2 layers x query, value x A, B")
  for _, p in ipairs(m.bert:params()) do p:requires_grad(p:name():find(".lora_", 1, true) ~= nil or p:name():match("^classifier") ~= nil) end
  local logits, loss = forward_loss(m)
  check.truthy(max_rel(logits, e.logits) <= 1e-5, ("logits within 1e-5 (%.3g)"):format(max_rel(logits, e.logits)))
  check.near(loss:item(), e.loss:item(), 1e-5, "loss")
  loss:backward()
  local n = 0
  for _, p in ipairs(m.bert:params()) do
    local want = e["grad." .. p:name()]
    if want then
      local g = p:grad()
      local d = max_rel(g, want)
      check.truthy(d <= 1e-4, ("gradient of %s within 1e-4 relative (%.3g)"):format(p:name(), d))
      g:free()
      n = n + 1
    elseif p:requires_grad() then
      error("a trainable parameter the fixture has no gradient for: " .. p:name())
    end
  end
  check.eq(n, 10, "every adapter and classifier gradient compared")
  logits:free(); loss:free()
  -- merged: a plain model computing the same logits, and the merged logits PEFT computes
  m.bert:merge_lora()
  check.eq(#Lora.names(m.bert), 0, "no adapters after merging")
  local merged = forward_loss(m)
  check.truthy(max_rel(merged, e.merged_logits) <= 1e-5, "merged logits = PEFT's merge_and_unload")
  check.truthy(max_rel(merged, e.logits) <= 1e-5, "merged = unmerged within 1e-5")
  merged:free()
  m.bert:free()
  free_all(e)
end

-- The adapter written by pft reads back into pft with the same logits, and model.safetensors is written
-- merged (a plain BERT that reloads without adapters to the same logits).
function T.adapter_and_merged_exports_round_trip()
  local dir = ("%s/pft-test-lora-%d"):format(TMP, os.time())
  os.execute("rm -rf '" .. dir .. "'")
  local m = tiny()
  Lora.load_adapter(m, FIX)
  m.bert:train(false)
  local want = forward_loss(m)
  Lora.save_adapter(m, dir .. "/adapter", { task = "classification" })
  m:export(dir .. "/merged")
  m.bert:free()
  local again = tiny()
  Lora.load_adapter(again, dir .. "/adapter")
  again.bert:train(false)
  local got = forward_loss(again)
  check.truthy(max_rel(got, want) <= 1e-6, "adapter written and read back")
  got:free()
  again.bert:free()
  local plain = Model.load(dir .. "/merged")
  check.eq(Lora.has(plain.bert), false, "the merged export has no adapters")
  plain.bert:train(false)
  local mg = forward_loss(plain)
  check.truthy(max_rel(mg, want) <= 1e-5, "merged export = the adapted model within 1e-5")
  mg:free(); want:free()
  plain.bert:free()
  os.execute("rm -rf '" .. dir .. "'")
end

-- What pft writes for an adapter is what PEFT loaded (tests/fixtures/lora/export_adapter/, whose logits
-- under peft.PeftModel.from_pretrained are tests/fixtures/lora/roundtrip.json): the same config and
-- tensors, and PEFT's logits equal pft's.
function T.peft_loads_the_adapter_pft_writes()
  local cjson = require "cjson"
  local dir = ("%s/pft-test-lora-rt-%d"):format(TMP, os.time())
  local m = tiny()
  Lora.load_adapter(m, FIX)
  Lora.save_adapter(m, dir, { task = "classification" })
  local snap = TEST_ROOT .. "/tests/fixtures/lora/export_adapter"
  local function json(p) local f = assert(io.open(p, "rb")); local t = cjson.decode(f:read("*a")); f:close(); return t end
  local got, want = json(dir .. "/adapter_config.json"), json(snap .. "/adapter_config.json")
  for k, v in pairs(want) do
    check.eq(type(v) == "table" and cjson.encode(got[k]) or got[k], type(v) == "table" and cjson.encode(v) or v, "config " .. k)
  end
  local gt, wt = core.read_safetensors(dir .. "/adapter_model.safetensors"), core.read_safetensors(snap .. "/adapter_model.safetensors")
  local n = 0
  for k, t in pairs(wt) do
    check.truthy(gt[k] ~= nil, "tensor " .. k)
    check.eq(max_rel(gt[k], t), 0, "tensor " .. k .. " bit for bit")
    n = n + 1
  end
  check.eq(n, 10, "8 adapter tensors and the classifier")
  free_all(gt); free_all(wt)
  m.bert:train(false)
  local logits = forward_loss(m)
  local peft = json(TEST_ROOT .. "/tests/fixtures/lora/roundtrip.json").logits
  local flat, i = logits:flat(), 0
  for _, row in ipairs(peft) do
    for _, v in ipairs(row) do
      i = i + 1
      check.near(flat[i], v, 1e-5, "PEFT's logit " .. i)
    end
  end
  logits:free()
  m.bert:free()
  os.execute("rm -rf '" .. dir .. "'")
end

-- A fresh adapter: A uniform in +-1/sqrt(in) (PEFT's Kaiming-uniform with a = sqrt 5), B zero, so the
-- adapted model starts as the base model; names and shapes as PEFT's.
function T.fresh_adapters_start_as_the_base_model()
  local base = tiny()
  base.bert:train(false)
  local want = forward_loss(base)
  base.bert:free()
  local m = tiny()
  Lora.apply(m, { r = 8, alpha = 16, targets = { "query", "value", "intermediate.dense" }, layers = "layer[1]" })
  local names = Lora.names(m.bert)
  check.eq(#names, 6, "one layer x 3 targets x A, B")
  check.eq(names[1], "bert.encoder.layer.1.attention.self.query.lora_A.weight", "PEFT's name")
  local a = m.bert:param("bert.encoder.layer.1.intermediate.dense.lora_A.weight")
  local bmat = m.bert:param("bert.encoder.layer.1.intermediate.dense.lora_B.weight")
  check.eq(table.concat(a:shape(), "x"), "8x32", "A is [r, in]")
  check.eq(table.concat(bmat:shape(), "x"), "64x8", "B is [out, r]")
  local lim, top = 1 / math.sqrt(32), 0
  for _, v in ipairs(a:flat()) do top = math.max(top, math.abs(v)) end
  check.truthy(top <= lim and top > lim / 2, "A within +-1/sqrt(in), spread")
  for _, v in ipairs(bmat:flat()) do if v ~= 0 then error("B starts at zero") end end
  check.eq(m.bert:config().lora.scale, 2, "scale alpha / r")
  m.bert:train(false)
  local got = forward_loss(m)
  check.truthy(max_rel(got, want) <= 0, "B = 0: the base model's logits exactly")
  got:free(); want:free(); a:free(); bmat:free()
  m.bert:free()
end

-- A LoRA run on the tiny recipe: checkpoints hold the adapters and the head only; best/ and model/ are
-- merged models with the adapter files beside them; --adapter exports them, and is refused for a run that
-- also thawed base layers (naming them), whose merged export still works.
function T.a_lora_run_checkpoints_and_exports()
  local F = require "train_fixtures"
  local Tr = require "pft.train"
  local dir = ("%s/pft-test-lora-run-%d"):format(TMP, os.time())
  os.execute("rm -rf '" .. dir .. "'")
  local over = { ["adapters"] = { lora = { r = 4, alpha = 8, dropout = 0.1, targets = { "query", "value" } } },
    ["schedule.preset"] = "lora", ["train.max_steps"] = 6, ["train.eval_every"] = 3 }
  local s = Tr.run(F.recipe(TEST_ROOT, dir .. "/run", over), { run_dir = dir .. "/run", quiet = true })
  check.eq(s.status, "done", "the run ends")
  check.eq(s.trainable_numel, 2 * 2 * (4 * 32 + 32 * 4) + 3 * 32 + 3, "adapters + head train")
  local ck = io.popen("ls -d '" .. dir .. "/run/checkpoints/'step-* | tail -1"):read("*l")
  local w = core.read_safetensors(ck .. "/weights.safetensors")
  local names = {}
  for n in pairs(w) do names[#names + 1] = n end
  table.sort(names)
  for _, n in ipairs(names) do
    check.truthy(n:find(".lora_", 1, true) or n:match("^classifier%."), "checkpoint holds only what trains: " .. n)
  end
  check.eq(#names, 10, "8 adapter tensors + the classifier")
  free_all(w)
  check.truthy(io.open(dir .. "/run/best/adapter_config.json") ~= nil, "best/ has the adapter")
  Tr.export(dir .. "/run", dir .. "/adapter", nil, "adapter")
  local m = tiny()
  Lora.load_adapter(m, dir .. "/adapter")
  m.bert:train(false)
  local from_adapter = forward_loss(m)
  m.bert:free()
  local merged = Model.load(dir .. "/run/best")
  merged.bert:train(false)
  check.truthy(max_rel(forward_loss(merged), from_adapter) <= 1e-5, "the adapter over the base = the merged best model")
  merged.bert:free()
  -- thawing the top layer as well: no adapter export
  over["schedule.rules"] = { { at = { step = 1 }, unfreeze = "top(1)" } } -- before the first evaluation
  Tr.run(F.recipe(TEST_ROOT, dir .. "/thaw", over), { run_dir = dir .. "/thaw", quiet = true })
  check.raises(function() Tr.export(dir .. "/thaw", dir .. "/a2", nil, "adapter") end,
    "also trained layer[1] fully besides the adapters", "adapter export after a thaw")
  Tr.export(dir .. "/thaw", dir .. "/m2", nil, "merged")
  check.truthy(io.open(dir .. "/m2/model.safetensors") ~= nil, "merged export after a thaw")
  Tr.run(F.recipe(TEST_ROOT, dir .. "/plain", { ["train.max_steps"] = 2 }), { run_dir = dir .. "/plain", quiet = true })
  check.raises(function() Tr.export(dir .. "/plain", dir .. "/a3", nil, "adapter") end,
    "has no LoRA adapter to export", "adapter export of a run without adapters")
  os.execute("rm -rf '" .. dir .. "'")
end

-- model.adapter: a PEFT adapter under a recipe, its adapters in the plan; with adapters.lora too, an error.
function T.a_recipe_loads_a_peft_adapter()
  local F = require "train_fixtures"
  local Tr = require "pft.train"
  local Plan = require "pft.plan"
  local r = F.recipe(TEST_ROOT, "/nonexistent", { ["model.adapter"] = FIX, ["schedule.preset"] = "lora" })
  local prep = Tr.prepare(r)
  local text = table.concat(Plan.lines(prep.plan), "\n")
  check.truthy(text:find("adapters: LoRA r 4, scale 2, dropout 0 on query, value in layer[0-1]: 1,024 parameters (512 per layer)", 1, true),
    "the plan's adapter line:\n" .. text)
  local e = core.read_safetensors(FIX .. "/expected.safetensors")
  prep.model.bert:train(false)
  local logits = forward_loss(prep.model)
  check.truthy(max_rel(logits, e.logits) <= 1e-5, "the adapter's logits under the recipe")
  logits:free(); free_all(e)
  prep.model.bert:free()
  r = F.recipe(TEST_ROOT, "/nonexistent", { ["model.adapter"] = FIX, ["adapters"] = { lora = { r = 4, alpha = 8, targets = { "query" } } } })
  check.raises(function() Tr.prepare(r) end, "model.adapter and adapters.lora both add adapters", "both")
end

-- Ctrl-C and --resume: the adapters come back from the checkpoint, and the run ends with the weights of
-- the run that was never interrupted, bit for bit.
function T.a_lora_run_resumes_bit_identically()
  local F = require "train_fixtures"
  local Tr = require "pft.train"
  local dir = ("%s/pft-test-lora-resume-%d"):format(TMP, os.time())
  os.execute("rm -rf '" .. dir .. "'")
  local over = { ["adapters"] = { lora = { r = 4, alpha = 8, dropout = 0.1, targets = { "query", "value", "output.dense" } } },
    ["schedule.preset"] = "lora", ["train.max_steps"] = 8, ["train.eval_every"] = 4 }
  Tr.run(F.recipe(TEST_ROOT, dir .. "/a", over), { run_dir = dir .. "/a", quiet = true })
  check.eq(Tr.run(F.recipe(TEST_ROOT, dir .. "/b", over), { run_dir = dir .. "/b", quiet = true, interrupt_at_step = 4 }).status,
    "interrupted", "interrupted at step 4")
  check.eq(Tr.run(F.recipe(TEST_ROOT, dir .. "/b", over), { resume = dir .. "/b", quiet = true }).status, "done", "resumed")
  local wa = core.read_safetensors(dir .. "/a/checkpoints/step-8/weights.safetensors")
  local wb = core.read_safetensors(dir .. "/b/checkpoints/step-8/weights.safetensors")
  local n = 0
  for k, t in pairs(wa) do
    check.eq(max_rel(wb[k], t), 0, k .. " bit for bit")
    n = n + 1
  end
  check.eq(n, 14, "12 adapter tensors and the classifier")
  free_all(wa); free_all(wb)
  os.execute("rm -rf '" .. dir .. "'")
end

function T.bad_adapters_are_named()
  local m = tiny()
  check.raises(function() Lora.apply(m, { r = 8, alpha = 16, targets = { "qurey" } }) end,
    "unknown target 'qurey', did you mean 'query'", "a misspelt target")
  check.raises(function() Lora.apply(m, { r = 8, alpha = 16, targets = {} }) end, "at least one", "no target")
  check.raises(function() Lora.apply(m, { r = 0, alpha = 16, targets = { "query" } }) end, "r must be >= 1", "r = 0")
  check.raises(function() Lora.apply(m, { r = 4, alpha = 0, targets = { "query" } }) end, "alpha must be > 0", "alpha = 0")
  check.raises(function() Lora.apply(m, { r = 4, alpha = 8, targets = { "query" }, layers = "layer[7]" }) end,
    "out of range", "a layer the model lacks")
  check.raises(function() Lora.apply(m, { r = 4, alpha = 8, targets = { "query" }, layers = "head" }) end,
    "names no encoder layer", "a selector of no layer")
  m.bert:free()
  -- an adapter for another base model: the shapes named
  local dir = ("%s/pft-test-lora-bad-%d"):format(TMP, os.time())
  os.execute("rm -rf '" .. dir .. "' && mkdir -p '" .. dir .. "'")
  local f = assert(io.open(dir .. "/adapter_config.json", "wb"))
  f:write('{"peft_type": "LORA", "r": 4, "lora_alpha": 8}')
  f:close()
  local wide = core.zeros({ 4, 48 })
  core.save_tensors(dir .. "/adapter_model.safetensors", {
    ["base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"] = wide }, nil)
  wide:free()
  m = tiny()
  check.raises(function() Lora.load_adapter(m, dir) end, "is [4, 48], the model's bert.encoder.layer.0.attention.self.query.lora_A.weight is [4, 32]",
    "another base model")
  m.bert:free()
  f = assert(io.open(dir .. "/adapter_config.json", "wb"))
  f:write('{"peft_type": "IA3"}')
  f:close()
  m = tiny()
  check.raises(function() Lora.load_adapter(m, dir) end, "peft_type is IA3; pft loads LORA adapters only", "an IA3 adapter")
  m.bert:free()
  os.execute("rm -rf '" .. dir .. "'")
end

return T
