-- Autograd through the binding: gradients, backward errors, no_grad, requires_grad.
local pft = require "pft"
local check = require "check"

local T = {}

-- No input features: every output row is the bias (as torch's), not zeros, on either GEMM; its gradient
-- is the rows' count
function T.linear_of_no_features_is_the_bias()
  local x = pft.zeros({ 3, 0 })
  local w = pft.zeros({ 4, 0 }):requires_grad(true)
  local b = pft.tensor({ 1, 2, 3, 4 }):requires_grad(true)
  local y = pft.linear(x, w, b)
  check.all_near(y:totable(), { { 1, 2, 3, 4 }, { 1, 2, 3, 4 }, { 1, 2, 3, 4 } }, 0, "rows of the bias")
  pft.sum_all(y):backward()
  check.all_near(b:grad():flat(), { 3, 3, 3, 3 }, 0, "db")
end

function T.linear_gradients()
  local x = pft.tensor({ { 1, 2 }, { 3, 4 } })
  local w = pft.tensor({ { 1, 0 }, { 0, 1 }, { 1, 1 } }):requires_grad(true)
  local b = pft.zeros({ 3 }):requires_grad(true)
  check.eq(w:grad(), nil, "no gradient before backward")
  local loss = pft.sum_all(pft.linear(x, w, b))
  loss:backward()
  -- d sum(x w^T + b) / dw[o, i] = sum over rows of x[:, i]; / db[o] = rows
  check.all_near(w:grad():totable(), { { 4, 6 }, { 4, 6 }, { 4, 6 } }, 1e-6, "dw")
  check.all_near(b:grad():totable(), { 2, 2, 2 }, 1e-6, "db")
  w:zero_grad()
  check.all_near(w:grad():flat(), { 0, 0, 0, 0, 0, 0 }, 0, "zero_grad")
end

function T.backward_with_explicit_gradient()
  local a = pft.tensor({ 1, 2 }):requires_grad(true)
  local y = a * 3
  y:backward(pft.tensor({ 1, 10 }))
  check.all_near(a:grad():flat(), { 3, 30 }, 1e-6, "da")
end

function T.backward_non_scalar()
  local a = pft.tensor({ 1, 2 }):requires_grad(true)
  local y = a * 2
  check.raises(function() y:backward() end, "backward: the output has shape [2]; backward without a gradient needs a scalar")
end

function T.backward_twice()
  local a = pft.tensor({ 1, 2 }):requires_grad(true)
  local l = pft.sum_all(pft.tanh(a))
  l:backward()
  check.raises(function() l:backward() end, "already released by an earlier backward")
end

function T.backward_without_grad()
  local l = pft.sum_all(pft.tensor({ 1, 2 }))
  check.raises(function() l:backward() end, "backward: the output does not require a gradient")
end

function T.requires_grad_flag()
  local a = pft.zeros({ 2 })
  check.eq(a:requires_grad(), false, "default")
  check.eq(a:requires_grad(true), a, "setter returns the tensor")
  check.eq(a:requires_grad(), true, "set")
  local y = a * 2
  check.eq(y:requires_grad(), true, "propagates to results")
  check.raises(function() y:requires_grad(false) end, "only a leaf tensor's flag can be set")
end

function T.no_grad_records_nothing_and_restores()
  local a = pft.zeros({ 2 }):requires_grad(true)
  local y, extra = pft.no_grad(function(k) return a * 2, k end, "passed")
  check.eq(y:requires_grad(), false, "no tape under no_grad")
  check.eq(extra, "passed", "arguments and results pass through")
  check.eq(pft.grad_enabled(), true, "restored")
  local ok, err = pcall(pft.no_grad, function() error("inside", 0) end)
  check.eq(ok, false, "error propagates")
  check.eq(err, "inside", "the error object is unchanged")
  check.eq(pft.grad_enabled(), true, "restored after an error")
end

function T.stats_count_backward_kernels()
  pft.reset_stats()
  local w = pft.zeros({ 3, 2 }):requires_grad(true)
  pft.sum_all(pft.linear(pft.zeros({ 4, 2 }), w)):backward()
  local s = pft.stats()
  check.truthy(s.backward_kernels >= 1, "backward kernels counted")
  check.truthy(s.live_tensors >= 1, "live tensors reported")
end

return T
