-- The recipe sandbox: bytecode refused by every loader, subcommands that files in the current directory
-- cannot hijack, an instruction budget and a memory ceiling on recipe code (docs/recipes.md, "Threat model").
local R = require "pft.recipe"
local PFT = R.abspath(TEST_PFT)
local check = require "check"

local T = {}

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. sh_quote(d)) == 0)
  return d
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

-- Runs build/pft in dir with a shell-quoted argument string: output (stdout + stderr), exit code.
local function pft_in(dir, args)
  local marker = "__pft_exit_code="
  local p = assert(io.popen(("cd %s && %s %s 2>&1; echo %s$?"):format(sh_quote(dir), sh_quote(PFT), args, marker)))
  local out = p:read("*a")
  p:close()
  return out:gsub(marker .. "%d+%s*$", ""), tonumber(out:match(marker .. "(%d+)%s*$"))
end

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  check.eq(ok, false, "raised")
  return type(e) == "table" and e.msg or tostring(e)
end

local function has(s, needle, what) check.truthy(s:find(needle, 1, true), (what or "text") .. ": " .. s .. " lacks " .. needle) end

-- A real LuaJIT bytecode chunk that returns a valid recipe table: accepted, it would run unchecked code.
local function bytecode_recipe()
  return string.dump(function() return { name = "bc", train = { epochs = 1 } } end)
end

function T.bytecode_is_refused_as_a_recipe_a_base_and_a_run_recipe()
  local d = tmpdir()
  write(d .. "/bc.lua", bytecode_recipe())
  has(err_of(R.load, d .. "/bc.lua"), "precompiled (bytecode) chunk is not accepted", "as a recipe")
  write(d .. "/child.lua", 'return { base = "bc.lua" }\n')
  has(err_of(R.load, d .. "/child.lua"), "bc.lua: a precompiled (bytecode) chunk", "as a base")
  has(err_of(R.run_source, bytecode_recipe(), "x.lua"), "x.lua: a precompiled", "R.run_source")
  -- a run directory whose recipe.lua is bytecode: --resume, eval and predict load it
  local run = d .. "/run"
  os.execute("mkdir -p " .. sh_quote(run .. "/model"))
  write(run .. "/recipe.lua", bytecode_recipe())
  local out, code = pft_in(d, "train --resume run")
  check.eq(code, 1, "--resume: exit code")
  has(out, "precompiled (bytecode) chunk", "--resume")
  local Tr = require "pft.train"
  has(err_of(Tr.evaluate, run, { path = d .. "/x.tsv" }), "run/recipe.lua: a precompiled", "eval")
  has(err_of(Tr.predict, run, d .. "/x.txt"), "run/recipe.lua: a precompiled", "predict")
  os.execute("rm -rf " .. sh_quote(d))
end

function T.text_recipes_still_load()
  local t = R.run_source("return { name = 'ok', train = { epochs = 2 } }", "ok.lua")
  check.eq(t.train.epochs, 2, "a text chunk runs")
  check.eq(R.run_source("return { s = string.dump }", "d.lua").s, nil, "no string.dump in the sandbox")
end

function T.a_file_named_like_a_command_does_not_hijack_it()
  local d = tmpdir()
  -- a script called `validate` (and a folder called `train`) in the current directory
  write(d .. "/validate", 'io.open("' .. d .. '/hijacked", "w"):close()\n')
  os.execute("mkdir -p " .. sh_quote(d .. "/train"))
  local out, code = pft_in(d, "validate " .. sh_quote(R.abspath(TEST_ROOT .. "/recipes/sst2-head.lua")))
  check.eq(exists(d .. "/hijacked"), false, "the file `validate` did not run: " .. out)
  check.truthy(code == 0 and out:find("recipe  sst2-head", 1, true), "the validate command ran: " .. out)
  out, code = pft_in(d, "train")
  check.eq(code, 2, "the train command ran (usage error), not the folder: " .. out)
  has(out, "train: missing RECIPE", "train command")
  -- a path runs the script
  out, code = pft_in(d, "./validate")
  check.eq(code, 0, "./validate runs the file: " .. out)
  check.eq(exists(d .. "/hijacked"), true, "./validate ran")
  os.execute("rm -rf " .. sh_quote(d))
end

function T.the_current_directory_is_not_on_the_module_path()
  local d = tmpdir()
  write(d .. "/cjson.lua", 'io.open("' .. d .. '/hijacked", "w"):close() return {}\n')
  local out, code = pft_in(d, "-e " .. sh_quote("print(package.path:find('./?', 1, true), package.cpath:find('./?', 1, true)); require 'cjson'"))
  check.eq(code, 0, out)
  check.eq(out, "nil\tnil\n", "no ./ templates")
  check.eq(exists(d .. "/hijacked"), false, "cjson.lua in the current directory not loaded")
  os.execute("rm -rf " .. sh_quote(d))
end

function T.an_endless_loop_hits_the_instruction_budget()
  local t0 = os.clock()
  local e = err_of(R.run_source, "local n = 0\nwhile true do n = n + 1 end\n", "loop.lua")
  has(e, "loop.lua: the recipe ran past its budget of", "budget")
  check.truthy(os.clock() - t0 < 20, "stopped in time")
  -- a loop inside a function the recipe defines, called later (data.preprocess runs per row)
  local t = R.run_source("return { data = { preprocess = function(r) while true do end end } }", "pre.lua")
  has(err_of(t.data.preprocess, {}), "pre.lua: the recipe ran past its budget", "a recipe function")
  -- the hook is gone afterwards: ordinary code runs unlimited
  local n = 0
  for i = 1, 2 * R.INSTRUCTION_BUDGET / 10 do n = n + i end
  check.truthy(debug.gethook() == nil, "no hook left behind")
end

function T.memory_bombs_hit_the_ceiling()
  has(err_of(R.run_source, "return { s = string.rep('x', 2^40) }", "rep.lua"), "over the recipe memory ceiling", "string.rep")
  -- the method form reaches the real string.rep: one call of up to LuaJIT's 2 GiB string limit, then the
  -- ceiling (checked again when the recipe returns)
  has(err_of(R.run_source, "return { s = ('x'):rep(2^29) }", "rep2.lua"), "rep2.lua: the recipe used more than", "method form")
  local e = err_of(R.run_source, "local t = {}\nfor i = 1, 1e9 do t[i] = {i, i, i, i} end\n", "tables.lua")
  has(e, "tables.lua: the recipe used more than the recipe memory ceiling", "tables")
  e = err_of(R.run_source, "local s = 'xx'\nwhile true do s = s .. s end\n", "double.lua")
  has(e, "double.lua: the recipe used more than the recipe memory ceiling", "doubling string")
  collectgarbage()
end

function T.pft_validate_names_the_file_of_an_endless_recipe()
  local d = tmpdir()
  write(d .. "/spin.lua", "while true do end\nreturn {}\n")
  local out, code = pft_in(d, "validate spin.lua")
  check.eq(code, 1, "exit code: " .. out)
  has(out, "spin.lua: the recipe ran past its budget", "message")
  os.execute("rm -rf " .. sh_quote(d))
end

return T
