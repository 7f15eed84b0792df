-- check: assertions for the Lua tests (tests/lua/run.lua runs them). Each raises with a message that
-- says what differed; the runner prints it on a FAIL line.
local M = {}

local function fail(msg, level) error(msg, (level or 1) + 2) end

function M.eq(got, want, what)
  if got ~= want then fail(("%s: got %s, want %s"):format(what or "value", tostring(got), tostring(want))) end
end

function M.near(got, want, tol, what)
  tol = tol or 1e-5
  if type(got) ~= "number" or math.abs(got - want) > tol * math.max(1, math.abs(want)) then
    fail(("%s: got %s, want %s (tol %g)"):format(what or "value", tostring(got), tostring(want), tol))
  end
end

-- Compares nested tables of numbers (or numbers) elementwise within tol.
function M.all_near(got, want, tol, what)
  what = what or "table"
  if type(want) == "table" then
    if type(got) ~= "table" then fail(what .. ": got " .. type(got) .. ", want a table") end
    if #got ~= #want then fail(("%s: %d entries, want %d"):format(what, #got, #want)) end
    for i = 1, #want do M.all_near(got[i], want[i], tol, what .. "[" .. i .. "]") end
  else
    M.near(got, want, tol, what)
  end
end

function M.truthy(v, what)
  if not v then fail((what or "condition") .. " is false") end
end

-- Calls fn; it must raise an error whose message contains `needle` (plain text). Returns the message.
function M.raises(fn, needle, what)
  local ok, err = pcall(fn)
  if ok then fail(("%s: no error raised (wanted one containing %q)"):format(what or "call", needle)) end
  err = tostring(err)
  if not err:find(needle, 1, true) then
    fail(("%s: error %q does not contain %q"):format(what or "call", err, needle))
  end
  return err
end

return M
