-- docs/examples/spirals.lua must train to >= 95% training accuracy.
local check = require "check"

local T = {}

function T.spirals_reach_95_percent()
  local spirals = dofile(TEST_ROOT .. "/docs/examples/spirals.lua")
  local r = spirals.run({ every = false })
  check.truthy(r.accuracy >= 0.95, ("training accuracy %.3f >= 0.95 (loss %.4f)"):format(r.accuracy, r.loss))
  print(("  spirals: accuracy %.3f, loss %.4f, %.1f s CPU (reported, not asserted: timings are not tests)"):format(
    r.accuracy, r.loss, r.seconds))
end

return T
