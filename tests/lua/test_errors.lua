-- Failures in C become Lua errors with the core's message, at the caller's position; misuse of the
-- binding raises luaL_argerror-style messages.
local pft = require "pft"
local check = require "check"

local T = {}

function T.shape_mismatch_names_op_and_shapes()
  local a, b = pft.zeros({ 2, 3 }), pft.zeros({ 4, 5 })
  local err = check.raises(function() local _ = pft.add(a, b) end, "add: shapes [2, 3] and [4, 5] do not broadcast")
  check.truthy(err:find("test_errors.lua:%d+: add:"), "error carries the caller's file:line: " .. err)
  check.raises(function() local _ = a + b end, "add: shapes [2, 3] and [4, 5]")
  check.raises(function() local _ = a:mul(b) end, "mul: shapes [2, 3] and [4, 5]")
end

function T.matmul_inner_dims()
  check.raises(function() local _ = pft.matmul(pft.zeros({ 2, 3 }), pft.zeros({ 2, 3 })) end, "matmul: inner dims differ: [2, 3] x [2, 3]")
end

function T.wrong_argument_types()
  check.raises(function() local _ = pft.add(1, "x") end, "bad argument #2 to 'add' (pft.Tensor expected, got string)")
  check.raises(function() local _ = pft.add(1, 2) end, "bad argument #1 to 'add' (pft.Tensor expected, got number)")
  check.raises(function() local _ = pft.matmul(pft.zeros({ 1 }), {}) end, "bad argument #2 to 'matmul' (pft.Tensor expected, got table)")
  check.raises(function() local _ = pft.zeros("x") end, "bad argument #1 to 'zeros' (table expected, got string)")
  check.raises(function() local _ = pft.tanh(nil) end, "bad argument #1 to 'tanh' (pft.Tensor expected, got nil)")
end

function T.use_after_free()
  local t = pft.zeros({ 2 })
  t:free()
  t:free() -- a second free is a no-op
  check.raises(function() local _ = t:numel() end, "tensor used after free")
  check.raises(function() local _ = pft.add(t, t) end, "bad argument #1 to 'add' (tensor used after free)")
end

function T.allocation_failure_is_an_error()
  check.raises(function() local _ = pft.zeros({ 2 ^ 40, 2 ^ 30 }) end, "cannot allocate a tensor of shape [1099511627776, 1073741824]")
  check.raises(function() local _ = pft.zeros({ 2 ^ 20, 2 ^ 20, 2 ^ 10 }) end, "cannot allocate")
  pft.fail_alloc_after(0)
  local ok, err = pcall(pft.zeros, { 3 })
  pft.fail_alloc_after(-1)
  check.eq(ok, false, "simulated failure raised")
  check.truthy(tostring(err):find("out of memory (simulated)", 1, true), tostring(err))
  check.eq(pft.zeros({ 3 }):numel(), 3, "allocations work again")
end

function T.errors_do_not_leak()
  local a, b = pft.zeros({ 2, 3 }), pft.zeros({ 4, 5 })
  collectgarbage("collect")
  local before = pft.live_tensors()
  for _ = 1, 50 do pcall(pft.add, a, b) end
  collectgarbage("collect")
  collectgarbage("collect")
  check.eq(pft.live_tensors(), before, "live tensors after 50 failed ops")
end

return T
