-- pft.Bert, pft.model and the exporter against the transformers fixtures (tests/fixtures/bert/README.md):
-- the tiny_seqcls batch tokenized by pft, logits/loss/gradients, parameter names, export and reload,
-- a fresh export against the snapshot transformers loaded (export_seqcls/, roundtrip.json), error
-- messages, leaks.
local pft = require "pft"
local check = require "check"
local cjson = require "cjson"

local FIX = TEST_ROOT .. "/tests/fixtures/bert"
local TINY = FIX .. "/tiny_seqcls"
local TEXTS = { "hello world", "the movie is very good , i loved it", "a funny film", "actors acting" }
local PAIRS = { false, false, "not boring", "but the plot is slow and too long" }

local T = {}

local function max_diff(a, b)
  local fa, fb = a:flat(), b:flat()
  check.eq(#fa, #fb, "element count")
  local m = 0
  for i = 1, #fa do m = math.max(m, math.abs(fa[i] - fb[i])) end
  return m
end

local function near_tensor(got, want, tol, what)
  local d = max_diff(got, want)
  if d > tol then error(("%s: max |diff| %g > %g"):format(what, d, tol), 2) end
  return d
end

-- the fixture's F32 integer tensor [B, T] as nested Lua integers
-- per-token outputs at padded positions are 0 in pft (padding is skipped) and unused values in
-- transformers: compare them with the padded positions zeroed on both sides
local function near_masked(got, want, mask, tol, what)
  local m3 = mask:reshape({ mask:shape(1), mask:shape(2), 1 })
  return near_tensor(pft.mul(got, m3), pft.mul(want, m3), tol, what)
end

local function int_rows(t)
  local rows = t:totable()
  for _, r in ipairs(rows) do for j = 1, #r do r[j] = math.floor(r[j] + 0.5) end end
  return rows
end

local function fixture_batch(m)
  return m:encode(TEXTS, PAIRS, { max_length = 12, pad_to = 12 })
end

local function tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(pft.mkdir(p))
  return p
end

local function rmdir(p)
  for _, f in ipairs(pft.list_dir(p) or {}) do os.remove(p .. "/" .. f) end
  os.remove(p)
end

local function read_json(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return cjson.decode(s)
end

function T.seqcls_matches_transformers()
  local m = pft.load_model(TINY, { head = "seqcls", num_labels = 3 })
  local e = pft.read_safetensors(TINY .. "/expected.safetensors")
  local b = fixture_batch(m)
  local B, Tn = b:size()
  check.eq(B, 4, "B")
  check.eq(Tn, 12, "T")
  check.all_near(b:ids(), int_rows(e.input_ids), 0, "input_ids")
  check.all_near(b:type_ids(), int_rows(e.token_type_ids), 0, "token_type_ids")
  check.all_near(b:mask(), int_rows(e.attention_mask), 0, "attention_mask")
  check.eq(b:tokens(), 35, "non-pad tokens")
  local hidden, pooled, logits = m:forward(b)
  -- tolerances about 4x the observed max |diff|: hidden 7.2e-7, pooled 3.9e-7, logits 1.2e-7 (3.6e-7 on
  -- tiny_tokcls), loss 0 (within one ulp), the two gradients 3.6e-9 and 6.3e-8 (absolute)
  near_masked(hidden, e["hidden_states.2"], e.attention_mask, 3e-6, "hidden")
  near_tensor(pooled, e.pooled, 1.5e-6, "pooled")
  local d = near_tensor(logits, e.logits, 1.5e-6, "logits")
  print(("  tiny_seqcls logits max |diff| %.3g"):format(d))
  local loss = m:loss(logits, { 0, 2, 1, 2 })
  check.near(loss:item(), e.loss:item(), 5e-7, "loss")
  loss:backward()
  for _, name in ipairs({ "bert.encoder.layer.0.attention.self.query.weight", "classifier.weight" }) do
    near_tensor(m:param(name):grad(), e["grad." .. name], 2.5e-7, "grad " .. name)
  end
end

function T.regression_and_tokcls_losses()
  local e = pft.read_safetensors(FIX .. "/tiny_regression/expected.safetensors")
  local m = pft.load_model(FIX .. "/tiny_regression", { head = "seqcls", num_labels = 1 })
  local _, _, logits = m:forward(fixture_batch(m))
  near_tensor(logits, e.logits, 1.5e-6, "regression logits") -- observed 1.8e-7
  check.near(m:loss(logits, { 0.5, -1.25, 2.0, 0.3 }):item(), e.loss:item(), 5e-7, "MSE loss")

  e = pft.read_safetensors(FIX .. "/tiny_tokcls/expected.safetensors")
  m = pft.load_model(FIX .. "/tiny_tokcls", { head = "tokcls", num_labels = 5 })
  local hidden, pooled
  hidden, pooled, logits = m:forward(fixture_batch(m))
  check.eq(pooled, nil, "token classification has no pooler")
  check.eq(#hidden:shape(), 3, "hidden dims")
  near_masked(logits, e.logits, e.attention_mask, 1.5e-6, "tokcls logits") -- observed 3.6e-7
  local labels = {}
  for _, v in ipairs(e.labels:flat()) do labels[#labels + 1] = math.floor(v + 0.5) end
  check.eq(#labels, 48, "B*T labels")
  check.near(m:loss(logits, labels):item(), e.loss:item(), 5e-7, "token CE loss")
end

-- m:set_hidden_states(false): the last layer runs past its attention only the [CLS] rows; the pooled
-- output, logits, loss and every gradient are those of the whole layer (and of transformers), with
-- padding skipped (packed rows) and without (no padding: the dense layout)
function T.first_rows_only_matches_the_whole_layer()
  local e = pft.read_safetensors(TINY .. "/expected.safetensors")
  local full = pft.load_model(TINY, { head = "seqcls", num_labels = 3 })
  local first = pft.load_model(TINY, { head = "seqcls", num_labels = 3 })
  first:set_hidden_states(false)
  local texts = { "a funny film", "an odd movie" } -- the same length: no padding, the dense layout
  for _, b in ipairs({ fixture_batch(full), full:encode(texts, nil, { max_length = 12 }) }) do
    local h1, p1, l1 = full:forward(b)
    local h2, p2, l2 = first:forward(b)
    check.truthy(h1, "hidden states by default")
    check.eq(h2, nil, "no hidden states")
    near_tensor(p2, p1, 1e-6, "pooled")
    near_tensor(l2, l1, 1e-6, "logits")
  end
  local _, _, l2 = first:forward(fixture_batch(first))
  near_tensor(l2, e.logits, 1.5e-6, "logits against transformers")
  -- from the activation cache's states: the input of layer 1 (the last), as the trainer starts there
  local b = fixture_batch(full)
  local _, _, lt, taps = full.bert:forward_taps(b)
  local hf, _, lf = first.bert:forward_from(b, "tokens", 1, taps[2])
  check.eq(hf, nil, "from a boundary: no hidden states")
  near_tensor(lf, lt, 1e-6, "logits from boundary 1")
  local _, _, l0 = first.bert:forward_from(b, "tokens", 2, taps[3]) -- no layer left: the whole last layer's rows
  near_tensor(l0, lt, 1e-6, "logits from boundary 2")
  -- training mode without dropout (the masks of the last layer's B rows are not those of its N): the
  -- loss and every gradient
  for _, m in ipairs({ full, first }) do
    m:train()
    for i = 0, m:num_layers() - 1 do m:set_layer_training(i, false) end
    m:set_embeddings_training(false)
    m:set_head_training(false)
  end
  local labels = { 0, 2, 1, 2 }
  local _, _, lf = full:forward(fixture_batch(full))
  local loss_full = full:loss(lf, labels)
  loss_full:backward()
  _, _, l2 = first:forward(fixture_batch(first))
  local loss_first = first:loss(l2, labels)
  loss_first:backward()
  check.near(loss_first:item(), loss_full:item(), 1e-7, "loss")
  check.near(loss_first:item(), e.loss:item(), 5e-7, "loss against transformers")
  local ps1, ps2 = full:params(), first:params()
  for i, p in ipairs(ps1) do
    near_tensor(ps2[i]:grad(), p:grad(), 1e-7, "grad " .. p:name())
  end
  near_tensor(first:param("classifier.weight"):grad(), e["grad.classifier.weight"], 2.5e-7, "grad against transformers")
  -- with dropout: runs, and the same seed gives the same loss
  first:set_layer_training(1, true)
  local losses = {}
  for r = 1, 2 do
    pft.seed(7)
    local _, _, l = first:forward(fixture_batch(first))
    losses[r] = first:loss(l, labels):item()
  end
  check.eq(losses[1], losses[2], "dropout in the last layer's [CLS] rows: deterministic")
  -- a token head reads every row: the setting is ignored
  local tok = pft.load_model(FIX .. "/tiny_tokcls", { head = "tokcls", num_labels = 5 })
  tok:set_hidden_states(false)
  local th = tok:forward(fixture_batch(tok))
  check.eq(#th:shape(), 3, "token head: hidden states")
end

function T.params_in_hf_order()
  local m = pft.load_model(TINY, { head = "seqcls", num_labels = 3 })
  local ps = m:params()
  check.eq(#ps, 41, "parameter count")
  check.eq(ps[1]:name(), "bert.embeddings.word_embeddings.weight", "first")
  check.eq(ps[6]:name(), "bert.encoder.layer.0.attention.self.query.weight", "sixth")
  check.eq(ps[38]:name(), "bert.pooler.dense.weight", "pooler")
  check.eq(ps[41]:name(), "classifier.bias", "last")
  local n = 0
  for _, p in ipairs(ps) do n = n + p:numel() end
  check.eq(m:numel(), n, "numel")
  check.eq(m:numel(true), n, "all trainable")
  check.eq(m:param("nope"), nil, "unknown name")
  check.eq(m:num_layers(), 2, "layers")
  local c = m:config()
  check.eq(c.hidden_size, 32, "hidden_size")
  check.eq(c.num_heads, 4, "num_heads")
  check.eq(c.model_type, "bert", "model_type")
  check.eq(c.head, "seqcls", "head")
  check.eq(c.num_labels, 3, "num_labels")
  check.eq(c.layer_norm_eps, 1e-12, "layer_norm_eps")

  local frozen = m:param("bert.embeddings.word_embeddings.weight")
  frozen:requires_grad(false)
  check.eq(m:numel(true), n - frozen:numel(), "trainable numel")
  local _, _, logits = m:forward(fixture_batch(m))
  m:loss(logits, { 0, 2, 1, 2 }):backward()
  check.eq(frozen:grad(), nil, "frozen parameter has no gradient")
  check.truthy(m:param("bert.embeddings.position_embeddings.weight"):grad(), "a trainable neighbour has one")
end

function T.train_eval_and_layer_flags()
  local m = pft.load_model(TINY, { head = "seqcls", num_labels = 3 })
  local b = fixture_batch(m)
  check.eq(m:is_training(), false, "a loaded model starts in eval mode")
  local _, _, a = m:forward(b)
  local _, _, a2 = m:forward(b)
  check.eq(max_diff(a, a2), 0, "eval is deterministic")
  check.eq(m:train(), m, "train returns the model")
  local _, _, t = m:forward(b)
  check.truthy(max_diff(a, t) > 0, "dropout changes the logits in training mode")
  for i = 0, m:num_layers() - 1 do m:set_layer_training(i, false) end
  m:set_embeddings_training(false)
  m:set_head_training(false)
  local _, _, f = m:forward(b)
  check.eq(max_diff(a, f), 0, "every part frozen in eval mode: same as eval")
  m:eval()
  check.raises(function() m:set_layer_training(2, true) end, "layer 2 out of range [0, 2)")
  check.raises(function() m:set_layer_training(0, 1) end, "boolean expected")
end

function T.export_round_trip()
  local m = pft.load_model(TINY, { head = "seqcls", num_labels = 3 })
  local dir = tmpdir()
  m:export(dir, { labels = { "a", "b", "c" } })
  local cfg = read_json(dir .. "/config.json")
  check.eq(cfg.architectures[1], "BertForSequenceClassification", "architectures")
  check.eq(cfg.id2label["0"], "a", "id2label 0")
  check.eq(cfg.id2label["2"], "c", "id2label 2")
  check.eq(cfg.label2id.b, 1, "label2id")
  check.eq(cfg.problem_type, "single_label_classification", "problem_type")
  check.eq(cfg.hidden_size, 32, "source config kept")
  for _, f in ipairs({ "model.safetensors", "vocab.txt", "tokenizer_config.json" }) do
    check.truthy(io.open(dir .. "/" .. f), f .. " exported")
  end
  local r = pft.load_model(dir)
  check.eq(r:config().head, "seqcls", "head restored from architectures")
  check.eq(r:config().num_labels, 3, "num_labels restored from id2label")
  check.eq(table.concat(r.labels, ","), "a,b,c", "labels restored")
  local _, _, l1 = m:forward(fixture_batch(m))
  local _, _, l2 = r:forward(fixture_batch(r))
  check.eq(max_diff(l1, l2), 0, "reloaded logits bit for bit")
  check.eq(r:load_weights(dir .. "/model.safetensors"), true, "the export holds the head")
  check.eq(r:load_weights(TINY .. "/model.safetensors"), true, "back to the fixture's weights")
  rmdir(dir)
end

-- a safetensors file's header (decoded) and its data section, read raw
local function read_safetensors_raw(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  local n = 0
  for i = 8, 1, -1 do n = n * 256 + s:byte(i) end
  return cjson.decode(s:sub(9, 8 + n)), s:sub(9 + n)
end

local function read_bytes(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- deep equality of decoded JSON values; returns nil or the path of the first difference
local function json_diff(a, b, path)
  if type(a) ~= type(b) then return path end
  if type(a) ~= "table" then return a ~= b and path or nil end
  for k, v in pairs(a) do
    local d = json_diff(v, b[k], path .. "." .. tostring(k))
    if d then return d end
  end
  for k in pairs(b) do if a[k] == nil then return path .. "." .. tostring(k) end end
  return nil
end

-- A fresh export of tiny_seqcls must be the snapshot that transformers loaded to write roundtrip.json
-- (tests/fixtures/bert/export_seqcls/README.md), and pft's logits on it must be transformers' logits
-- there: a change to the exporter fails here until the snapshot and roundtrip.json are regenerated.
-- The three exports transformers loaded (tests/fixtures/bert/export_*/, written by the commands in
-- export_seqcls/README.md): the model each comes from, how pft loads and exports it, what transformers
-- made of the snapshot (roundtrip*.json), and the architecture, problem type and labels it must say.
local EXPORTS = {
  { snap = "export_seqcls", from = "tiny_seqcls", load = { head = "seqcls", num_labels = 3 }, labels = { "a", "b", "c" },
    json = "roundtrip.json", arch = "BertForSequenceClassification", problem = "single_label_classification" },
  { snap = "export_regression", from = "tiny_regression", load = { head = "seqcls", num_labels = 1 },
    json = "roundtrip_regression.json", arch = "BertForSequenceClassification", problem = "regression" },
  { snap = "export_tokcls", from = "tiny_tokcls", load = { head = "tokcls", num_labels = 5 },
    labels = { "O", "B-PER", "I-PER", "B-LOC", "I-LOC" }, json = "roundtrip_tokcls.json",
    arch = "BertForTokenClassification", problem = nil },
}

-- A fresh export equals its snapshot: tensor names, dtypes, shapes and bytes, safetensors metadata,
-- config.json as JSON, the tokenizer files byte for byte. Returns the number of tensors.
local function export_equals_snapshot(dir, snap)
  local h1, d1 = read_safetensors_raw(dir .. "/model.safetensors")
  local h2, d2 = read_safetensors_raw(snap .. "/model.safetensors")
  local names, snap_names = {}, {}
  for k in pairs(h1) do if k ~= "__metadata__" then names[#names + 1] = k end end
  for k in pairs(h2) do if k ~= "__metadata__" then snap_names[#snap_names + 1] = k end end
  table.sort(names)
  table.sort(snap_names)
  check.eq(table.concat(names, " "), table.concat(snap_names, " "), snap .. ": exported tensor names vs the snapshot's")
  check.eq(json_diff(h1.__metadata__, h2.__metadata__, "__metadata__"), nil, snap .. ": safetensors metadata differs at")
  for _, k in ipairs(names) do
    local a, b = h1[k], h2[k]
    check.eq(a.dtype, b.dtype, k .. " dtype")
    check.eq(table.concat(a.shape, ","), table.concat(b.shape, ","), k .. " shape")
    local ba = d1:sub(a.data_offsets[1] + 1, a.data_offsets[2])
    local bb = d2:sub(b.data_offsets[1] + 1, b.data_offsets[2])
    check.eq(#ba, #bb, k .. " byte count")
    check.truthy(ba == bb, k .. ": exported bytes equal the snapshot's")
  end
  local cd = json_diff(read_json(dir .. "/config.json"), read_json(snap .. "/config.json"), "config")
  check.eq(cd, nil, snap .. ": exported config.json differs from the snapshot's at")
  for _, f in ipairs({ "vocab.txt", "tokenizer_config.json" }) do
    check.truthy(read_bytes(dir .. "/" .. f) == read_bytes(snap .. "/" .. f), f .. ": exported bytes equal the snapshot's")
  end
  return #names
end

-- Each fresh export must be the snapshot that transformers loaded, and pft's logits on it must be
-- transformers' there: a change to the exporter fails here until the snapshots and roundtrip*.json are
-- regenerated (export_seqcls/README.md).
function T.transformers_loads_the_export()
  for _, c in ipairs(EXPORTS) do
    local m = pft.load_model(FIX .. "/" .. c.from, c.load)
    local dir = tmpdir()
    m:export(dir, c.labels and { labels = c.labels } or nil)
    local n = export_equals_snapshot(dir, FIX .. "/" .. c.snap)
    local rt = read_json(FIX .. "/" .. c.json)
    check.eq(rt.ok, true, c.json .. " ok")
    check.eq(rt.architecture, c.arch, c.snap .. ": the class transformers built")
    check.eq(rt.problem_type, c.problem or cjson.null, c.snap .. ": problem_type as transformers read it")
    check.eq(rt.num_labels, c.load.num_labels, c.snap .. ": num_labels")
    for i, l in ipairs(c.labels or {}) do check.eq(rt.id2label[tostring(i - 1)], l, c.snap .. ": id2label " .. (i - 1)) end
    check.eq(table.concat(rt.tokenizer_ids, " "), "2 42 43 3", "transformers' tokenizer on the exported vocab")
    local r = pft.load_model(dir)
    check.eq(r.head, c.load.head, c.snap .. ": the head pft reads back")
    local _, _, logits = r:forward(fixture_batch(r))
    local want = pft.tensor(rt.logits)
    -- observed 1.2e-7 (seqcls), 9e-8 (regression), 4.8e-7 (tokcls, real tokens)
    local mask = pft.read_safetensors(FIX .. "/tiny_seqcls/expected.safetensors").attention_mask -- the batch's
    local d = c.load.head == "tokcls" and near_masked(logits, want, mask, 2e-6, c.snap .. ": logits")
      or near_tensor(logits, want, 1.5e-6, c.snap .. ": pft on the fresh export vs transformers on the snapshot")
    print(("  export round trip %s: %d tensors as in the snapshot; transformers %s logits vs pft max |diff| %.3g"):format(
      c.snap, n, rt.transformers, d))
    rmdir(dir)
  end
end

function T.bare_model_and_fresh_model()
  local m = pft.core.bert_load(TINY, "none")
  local h, pooled, logits = m:forward(pft.core.tokenizer_load(TINY):encode_batch({ "hello world" }))
  check.eq(logits, nil, "no head, no logits")
  check.eq(#h:shape(), 3, "hidden")
  check.truthy(pooled, "pooled")
  check.raises(function() m:loss(h, { 0 }) end, "no task head")
  check.eq(m:load_weights(TINY .. "/model.safetensors"), false, "a bare model loads no head")
  local n = pft.core.bert_new(m:config(), "seqcls", 2)
  check.eq(#n:params(), 41, "fresh model parameters")
  check.eq(pft.core.bert_new(TINY, "tokcls", 4):config().num_labels, 4, "fresh model from a directory")
  check.raises(function() pft.core.bert_new({ hidden_size = 32, bogus = 1 }) end, "unknown config key 'bogus'")
end

function T.errors()
  local dir = tmpdir()
  check.raises(function() pft.load_model(dir) end, dir .. "/config.json")
  local f = assert(io.open(dir .. "/config.json", "w"))
  f:write('{"model_type": "gpt2", "vocab_size": 10}')
  f:close()
  check.raises(function() pft.core.bert_load(dir, "none") end, 'model_type "gpt2" is not supported')
  rmdir(dir)
  local err = check.raises(function() pft.model.resolve("no-such-model-xyz") end, "unknown model 'no-such-model-xyz'")
  check.truthy(err:find("Available:", 1, true) and err:find("pass the path", 1, true), "lists what is available: " .. err)
  check.raises(function() pft.load_model(TINY, { heads = "seqcls" }) end, "unknown option 'heads'")
  check.raises(function() pft.load_model(TINY, { head = "lm" }) end, "head must be")
  check.raises(function() pft.core.bert_load(TINY, "lm") end, "invalid option 'lm'")
  check.raises(function() pft.core.bert_load(TINY, "seqcls", 0) end, "num_labels must be >= 1")
  check.raises(function() pft.core.bert_load({}) end, "string expected, got table")
  local m = pft.load_model(TINY, { head = "seqcls", num_labels = 3 })
  check.raises(function() m:forward({}) end, "pft.Batch expected")
  local _, _, logits = m:forward(fixture_batch(m))
  check.raises(function() m:loss(logits, { 0, 1 }) end, "2 labels for 4 rows")
  check.raises(function() m:loss(logits, { 0, 1, 3, 0 }) end, "label 3 is 3")
  check.raises(function() m:loss(logits, { 0, 1, "x", 0 }) end, "label 3 is a string")
  check.raises(function() m:loss("x", { 0 }) end, "pft.Tensor expected")
  local b = fixture_batch(m)
  b:free()
  check.raises(function() m:forward(b) end, "batch is empty")
  m.bert:free()
  check.raises(function() m:forward(fixture_batch(m)) end, "model used after free")
end

function T.no_leaks()
  local before = pft.live_tensors()
  do
    local m = pft.load_model(TINY, { head = "seqcls", num_labels = 3 })
    m:train()
    local _, _, logits = m:forward(fixture_batch(m))
    m:loss(logits, { 0, 2, 1, 2 }):backward()
    local ps = m:params()
    check.truthy(#ps == 41 and pft.live_tensors() > before, "model alive")
  end
  collectgarbage("collect")
  collectgarbage("collect")
  check.eq(pft.live_tensors(), before, "live tensors after the model is collected")
end

return T
