-- fuzz_recipe.lua - the Lua half of fuzz_recipe.c: every input is tried two ways.
--   1. As a recipe file: R.load(path). A recipe that loads is dumped (R.dump) and the dump must run again
--      in the sandbox (R.run_source) and give back the same table: the same keys and values, except the
--      functions (R.dump writes them as comments) and with false the same as absent (a removed key).
--   2. As one command-line override: R.parse_override(input), and when that parses, R.load of the shipped
--      recipes/sst2-head.lua with it applied.
-- Errors are the expected answer to bad input (syntax errors, sandbox escapes, schema errors, usage
-- errors); only a crash, a sanitizer report, a hang (libFuzzer -timeout) or a broken dump is a finding.
-- The harness lowers the recipe limits (R.INSTRUCTION_BUDGET, R.MEMORY_CEILING_KB) so that an endless
-- loop or a memory bomb costs milliseconds, not seconds: the code that enforces them is the same.
local root, tmpdir = ...
local R = require "pft.recipe"
R.INSTRUCTION_BUDGET = 200000
R.MEMORY_CEILING_KB = 32 * 1024
R.cwd() -- cached now (it runs `pwd` once), not during an input
local shipped = root .. "/recipes/sst2-head.lua"
assert(R.load(shipped)) -- the shipped recipe loads: the base chain, the schema and the paths are set up

local function check(cond, msg, ...)
  if not cond then fuzz_fail(msg:format(...)) end
end

-- nil when a and b hold the same data (functions skipped, false == nil), else the first key path that differs
local function differs(a, b, path)
  if type(a) == "function" or type(b) == "function" then return nil end
  if (a == nil or a == false) and (b == nil or b == false) then return nil end
  if type(a) ~= "table" or type(b) ~= "table" then
    if a == b then return nil end
    return ("%s: %s vs %s"):format(path, tostring(a), tostring(b))
  end
  for k, v in pairs(a) do
    local d = differs(v, b[k], path .. "." .. tostring(k))
    if d then return d end
  end
  for k, v in pairs(b) do
    if a[k] == nil then
      local d = differs(nil, v, path .. "." .. tostring(k))
      if d then return d end
    end
  end
  return nil
end

return function(input, tmpdir)
  local path = tmpdir .. "/recipe.lua"
  local f = assert(io.open(path, "wb"))
  f:write(input)
  f:close()
  local ok, r = fuzz_pcall(R.load, path)
  if ok then
    local src = R.dump(r)
    local ok2, t = fuzz_pcall(R.run_source, src, "dump")
    check(ok2 and type(t) == "table", "R.dump of a loaded recipe does not load again: %s\n%s", tostring(t), src)
    local d = differs(r, t, "recipe")
    check(d == nil, "R.dump round trip changes %s\n%s", tostring(d), src)
  end
  if fuzz_pcall(R.parse_override, input) then fuzz_pcall(R.load, shipped, { input }) end
end
