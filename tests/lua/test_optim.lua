-- Optimizers from Lua: groups, settings, lr changes, errors.
local pft = require "pft"
local check = require "check"

local T = {}

function T.sgd_step_follows_the_gradient()
  local p = pft.tensor({ 1, 2 }):requires_grad(true)
  local opt = pft.sgd({ p }, { lr = 0.5, momentum = 0, weight_decay = 0 })
  pft.sum_all(p * p):backward() -- grad 2p
  opt:step()
  check.all_near(p:flat(), { 0, 0 }, 1e-6, "p - 0.5 * 2p")
  opt:zero_grad()
  check.all_near(p:grad():flat(), { 0, 0 }, 0, "zero_grad")
end

function T.adamw_reduces_a_loss()
  local p = pft.tensor({ 3, -2 }):requires_grad(true)
  local opt = pft.adamw({ { params = { p }, lr = 0.1, weight_decay = 0 } })
  local first
  for i = 1, 100 do
    opt:zero_grad()
    local l = pft.sum_all(p * p)
    if i == 1 then first = l:item() end
    l:backward()
    opt:step()
  end
  check.truthy(pft.sum_all(p * p):item() < first / 10, "loss fell tenfold")
  check.truthy(opt:state_bytes() >= 2 * 2 * 4, "m and v allocated")
  check.eq(opt:has_state(p), true, "has_state")
end

function T.groups_and_learning_rates()
  local a, b, frozen = pft.zeros({ 2 }):requires_grad(true), pft.zeros({ 3 }):requires_grad(true), pft.zeros({ 4 })
  local opt = pft.adamw({ { params = { a }, lr = 1e-3 }, { params = { b, frozen }, weight_decay = 0 } }, { lr = 5e-4 })
  check.eq(opt:groups(), 2, "two groups")
  check.near(opt:lr(1), 1e-3, 1e-12, "group 1 lr")
  check.near(opt:lr(2), 5e-4, 1e-12, "group 2 takes the default")
  opt:set_lr(2, 1e-5)
  check.near(opt:lr(2), 1e-5, 1e-12, "set_lr")
  check.raises(function() opt:set_lr(3, 1) end, "adamw: group 3 out of range (the optimizer has 2)")
  pft.sum_all(a * 2 + pft.sum_all(b)):backward()
  opt:step()
  check.eq(opt:has_state(frozen), false, "a frozen parameter gets no state")
  check.truthy(tostring(opt):find("pft.Optimizer(adamw, 2 groups)", 1, true), tostring(opt))
end

function T.misuse_raises()
  local p = pft.zeros({ 2 }):requires_grad(true)
  check.raises(function() pft.adamw({ p }, { lr = 1e-3, betas = { 0.9, 0.99 }, lrr = 1 }) end, "adamw: unknown option 'lrr'")
  check.raises(function() pft.sgd({ { params = { p }, foo = 1 } }) end, "sgd: unknown option 'foo' in group 1")
  check.raises(function() pft.sgd({ { params = { p, "x" } } }) end, "sgd: parameter 2 of group 1 is a string, expected pft.Tensor")
  check.raises(function() pft.sgd({ { lr = 1 } }) end, "sgd: group 1 has no 'params' list")
  check.raises(function() pft.adamw({ p }, { lr = -1 }) end, "adamw: option 'lr' must be a finite number >= 0")
  local opt = pft.sgd({ p })
  opt:free()
  check.raises(function() opt:step() end, "optimizer used after free")
end

return T
