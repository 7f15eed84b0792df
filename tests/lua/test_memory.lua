-- Lifetimes: __gc frees exactly once, t:free() frees early, optimizers keep their parameters alive.
local pft = require "pft"
local check = require "check"

local T = {}

local function full_gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

function T.gc_frees_tensors()
  full_gc()
  local base = pft.live_tensors()
  for _ = 1, 2000 do
    local a = pft.randn({ 8, 8 })
    local _ = (a + a):transpose(1, 2)
  end
  full_gc()
  check.eq(pft.live_tensors(), base, "live tensors back to the baseline")
end

function T.free_releases_now()
  local base = pft.live_tensors()
  local t = pft.zeros({ 1000 })
  check.eq(pft.live_tensors(), base + 1, "one more")
  t:free()
  check.eq(pft.live_tensors(), base, "released by free()")
  t = nil
  full_gc() -- __gc after free() must not release again
  check.eq(pft.live_tensors(), base, "not released twice")
end

function T.graph_freed_with_its_output()
  full_gc()
  local base = pft.live_tensors()
  do
    local w = pft.randn({ 4, 4 }):requires_grad(true)
    local h = w
    for _ = 1, 10 do h = pft.tanh(pft.matmul(h, w)) end
    pft.sum_all(h):backward()
  end
  full_gc()
  check.eq(pft.live_tensors(), base, "graph and gradients released")
end

function T.optimizer_keeps_params_alive()
  full_gc()
  local base = pft.live_tensors()
  local opt = pft.sgd({ pft.zeros({ 3 }):requires_grad(true), pft.zeros({ 2 }):requires_grad(true) }, { lr = 0.1 })
  full_gc()
  check.eq(pft.live_tensors(), base + 2, "parameters alive through the optimizer")
  local params = opt:params()
  check.eq(#params, 2, "opt:params()")
  check.eq(params[1]:numel(), 3, "first parameter usable")
  params = nil
  opt = nil
  full_gc()
  check.eq(pft.live_tensors(), base, "released with the optimizer")
end

function T.module_reload_shares_the_context()
  local core = require "pft.core"
  check.eq(core.zeros, pft.zeros, "pft re-exports pft.core")
  check.eq(pft.core, core, "pft.core")
end

return T
