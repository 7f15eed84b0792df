-- pft.rundir: a run's directory (docs/training.md "The run directory"): created exclusively for a new run,
-- checked against the saved recipe and cleaned up for a resumed one, and its status file.
--
--   local Run = require "pft.rundir"
--   local dir, ck = Run.open(recipe, { run_dir = nil, resume = nil, warn = fn })  -- ck: the checkpoint to resume
--   Run.write_status(dir, "running")
local core = require "pft.core"
local fs = require "pft.fs"
local Ck = require "pft.checkpoint"
local R = require "pft.recipe"

local Run = {}

-- What may differ between a run's saved recipe and the one given with --resume (docs/training.md).
Run.RESUME_MAY_CHANGE = { ["train.epochs"] = true, ["train.max_steps"] = true, ["train.log_every"] = true,
  ["train.cache"] = true, ["train.cache_budget"] = true, ["output.keep"] = true, ["output.dir"] = true, name = true }

-- run_dir/status: running, done, early_stopped, interrupted, "nan: <message>", "failed: <message>".
function Run.write_status(run_dir, text)
  fs.write_atomic(run_dir .. "/status", (text:gsub("\n", " ")) .. "\n", "train")
end

-- Cuts path back to its first n bytes (what the checkpoint saw); a shorter file stays as it is.
function Run.truncate_to(path, n)
  local s = fs.read_file(path)
  if s and #s > n then fs.write_atomic(path, s:sub(1, n), "train") end
end

-- A new run's directory, created exclusively: an automatic name (runs/<name>-<yyyymmdd-hhmmss>, output.dir
-- not set) that exists gets -2, -3, ...; a chosen directory must be new or empty.
local function create(dir, auto)
  local parent = dir:match("^(.*)/[^/]+$")
  if parent and parent ~= "" then assert(core.mkdir(parent)) end
  local cand, n = dir, 1
  while true do
    local ok, err, code = core.mkdir_excl(cand)
    if ok then return cand end
    if code ~= "exists" then error("train: " .. tostring(err), 0) end
    if not auto then
      local names = core.list_dir(cand)
      if names and #names == 0 then return cand end
      error(("train: output directory %s already exists and is not empty; continue that run with --resume %s, or choose another output.dir"):format(cand, cand), 0)
    end
    n = n + 1
    cand = dir .. "-" .. n
  end
end

local function flatten(t, prefix, out)
  for k, v in pairs(t) do
    local key = prefix == "" and tostring(k) or (prefix .. "." .. tostring(k))
    if type(v) == "table" then
      if next(v) == nil then out[key] = "{}" else flatten(v, key, out) end
    elseif type(v) == "function" then
      out[key] = "function: " .. (R.function_text(v) or tostring(R.function_source(v)))
    else
      out[key] = v
    end
  end
  return out
end

local function show(v)
  if v == nil then return "none" end
  if type(v) == "string" then return ("%q"):format(v) end
  return tostring(v)
end

-- The `-- pft-unresumable:` lines of a saved recipe: why it cannot be resumed exactly.
local function unresumable(src)
  local problems = {}
  for l in src:gmatch("[^\n]+") do
    if l:sub(1, #R.UNRESUMABLE_MARK) == R.UNRESUMABLE_MARK then problems[#problems + 1] = l:sub(#R.UNRESUMABLE_MARK + 1) end
  end
  return problems
end

-- The keys whose values differ between two loaded recipes, sorted, as "key: a (saved) vs b (given)",
-- split into those that may change on resume and the others.
local function differences(saved, given)
  local a, b = flatten(saved, "", {}), flatten(given, "", {}) -- (functions are read from their files)
  local keys, seen = {}, {}
  for k in pairs(a) do keys[#keys + 1] = k; seen[k] = true end
  for k in pairs(b) do if not seen[k] then keys[#keys + 1] = k end end
  table.sort(keys)
  local bad, allowed = {}, {}
  for _, k in ipairs(keys) do
    if a[k] ~= b[k] then
      local line = ("%s: %s (saved) vs %s (given)"):format(k, show(a[k]), show(b[k]))
      if Run.RESUME_MAY_CHANGE[k] then allowed[#allowed + 1] = line else bad[#bad + 1] = line end
    end
  end
  return bad, allowed
end

-- The resume check: the given recipe, normalised like the saved one (dumped and loaded), against the
-- run's recipe.lua. Returns the differences that are allowed and the given recipe's dump; raises listing
-- the others.
local function check_resume_recipe(run_dir, recipe)
  local path = run_dir .. "/recipe.lua"
  local saved_src = fs.read_file(path)
  if not saved_src then error(("train: --resume %s: no recipe.lua there (not a run directory)"):format(run_dir), 0) end
  local problems = unresumable(saved_src)
  if #problems > 0 then
    error(("train: --resume %s: this run cannot be resumed exactly: %s"):format(run_dir, table.concat(problems, "; ")), 0)
  end
  local given_src, gp = R.dump_checked(recipe)
  if #gp > 0 then error(("train: --resume %s: the given recipe cannot be compared: %s"):format(run_dir, table.concat(gp, "; ")), 0) end
  local tmp = run_dir .. "/.resume-check.lua"
  fs.write_file(tmp, given_src, "wb", "train")
  local ok, given = pcall(R.load, tmp)
  if not ok then os.remove(tmp); error(given, 0) end
  local bad, allowed = differences(R.load(path), given) -- (reads the functions' text from tmp)
  os.remove(tmp)
  if #bad > 0 then
    error(("train: --resume %s: the recipe differs from the run's recipe.lua in what would change the run:\n  %s\n(on resume only train.epochs, train.max_steps, train.log_every and output.keep may change)"):format(
      run_dir, table.concat(bad, "\n  ")), 0)
  end
  return allowed, given_src
end

-- The newest checkpoint that verifies, after removing unfinished ones; says which it skipped and why.
local function resume_checkpoint(run_dir, warn)
  for _, n in ipairs(Ck.clean_tmp(run_dir)) do warn(("removed the unfinished checkpoint %s/checkpoints/%s"):format(run_dir, n)) end
  local latest, damaged = Ck.latest_valid(run_dir)
  if not latest then
    if #damaged == 0 then error(("train: --resume %s: no checkpoint in %s/checkpoints"):format(run_dir, run_dir), 0) end
    local why = {}
    for _, d in ipairs(damaged) do why[#why + 1] = d.name .. ": " .. d.reason end
    error(("train: --resume %s: no usable checkpoint (%s)"):format(run_dir, table.concat(why, "; ")), 0)
  end
  for i, d in ipairs(damaged) do
    local next_name = (damaged[i + 1] and damaged[i + 1].name) or latest:match("[^/]+$")
    warn(("checkpoint %s is damaged (%s); resuming from %s"):format(d.name, d.reason, next_name))
  end
  return Ck.load(latest)
end

-- Run.open(recipe, opts) -> run_dir, checkpoint (resumed runs; nil for a new one). opts: run_dir (a new
-- run's directory, else output.dir, else runs/<name>-<time>), resume (a run dir to continue), warn(msg).
function Run.open(recipe, opts)
  if opts.resume then
    local run_dir = opts.resume
    local allowed, given_src = check_resume_recipe(run_dir, recipe)
    local ck = resume_checkpoint(run_dir, opts.warn)
    if #allowed > 0 then fs.write_atomic(run_dir .. "/recipe.lua", given_src, "train") end
    return run_dir, ck
  end
  local name = recipe.name or "run"
  local dir = opts.run_dir or recipe.output.dir or ("runs/" .. name .. "-" .. os.date("%Y%m%d-%H%M%S"))
  local base = dir:match("([^/]+)$") or dir
  local auto = not opts.run_dir and R.where(recipe, "output.dir") == nil and
    base:match("^" .. name:gsub("%p", "%%%0") .. "%-%d%d%d%d%d%d%d%d%-%d%d%d%d%d%d$") ~= nil
  return create(dir, auto), nil
end

return Run
