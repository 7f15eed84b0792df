-- pft.cli: the `pft <command> [args]` dispatch. The host binary (core/pft_main.c) handles options and
-- script files itself and hands anything else here: main(argv) returns the process exit code.
--
--   local cli = require "pft.cli"
--   cli.commands.hello = { summary = "say hello", run = function(args) print("hello") return 0 end }
--
-- A command's run(args) gets the arguments after the command name and returns an exit code (nil = 0).
-- Exit codes: 0 ok, 1 runtime error (raised errors are printed as file:line: message by the binary),
-- 2 usage error.
local M = {}

M.EXIT_OK, M.EXIT_RUNTIME, M.EXIT_USAGE = 0, 1, 2

M.commands = {}

local function command_list()
  local names = {}
  for name in pairs(M.commands) do names[#names + 1] = name end
  table.sort(names)
  return names
end

function M.usage_error(msg)
  io.stderr:write("pft: ", msg, "\n")
  local names = command_list()
  if #names > 0 then
    io.stderr:write("commands: ", table.concat(names, ", "), "\n")
  end
  io.stderr:write("see pft --help\n")
  return M.EXIT_USAGE
end

function M.main(argv)
  local name = argv[1]
  local cmd = M.commands[name]
  if not cmd then
    return M.usage_error(("'%s' is neither a command nor a file"):format(tostring(name)))
  end
  return cmd.run({ select(2, unpack(argv)) }) or M.EXIT_OK
end

return M
