-- Tensors through the binding: construction, conversion, formatting, views.
local pft = require "pft"
local check = require "check"

local T = {}

function T.construct_nested()
  local t = pft.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
  check.all_near(t:shape(), { 2, 3 }, 0, "shape")
  check.eq(t:numel(), 6, "numel")
  check.eq(t:dim(), 2, "dim")
  check.eq(#t, 2, "#t (first dim)")
  check.eq(t:shape(2), 3, "t:shape(2)")
  check.all_near(t:totable(), { { 1, 2, 3 }, { 4, 5, 6 } }, 0)
  check.all_near(t:flat(), { 1, 2, 3, 4, 5, 6 }, 0)
  check.eq(t:get(2, 1), 4, "get(2, 1)")
  local s = pft.tensor(2.5)
  check.eq(s:dim(), 0, "scalar dim")
  check.eq(s:item(), 2.5, "scalar item")
  check.eq(s:totable(), 2.5, "scalar totable")
end

function T.construct_shapes()
  check.all_near(pft.zeros({ 2, 2 }):flat(), { 0, 0, 0, 0 }, 0)
  check.all_near(pft.zeros(3):flat(), { 0, 0, 0 }, 0, "zeros(3)")
  check.all_near(pft.full({ 3 }, 7):flat(), { 7, 7, 7 }, 0)
  check.all_near(pft.from_table({ 1, 2, 3, 4, 5, 6 }, { 3, 2 }):totable(), { { 1, 2 }, { 3, 4 }, { 5, 6 } }, 0)
  local r = pft.rand({ 1000 }, 2, 3):flat()
  for i = 1, #r do check.truthy(r[i] >= 2 and r[i] < 3, "rand in [2, 3)") end
  local n = pft.randn({ 4000 }, 1, 2):flat()
  local sum = 0
  for i = 1, #n do sum = sum + n[i] end
  check.near(sum / #n, 1, 0.15, "randn mean")
end

function T.seed_makes_random_reproducible()
  pft.seed(99)
  local a = pft.randn({ 5 }):flat()
  pft.seed(99)
  local b = pft.randn({ 5 }):flat()
  check.all_near(a, b, 0, "same seed, same numbers")
end

function T.construct_errors()
  check.raises(function() local _ = pft.tensor({ { 1, 2 }, { 3 } }) end, "tensor: table is not rectangular: [2] has 1 entries, expected 2")
  check.raises(function() local _ = pft.tensor({ { 1, 2 }, { 3, "a" } }) end, "tensor: element [2][2] is a string, expected a number")
  check.raises(function() local _ = pft.tensor({ { 1, 2 }, 3 }) end, "[2] is a number, expected a table")
  check.raises(function() local _ = pft.from_table({ 1, 2, 3 }, { 2, 2 }) end, "from_table: 3 values for shape [2, 2] (4 elements)")
  check.raises(function() local _ = pft.zeros({ 2, 1.5 }) end, "shape entry 2 is not an integer")
  check.raises(function() local _ = pft.zeros({ 2, -1 }) end, "negative size in shape [2, -1]")
  check.raises(function() local _ = pft.tensor({ { 1 } }):get(1, 2) end, "get: index 2 out of range for dim 2 of shape [1, 1]")
  check.raises(function() local _ = pft.zeros({ 2 }):item() end, "item: tensor of shape [2] has 2 elements, expected 1")
end

function T.tostring_format()
  check.eq(tostring(pft.tensor({ { 0.5, 1 }, { 2, 3 } })), "pft.Tensor[2, 2] {0.5, 1, 2, 3}")
  check.eq(tostring(pft.zeros({ 2, 4 })), "pft.Tensor[2, 4] {0, 0, 0, 0, 0, 0, ...}")
  check.eq(tostring(pft.tensor(1.25)), "pft.Tensor[] {1.25}")
  check.eq(tostring(pft.zeros({ 1 }):set_name("bias")), "pft.Tensor[1] 'bias' {0}")
  local t = pft.zeros({ 1 })
  t:free()
  check.eq(tostring(t), "pft.Tensor (freed)")
end

function T.names()
  local t = pft.zeros({ 2 })
  check.eq(t:name(), nil, "no name")
  t:set_name("bert.pooler.dense.bias")
  check.eq(t:name(), "bert.pooler.dense.bias", "name")
end

function T.views_geometry()
  local t = pft.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
  local tt = t:transpose(1, 2)
  check.all_near(tt:totable(), { { 1, 4 }, { 2, 5 }, { 3, 6 } }, 0, "transpose")
  check.eq(tt:is_contiguous(), false, "transpose is a strided view")
  check.eq(tt:contiguous():is_contiguous(), true, "contiguous")
  check.all_near(t:reshape({ 3, 2 }):totable(), { { 1, 2 }, { 3, 4 }, { 5, 6 } }, 0, "reshape")
  check.all_near(t:reshape(-1):totable(), { 1, 2, 3, 4, 5, 6 }, 0, "reshape(-1)")
  check.all_near(t:permute(2, 1):totable(), tt:totable(), 0, "permute")
  check.all_near(t:permute({ 2, 1 }):totable(), tt:totable(), 0, "permute{}")
  check.all_near(t:narrow(2, 2, 2):totable(), { { 2, 3 }, { 5, 6 } }, 0, "narrow is 1-based")
  check.all_near(t:narrow(-1, 3, 1):totable(), { { 3 }, { 6 } }, 0, "narrow on the last dim")
  check.all_near(pft.tensor({ 1, 2 }):reshape(2, 1):expand(2, 3):totable(), { { 1, 1, 1 }, { 2, 2, 2 } }, 0, "expand")
  check.all_near(t:detach():totable(), t:totable(), 0, "detach")
  check.raises(function() local _ = t:narrow(2, 3, 2) end, "narrow: start 3, length 2 out of range for dim 2 of shape [2, 3]")
  check.raises(function() local _ = t:transpose(1, 3) end, "transpose: dim 3 out of range for shape [2, 3]")
  check.raises(function() local _ = t:reshape(4, 2) end, "reshape: cannot view [2, 3]")
end

function T.views_share_storage()
  local t = pft.zeros({ 2, 3 })
  t:narrow(2, 2, 1):fill_(5)              -- writes through a strided view
  check.all_near(t:totable(), { { 0, 5, 0 }, { 0, 5, 0 } }, 0, "fill_ through narrow")
  local d = t:detach()
  d:copy_(pft.full({ 2, 3 }, 1))
  check.all_near(t:flat(), { 1, 1, 1, 1, 1, 1 }, 0, "copy_ into a detached alias")
  local v = t:transpose(1, 2)
  t:free()                                -- the view keeps the storage
  check.all_near(v:totable(), { { 1, 1 }, { 1, 1 }, { 1, 1 } }, 0, "view outlives its base")
end

function T.arithmetic_metamethods()
  local a, b = pft.tensor({ 1, 2 }), pft.tensor({ 10, 20 })
  check.all_near((a + b):flat(), { 11, 22 }, 1e-6, "a + b")
  check.all_near((b - a):flat(), { 9, 18 }, 1e-6, "b - a")
  check.all_near((a * b):flat(), { 10, 40 }, 1e-6, "a * b")
  check.all_near((a * 3):flat(), { 3, 6 }, 1e-6, "a * 3")
  check.all_near((3 * a):flat(), { 3, 6 }, 1e-6, "3 * a")
  check.all_near((a + 1):flat(), { 2, 3 }, 1e-6, "a + 1")
  check.all_near((1 - a):flat(), { 0, -1 }, 1e-6, "1 - a")
  check.all_near((-a):flat(), { -1, -2 }, 1e-6, "-a")
  check.all_near(a:add(b):flat(), pft.add(a, b):flat(), 0, "method and function agree")
  check.all_near(a:scale(0.5):flat(), { 0.5, 1 }, 1e-6, "scale")
end

function T.matmul_linear()
  local x = pft.tensor({ { 1, 2 }, { 3, 4 } })
  local w = pft.tensor({ { 1, 0 }, { 0, 1 }, { 1, 1 } })
  check.all_near(pft.matmul(x, w:transpose(1, 2)):totable(), { { 1, 2, 3 }, { 3, 4, 7 } }, 1e-6, "matmul")
  check.all_near(pft.linear(x, w, pft.tensor({ 1, 1, 1 })):totable(), { { 2, 3, 4 }, { 4, 5, 8 } }, 1e-6, "linear")
  check.all_near(x:linear(w):totable(), { { 1, 2, 3 }, { 3, 4, 7 } }, 1e-6, "linear without bias")
end

function T.reductions_and_losses()
  local t = pft.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
  check.near(t:sum_all():item(), 21, 1e-6, "sum_all")
  check.near(t:mean_all():item(), 3.5, 1e-6, "mean_all")
  check.near(t:sum():item(), 21, 1e-6, "sum() without a dim")
  check.near(pft.mse(t, pft.zeros({ 2, 3 })):item(), 91 / 6, 1e-5, "mse")
  local logits = pft.tensor({ { 0, 0 }, { 0, 0 }, { 5, 0 } })
  check.near(pft.cross_entropy(logits, { 0, 1, -100 }):item(), math.log(2), 1e-5, "cross_entropy ignores -100")
  check.near(pft.cross_entropy(logits, { 0, 1, 7 }, 7):item(), math.log(2), 1e-5, "custom ignore_index")
  check.near(pft.tanh(pft.tensor({ 0.5 })):item(), math.tanh(0.5), 1e-6, "tanh")
  check.raises(function() local _ = pft.cross_entropy(logits, { 0, 1 }) end, "cross_entropy: 2 targets for logits of shape [3, 2]")
  check.raises(function() local _ = pft.cross_entropy(logits, { 0, 1, 0.5 }) end, "cross_entropy: element [3] is 0.5, expected an integer id")
end

function T.dims_are_one_based()
  local t = pft.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
  check.all_near(t:sum(1):totable(), { 5, 7, 9 }, 1e-6, "sum(1)")
  check.all_near(t:sum(2, true):totable(), { { 6 }, { 15 } }, 1e-6, "sum(2, keepdim)")
  check.all_near(t:mean(-1):totable(), { 2, 5 }, 1e-6, "mean(-1)")
  check.raises(function() local _ = t:sum(3) end, "sum: dim 3 out of range for shape [2, 3]")
end

function T.nn_ops()
  local x = pft.tensor({ { 1, 2, 3 } })
  local sm = pft.softmax(x):flat()
  local z = math.exp(1) + math.exp(2) + math.exp(3)
  check.all_near(sm, { math.exp(1) / z, math.exp(2) / z, math.exp(3) / z }, 1e-5, "softmax")
  local masked = pft.softmax(x, pft.tensor({ 0, 0, -1e9 })):flat()
  local e = math.exp(1)
  check.all_near(masked, { 1 / (1 + e), e / (1 + e), 0 }, 1e-5, "softmax with mask")
  local ln = pft.layernorm(x, pft.full({ 3 }, 1), pft.zeros({ 3 }), 0):flat()
  check.all_near(ln, { -math.sqrt(1.5), 0, math.sqrt(1.5) }, 1e-4, "layernorm")
  check.all_near(pft.dropout(x, 0.5, false):flat(), { 1, 2, 3 }, 0, "dropout off in eval")
  local d = pft.dropout(pft.full({ 1000 }, 1), 0.5):flat()
  local zeros = 0
  for i = 1, #d do if d[i] == 0 then zeros = zeros + 1 else check.near(d[i], 2, 1e-6, "kept scaled") end end
  check.truthy(zeros > 400 and zeros < 600, "about half dropped: " .. zeros)
  check.near(pft.gelu(pft.tensor({ 1 })):item(), 0.8413447, 1e-5, "exact gelu")
end

function T.embedding_ids_are_zero_based()
  local w = pft.tensor({ { 0, 0 }, { 1, 1 }, { 2, 2 } })
  local e = pft.embedding(w, { { 2, 0 }, { 1, 1 } })
  check.all_near(e:shape(), { 2, 2, 2 }, 0, "shape [ids..., C]")
  check.all_near(e:totable(), { { { 2, 2 }, { 0, 0 } }, { { 1, 1 }, { 1, 1 } } }, 0, "rows")
  check.raises(function() local _ = pft.embedding(w, { 3 }) end, "embedding")
  check.raises(function() local _ = pft.embedding(w, { 1.5 }) end, "embedding: element [1] is 1.5, expected an integer id")
end

return T
