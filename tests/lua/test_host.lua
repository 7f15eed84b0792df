-- The host binary build/pft: version, exit codes, error positions, arg, subcommand dispatch.
local check = require "check"

local T = {}

local function tmpfile(text)
  local name = os.tmpname() .. ".lua"
  local f = assert(io.open(name, "w"))
  f:write(text)
  f:close()
  return name
end

-- Runs build/pft (env: a prefix like VAR=1) with a shell-quoted argument string; returns its output (stdout and stderr) and exit code.
local function pft_run(args, env)
  local marker = "__pft_exit_code="
  local p = assert(io.popen(("%s %q %s 2>&1; echo %s$?"):format(env or "", TEST_PFT, args, marker)))
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match(marker .. "(%d+)%s*$"))
  return out:gsub(marker .. "%d+%s*$", ""), code
end

function T.version()
  local out, code = pft_run("--version")
  check.eq(code, 0, "exit code")
  check.truthy(out:match("^pft 0%.1%.0 %(LuaJIT 2"), out)
end

function T.help_documents_exit_codes()
  local out, code = pft_run("--help")
  check.eq(code, 0, "exit code")
  check.truthy(out:find("exit status", 1, true) and out:find("2  usage error", 1, true), out)
end

function T.missing_script()
  local out, code = pft_run("missing.lua")
  check.eq(code, 2, "exit code")
  check.eq(out, "pft: cannot open missing.lua\n", "message")
end

function T.unknown_option_and_command()
  local out, code = pft_run("--frobnicate")
  check.eq(code, 2, "unknown option: exit code")
  check.truthy(out:find("unknown option '--frobnicate'", 1, true), out)
  out, code = pft_run("frobnicate")
  check.eq(code, 2, "unknown command: exit code")
  check.truthy(out:find("'frobnicate' is neither a command nor a file", 1, true), out)
end

function T.syntax_error()
  local name = tmpfile("local x = 1\nlocal y = = 2\n")
  local out, code = pft_run(("%q"):format(name))
  os.remove(name)
  check.eq(code, 3, "exit code")
  check.truthy(out:find(name .. ":2:", 1, true), out)
end

function T.runtime_error_position()
  local name = tmpfile("local a = pft.zeros({2, 3})\n\nlocal b = a + pft.zeros({4, 5})\n")
  local out, code = pft_run(("%q"):format(name))
  check.eq(code, 1, "exit code")
  check.eq(out, name .. ":3: add: shapes [2, 3] and [4, 5] do not broadcast\n", "message")
  out, code = pft_run(("%q"):format(name), "PFT_TRACEBACK=1")
  os.remove(name)
  check.truthy(out:find("stack traceback", 1, true), "traceback with PFT_TRACEBACK=1: " .. out)
end

function T.script_arguments()
  local name = tmpfile("print(arg[0] == ..., arg[1], arg[2], select('#', ...), type(pft), type(require 'cjson'))\n")
  local out, code = pft_run(("%q one two"):format(name))
  os.remove(name)
  check.eq(code, 0, "exit code")
  check.eq(out, "false\tone\ttwo\t2\ttable\ttable\n", "arg, ..., global pft, lua-cjson found")
end

function T.inline_chunk()
  local out, code = pft_run("-e 'print(pft.version, pft.tensor({1, 2}):sum_all():item())'")
  check.eq(code, 0, "exit code")
  check.eq(out, "0.1.0\t3\n", "output")
end

-- The heap on transparent huge pages (core/hugepages.h): the host runs itself again with glibc's tunable
-- set, once, where the kernel's THP mode lets a program ask (madvise or always); the heap holding a 24 MB
-- tensor is then advised for huge pages. PFT_HUGEPAGES=0 and a tunable the user set are left alone.
function T.heap_on_huge_pages()
  local f = io.open("/sys/kernel/mm/transparent_hugepage/enabled")
  local mode = f and f:read("*l") or ""
  if f then f:close() end
  local askable = mode:find("[madvise]", 1, true) or mode:find("[always]", 1, true)
  local name = tmpfile([[
local t = pft.zeros({4096, 1536})
pft.fill_(t, 1)
-- eligible (the mapping advised), not AnonHugePages: whether the kernel found free huge pages at the
-- fault depends on the machine's memory, the advice does not
local smaps = io.open("/proc/self/smaps"):read("*a")
print(os.getenv("GLIBC_TUNABLES"), smaps:find("THPeligible:%s*1") ~= nil)
]])
  local out, code = pft_run(("%q"):format(name), "env -u GLIBC_TUNABLES")
  check.eq(code, 0, "exit code: " .. out)
  if askable then
    check.eq(out, "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1099511627776\ttrue\n",
             "tunables set (huge pages, the heap's thresholds), the heap advised (THP " .. mode .. ")")
  else
    check.eq(out, "nil\tfalse\n", "THP mode " .. mode .. ": left alone")
  end
  out = pft_run(("%q"):format(name), "env -u GLIBC_TUNABLES PFT_HUGEPAGES=0")
  check.truthy(out:match("^nil\t"), "PFT_HUGEPAGES=0: no tunable: " .. out)
  if mode:find("[madvise]", 1, true) then check.eq(out, "nil\tfalse\n", "PFT_HUGEPAGES=0: nothing advised") end
  out = pft_run(("%q"):format(name), "GLIBC_TUNABLES=glibc.malloc.arena_max=2")
  check.truthy(out:match(askable and "^glibc%.malloc%.arena_max=2:glibc%.malloc%.hugetlb=1:glibc%.malloc%.mmap_threshold=33554432:" or "^glibc%.malloc%.arena_max=2\t"),
               "the user's tunables kept: " .. out)
  out = pft_run(("%q"):format(name), "GLIBC_TUNABLES=glibc.malloc.hugetlb=0")
  os.remove(name)
  check.truthy(out:match("^glibc%.malloc%.hugetlb=0\t"), "the user's own hugetlb setting wins: " .. out)
  if mode:find("[madvise]", 1, true) then check.eq(out, "glibc.malloc.hugetlb=0\tfalse\n", "and nothing advised") end
end

-- Under valgrind the host stays in its process (an exec would leave valgrind: "You cannot run 'build/pft'
-- directly" before this was handled)
function T.valgrind_keeps_the_process()
  if not os.execute("command -v valgrind >/dev/null 2>&1") then return end -- not installed: nothing to check
  local out, code = pft_run("-e 'print(os.getenv(\"GLIBC_TUNABLES\"), 1 + 1)'", "env -u GLIBC_TUNABLES valgrind -q")
  check.eq(code, 0, "exit code under valgrind: " .. out)
  check.eq(out, "nil\t2\n", "ran under valgrind, no tunable set")
end

return T
