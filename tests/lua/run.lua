-- The Lua test runner: `build/pft tests/lua/run.lua [files...]` or `luajit tests/lua/run.lua [files...]`.
-- Each tests/lua/test_*.lua returns a table of named test functions; they run in name order, each
-- with the core seeded (seed printed), and each must leave no tensor alive after two full collections.
-- Prints a FAIL line per failure and ends with `lua: N passed, N failed`; exits non-zero on a failure.
local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local root = script_dir .. "/../.."

package.path = script_dir .. "/?.lua;" .. package.path
if not package.preload["pft.core"] then -- plain luajit: use the build tree
  package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
  package.cpath = root .. "/build/lib/?.so;" .. package.cpath
end

local pft = require "pft"
local SEED = tonumber(os.getenv("PFT_TEST_SEED") or "") or 1234

-- what tests may read: the repo root and the host binary, for tests that run build/pft
TEST_ROOT, TEST_PFT = root, root .. "/build/pft"

local files = {}
for i = 1, #arg do files[#files + 1] = arg[i] end
if #files == 0 then
  local p = io.popen('ls "' .. script_dir .. '"/test_*.lua 2>/dev/null')
  for line in p:lines() do files[#files + 1] = line end
  p:close()
end

print(("lua tests: %d files, seed %d, %s"):format(#files, SEED, jit and jit.version or _VERSION))
local passed, failed = 0, 0

-- Compiled traces can keep a test's last objects reachable (as trace constants) after it returns, and a
-- later collection then frees them inside another test, which the live-tensor count would blame: flush
-- the traces before counting. Each test also runs in a coroutine of its own, whose stack dies with it.
local function full_gc()
  if jit then jit.flush() end
  collectgarbage("collect")
  collectgarbage("collect")
end

local function run_one(file, name, fn)
  pft.seed(SEED)
  full_gc()
  local before = pft.live_tensors()
  local co = coroutine.create(function()
    return xpcall(fn, function(e)
      if os.getenv("PFT_TRACEBACK") == "1" then return debug.traceback(tostring(e), 2) end
      return tostring(e)
    end)
  end)
  local resumed, ok, err = coroutine.resume(co)
  if not resumed then ok, err = false, tostring(ok) end
  co = nil
  full_gc()
  local leaked = pft.live_tensors() - before
  if ok and leaked ~= 0 then ok, err = false, ("%d tensors still alive after the test"):format(leaked) end
  if ok then
    passed = passed + 1
  else
    failed = failed + 1
    print(("FAIL %s %s: %s"):format(file, name, err))
  end
end

for _, file in ipairs(files) do
  local chunk, lerr = loadfile(file)
  local ok, tests = false, lerr
  if chunk then ok, tests = pcall(chunk) end
  if not ok or type(tests) ~= "table" then
    failed = failed + 1
    print(("FAIL %s: cannot load: %s"):format(file, tostring(ok and "it did not return a table of tests" or tests)))
  else
    local names = {}
    for name in pairs(tests) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do run_one(file, name, tests[name]) end
  end
end

print(("lua: %d passed, %d failed"):format(passed, failed))
os.exit(failed == 0 and 0 or 1)
