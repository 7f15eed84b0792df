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

local function require_optional(mod, what)
  local ok, m = pcall(require, mod)
  if ok then return m end
  if tostring(m):find("module '" .. mod .. "' not found", 1, true) then
    error(("pft: %s needs %s (lua/%s.lua), which is not available in this build"):format(what, mod, mod:gsub("%.", "/")), 0)
  end
  error(m, 0)
end

local function group3(n)
  local s = ("%d"):format(n)
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end
M.group3 = group3

local function mib(bytes)
  if bytes < 1024 * 1024 then return ("%.1f KiB"):format(bytes / 1024) end
  if bytes < 1024 ^ 3 then return ("%.1f MiB"):format(bytes / 1024 ^ 2) end
  return ("%.2f GiB"):format(bytes / 1024 ^ 3)
end

local function fmt_lr(x) return (("%.2g"):format(x):gsub("e%-0", "e-")) end

local function read_all(path)
  local f, err = io.open(path, "r")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

local function exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

-- ---------------------------------------------------------------------------------------------
-- Model loading and sizes for `validate`

-- Rows in a split, without reading it through pft.data: lines (minus a header), capped by limit.
local function count_rows(split)
  local f = io.open(split.path, "r")
  if not f then error(("data: cannot open %s"):format(split.path), 0) end
  local n = 0
  for line in f:lines() do if line:find("%S") then n = n + 1 end end
  f:close()
  if split.header and split.format ~= "jsonl" then n = math.max(0, n - 1) end
  if split.limit then n = math.min(n, split.limit) end
  return n
end

local function num_labels(r)
  if r.task.kind == "regression" then return 1 end
  if r.task.labels then return #r.task.labels end
  local ok, D = pcall(require, "pft.data")
  if ok and D.label_set then
    local ok2, set = pcall(D.label_set, r.data.train, { task = r.task.kind })
    if ok2 and type(set) == "table" and #set > 0 then return #set end
  end
  return 2
end

local function model_dir(name)
  if exists(name .. "/config.json") then return name end
  local R = require "pft.recipe"
  local env = os.getenv("PFT_MODELS")
  for _, d in ipairs({ env, R.root() .. "/models" }) do
    if d and d ~= "" and exists(d .. "/" .. name .. "/config.json") then return d .. "/" .. name end
  end
  error(("model '%s' not found (a directory with config.json, or a name under models/ or $PFT_MODELS)"):format(name), 0)
end

-- Loads the recipe's model with its head: pft.model when it is there, else the core loader.
function M.load_model(r, k)
  local head = r.task.kind == "token_classification" and "tokcls" or "seqcls"
  local ok, PM = pcall(require, "pft.model")
  if ok and PM.load then return PM.load(r.model.name, { head = head, num_labels = k, labels = r.task.labels }).bert end
  return require("pft.core").bert_load(model_dir(r.model.name), head, k)
end

-- The sizes validate and train agree on: rows, optimizer steps per epoch, total steps.
function M.sizes(r)
  local n = count_rows(r.data.train)
  local batches = math.ceil(n / r.data.batch_size)
  local spe = math.max(1, math.ceil(batches / r.train.grad_accum))
  local total = spe * r.train.epochs
  if r.train.max_steps then total = math.min(total, r.train.max_steps) end
  return { rows = n, steps_per_epoch = spe, total_steps = total, epochs = r.train.epochs }
end

-- The plan as text lines (for `validate`; the trainer may write it as plan.txt).
function M.plan_text(r, info, sched, sizes)
  local S = require "pft.schedule"
  local lines = {}
  local function add(s) lines[#lines + 1] = s end
  local total_params = 0
  for _, n in ipairs(info.names) do total_params = total_params + info.numel[n] end
  local spe = sizes.steps_per_epoch
  local rows = { { "phase", "steps", "epochs", "trainable groups", "params", "optimizer", "change" } }
  local peak_n, peak_b = 0, 0
  for i, ph in ipairs(sched:plan()) do
    local names = {}
    for _, g in ipairs(ph.groups) do names[#names + 1] = g.name end
    local steps, epochs
    if ph.dynamic then
      steps, epochs = ph.label, ""
    elseif ph.unreached then
      steps, epochs = ("%d-"):format(ph.from_step), "not run"
    else
      steps = ("%d-%d"):format(ph.from_step, ph.to_step)
      local e1, e2 = math.floor(ph.from_step / spe) + 1, math.floor(ph.to_step / spe) + 1
      epochs = e1 == e2 and tostring(e1) or (e1 .. "-" .. e2)
    end
    local bytes = sched:optimizer_bytes(ph.trainable_numel)
    if not ph.unreached then peak_n, peak_b = math.max(peak_n, ph.trainable_numel), math.max(peak_b, bytes) end
    rows[#rows + 1] = { tostring(i), steps, epochs, #names > 0 and S.compress_groups(names) or "(nothing)",
      group3(ph.trainable_numel), mib(bytes), ph.change or "" }
  end
  local w = {}
  for _, row in ipairs(rows) do for c, cell in ipairs(row) do w[c] = math.max(w[c] or 0, #cell) end end
  for _, row in ipairs(rows) do
    local cells = {}
    for c, cell in ipairs(row) do
      local right = c == 5 or c == 6
      cells[c] = c == #row and cell or (right and (" "):rep(w[c] - #cell) .. cell or cell .. (" "):rep(w[c] - #cell))
    end
    add((table.concat(cells, "  "):gsub("%s+$", "")))
  end
  -- learning rates per group: static (warm-up ramps aside), runs of equal rates merged
  local parts, i, groups = {}, 1, info.groups
  while i <= #groups do
    local lr = sched.base_lr * sched.lr_mult[groups[i]]
    local j = i
    while j < #groups and math.abs(sched.base_lr * sched.lr_mult[groups[j + 1]] - lr) <= 1e-12 * lr do j = j + 1 end
    local names = {}
    for k = i, j do names[#names + 1] = groups[k] end
    local label = (i == 1 and j == #groups) and "all groups" or S.compress_groups(names)
    parts[#parts + 1] = label .. " " .. fmt_lr(lr)
    i = j + 1
  end
  add("")
  add("learning rates (peak, before the " .. r.lr_schedule.name .. " schedule): " .. table.concat(parts, ", "))
  if sched.warmup_steps > 0 then
    add(("a group that unfreezes ramps its rate from 0 over %d steps"):format(sched.warmup_steps))
  end
  add(("total: %s steps; model %s params; peak trainable %s (%.1f%%); peak optimizer state %s (%s)"):format(
    group3(sizes.total_steps), group3(total_params), group3(peak_n), 100 * peak_n / math.max(1, total_params), mib(peak_b),
    r.optim.name == "sgd" and "SGD: 4 bytes per trainable parameter with momentum" or "AdamW: 8 bytes per trainable parameter"))
  return lines
end

-- ---------------------------------------------------------------------------------------------
-- Commands

command("train", {
  usage = "pft train RECIPE [key=value ...] [~key ...] [--resume RUN_DIR]",
  summary = "train a recipe",
  help = [[Loads RECIPE (a shipped name like sst2-gradual, or a file), applies the overrides and trains.
--resume RUN_DIR continues an interrupted run from its last checkpoint (RECIPE may then be left out:
the run's recipe.lua is used, with the overrides). A recipe or overrides that would change the run
are refused, listing the differences; train.epochs, train.max_steps, train.log_every and output.keep
may change (docs/training.md "Resume").]],
  args = { "RECIPE?" }, overrides = true, options = { resume = true },
  run = function(a)
    local R = require "pft.recipe"
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
    local T = require_optional("pft.train", "pft train")
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
    local R, S = require "pft.recipe", require "pft.schedule"
    local r = R.load(a.RECIPE, a.overrides)
    require("pft.preflight").check(r) -- what `train` checks before it starts (docs/recipes.md)
    local k = num_labels(r)
    local bert = M.load_model(r, k)
    local info = S.model_info(bert)
    local sizes = M.sizes(r)
    local sched = S.build(r, info, sizes)
    print(("recipe  %s (%s)"):format(r.name, a.RECIPE))
    print(("model   %s: %d layers, %s parameters; %s head, %d labels"):format(r.model.name, info.num_layers,
      group3((function() local t = 0 for _, n in ipairs(info.names) do t = t + info.numel[n] end return t end)()),
      r.task.kind, k))
    print(("data    train %s rows%s, batch %d -> %s steps/epoch x %d epochs = %s steps"):format(group3(sizes.rows),
      r.data.train.limit and (" (limit %s)"):format(group3(r.data.train.limit)) or "", r.data.batch_size,
      group3(sizes.steps_per_epoch), r.train.epochs, group3(sizes.total_steps)))
    print(("optim   %s lr %s, weight decay %g; %s schedule, warm-up %g"):format(r.optim.name, fmt_lr(r.optim.lr),
      r.optim.weight_decay, r.lr_schedule.name, r.lr_schedule.warmup))
    print(("schedule %s"):format(r.schedule.preset))
    print("")
    for _, line in ipairs(M.plan_text(r, info, sched, sizes)) do print(line) end
    bert = nil
    collectgarbage()
  end,
})

command("cat", {
  usage = "pft cat RECIPE [key=value ...] [~key ...]",
  summary = "print the fully resolved recipe",
  help = "Prints RECIPE with its base merged, overrides applied and every default filled in, as Lua that\n`pft train` accepts back.",
  args = { "RECIPE" }, overrides = true, options = {},
  run = function(a)
    local R = require "pft.recipe"
    local r = R.load(a.RECIPE, a.overrides)
    io.write("-- resolved from ", a.RECIPE, #a.overrides > 0 and (" " .. table.concat(a.overrides, " ")) or "", "\n")
    io.write(R.dump(r))
  end,
})

-- Shipped recipes: { name, path, description } sorted by name.
function M.shipped()
  local R = require "pft.recipe"
  local out, seen = {}, {}
  for _, dir in ipairs(R.recipe_dirs()) do
    local names
    local ok, core = pcall(require, "pft.core")
    if ok and core.list_dir then names = core.list_dir(dir) end
    if not names then
      names = {}
      local p = io.popen(("ls -1 %q 2>/dev/null"):format(dir))
      if p then for l in p:lines() do names[#names + 1] = l end p:close() end
    end
    for _, f in ipairs(names or {}) do
      local name = f:match("^(.+)%.lua$")
      if name and not seen[name] then
        seen[name] = true
        local src = read_all(dir .. "/" .. f) or ""
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
    local R = require "pft.recipe"
    local src_path, err = R.resolve_path(a.NAME)
    if not src_path then usage("cp: " .. err) end
    local dest = a.DEST
    local ok, core = pcall(require, "pft.core")
    local is_dir = ok and core.list_dir and core.list_dir(dest) ~= nil
    if not is_dir and not (ok and core.list_dir) then is_dir = os.execute(("test -d %q"):format(dest)) == 0 end
    if is_dir then dest = dest .. "/" .. src_path:match("([^/]*)$") end
    if exists(dest) then error(("pft cp: %s exists; not overwriting it"):format(dest), 0) end
    local text = assert(read_all(src_path))
    local f, ferr = io.open(dest, "w")
    if not f then error(("pft cp: cannot write %s: %s"):format(dest, ferr), 0) end
    f:write(text)
    f:close()
    print(("copied %s to %s"):format(a.NAME, dest))
  end,
})

-- A split spec for a data file given on the command line, with key=value fields (text=, label=, ...).
local function cli_split(path, overrides)
  local R = require "pft.recipe"
  local spec = R.SCHEMA.by.data.by.train
  local s = { path = path }
  for _, o in ipairs(overrides) do
    local k, v = o:match("^([%w_]+)=(.*)$")
    if not k or not spec.by[k] then usage(("'%s': only split fields may follow DATA (path, format, header, text, text_pair, label, limit)"):format(o)) end
    local parsed = R.parse_override("data.train." .. o)
    s[k] = parsed.value
  end
  for _, f in ipairs(spec.fields) do if s[f[1]] == nil and f[1] ~= "path" then s[f[1]] = f[2].default end end
  s.path = R.abspath(s.path)
  if not s.format then
    local ext = s.path:match("%.(%w+)$")
    s.format = (ext == "csv" or ext == "jsonl") and ext or "tsv"
  end
  return s
end

command("eval", {
  usage = "pft eval RUN_OR_MODEL DATA [text=COL label=COL format=tsv ...]",
  summary = "evaluate a run or a model on a data file",
  help = "Evaluates the final model of RUN (a run directory) or a model directory on DATA and prints the\nmetrics. Split fields (text=, label=, format=, header=, limit=) describe DATA.",
  args = { "RUN_OR_MODEL", "DATA" }, overrides = true, options = {},
  run = function(a)
    local T = require_optional("pft.train", "pft eval")
    local m = T.evaluate(a.RUN_OR_MODEL, cli_split(a.DATA, a.overrides))
    local ok, Mx = pcall(require, "pft.metrics")
    if ok and Mx.format then print(Mx.format(m)) return end
    local keys = {}
    for k, v in pairs(m) do if type(v) == "number" then keys[#keys + 1] = k end end
    table.sort(keys)
    for _, k in ipairs(keys) do print(("%s\t%.4f"):format(k, m[k])) end
  end,
})

command("predict", {
  usage = "pft predict RUN_OR_MODEL INPUT [--out FILE]",
  summary = "predict labels with probabilities as JSONL",
  help = "Writes one JSON object per input row (the label and the probability of every label) to FILE,\nor to standard output without --out.",
  args = { "RUN_OR_MODEL", "INPUT" }, options = { out = true },
  run = function(a)
    local T = require_optional("pft.train", "pft predict")
    T.predict(a.RUN_OR_MODEL, a.INPUT, a.options.out)
  end,
})

command("export", {
  usage = "pft export RUN DEST",
  summary = "export a run's model as a Hugging Face directory",
  help = "Writes RUN's final model to DEST (config.json, model.safetensors, vocab and tokenizer files).",
  args = { "RUN", "DEST" }, options = {},
  run = function(a)
    local ok, T = pcall(require, "pft.train")
    if ok and T.export then return T.export(a.RUN, a.DEST) end
    local PM = require_optional("pft.model", "pft export")
    local dir = exists(a.RUN .. "/model/config.json") and (a.RUN .. "/model") or a.RUN
    local m = PM.load(dir)
    m:export(a.DEST, { labels = m.labels })
    print(("exported %s to %s"):format(dir, a.DEST))
  end,
})

command("recipes-doc", {
  usage = "pft recipes-doc",
  summary = "print the recipe key table (docs/recipes.md)",
  help = "Prints the markdown table of every recipe key, its type, default and meaning, from the schema.",
  args = {}, options = {},
  run = function() io.write(require("pft.recipe").doc_table()) end,
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
    if name and exists(name) then msg = msg .. (" (to run the file %s as a script: pft ./%s)"):format(name, name) end
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
    return e
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
