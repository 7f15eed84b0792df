-- Runs one tiny training for tests/lua/test_train.lua in a separate `build/pft` process:
--   build/pft tests/lua/train_driver.lua RUN_DIR [resume] [key=value ...]   (exit status: the run's)
local script_dir = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = script_dir .. "/?.lua;" .. package.path
local fixtures = require "train_fixtures"
local run_dir = arg[1]
local resume = arg[2] == "resume"
local over = {}
for i = resume and 3 or 2, #arg do
  local k, v = arg[i]:match("^([%w_.]+)=(.*)$")
  over[k] = tonumber(v) or v
end
local recipe = fixtures.recipe(script_dir .. "/../..", run_dir, over)
local T = require "pft.train"
local s = T.run(recipe, { resume = resume and run_dir or nil, run_dir = run_dir })
os.exit(s.exit_code)
