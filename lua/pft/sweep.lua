-- pft.sweep: many runs of one recipe over a grid of settings and seeds, in one sweep directory.
--
--   local Sw = require "pft.sweep"
--   local spec = Sw.from_args("sst2-top2", { "schedule.k=1,2,3", "train.seed=1,2" })  -- or Sw.load(file)
--   local cells = Sw.cells(spec)         -- every combination, each resolved and checked before any runs
--   Sw.run(spec, cells, { dir = nil, shard = { 0, 1 } })  -- -> exit code
--
-- A sweep file is a recipe-like table loaded in the recipe sandbox:
--   return { name = "sst2-freeze", base = "sst2", grid = { ["schedule.k"] = { 1, 2, 3 } }, seeds = { 1, 2, 3 },
--            variants = { head = { schedule = { preset = "head" } } }, set = { "data.train.limit=8000" } }
-- Cells are the product of the grid's axes (keys in sorted order), the variants (each a recipe fragment
-- merged over the base; none: one cell per grid point) and the seeds. The sweep directory (default
-- sweeps/<name>-<hash of the cells>, so the same command finds it again) holds sweep.json (the spec and
-- the cells), one run directory per cell, and sweep.jsonl, one line per finished cell. Re-running skips
-- the finished cells and resumes an interrupted one from its checkpoint. --shard i/n (0 <= i < n; or
-- the MPI rank from OMPI_COMM_WORLD_RANK / PMI_RANK) runs cells i, i + n, ...: shards share the directory
-- safely, since each cell has its own run directory and each finished cell appends one line in one write.
-- Cells on the same model and the same tokens share the activation cache (pft.actcache): before the
-- first cell runs, one encoder pass per split computes every boundary their plans use, so each cell then
-- runs only its own top layers.
local R = require "pft.recipe"
local fs = require "pft.fs"
local cjson = require "cjson"
local core = require "pft.core"

local Sw = {}

local SPEC_KEYS = { name = true, base = true, grid = true, seeds = true, variants = true, set = true }

local function fail(msg) error("sweep: " .. msg, 0) end

-- A value as override text (R.parse_override reads it by the key's type): a string as it is, numbers and
-- booleans as Lua writes them, tables as Lua literals (strings inside them quoted).
local function literal(v, inside)
  if type(v) == "string" then return inside and ("%q"):format(v) or v end
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  for _, x in ipairs(v) do parts[#parts + 1] = literal(x, true) end
  for k, x in pairs(v) do
    if type(k) ~= "number" then parts[#parts + 1] = ("[%q] = %s"):format(k, literal(x, true)) end
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- {schedule = {preset = "head"}} -> {["schedule.preset"] = "head"}: tables with named keys are walked, lists
-- (rules, selectors) and scalars are values
local function flatten(t, prefix, out)
  out = out or {}
  for k, v in pairs(t) do
    local key = prefix and (prefix .. "." .. tostring(k)) or tostring(k)
    if type(v) == "table" and next(v) ~= nil and #v == 0 then flatten(v, key, out) else out[key] = v end
  end
  return out
end

local function check_spec(spec, where)
  if type(spec) ~= "table" then fail(where .. ": a sweep is a table") end
  for k in pairs(spec) do
    if not SPEC_KEYS[k] then fail(("%s: unknown key '%s' (name, base, grid, seeds, variants, set)"):format(where, tostring(k))) end
  end
  if type(spec.base) ~= "string" then fail(where .. ": base (a recipe name or file) is required") end
  spec.grid = spec.grid or {}
  if type(spec.grid) ~= "table" then fail(where .. ": grid is a table of key = {values}") end
  for k, vs in pairs(spec.grid) do
    if type(k) ~= "string" or type(vs) ~= "table" or #vs == 0 then
      fail(("%s: grid['%s'] must be a non-empty list of values"):format(where, tostring(k)))
    end
  end
  if spec.seeds ~= nil and (type(spec.seeds) ~= "table" or #spec.seeds == 0) then fail(where .. ": seeds is a non-empty list") end
  if spec.variants ~= nil and (type(spec.variants) ~= "table" or next(spec.variants) == nil) then
    fail(where .. ": variants is a table of name = {recipe fragment}")
  end
  spec.set = spec.set or {}
  spec.name = spec.name or (spec.base:match("([^/]+)$"):gsub("%.lua$", ""))
  return spec
end

-- A sweep file (a .lua file whose table has grid, seeds or variants), not a recipe.
function Sw.is_sweep_file(path)
  if not (path:match("%.lua$") and fs.exists(path)) then return false end
  local ok, t = pcall(R.run_source, fs.read_file(path) or "", fs.display_path(path))
  return ok and type(t) == "table" and (t.grid ~= nil or t.seeds ~= nil or t.variants ~= nil)
end

-- Sw.load(path) -> spec, from a sweep file run in the recipe sandbox
function Sw.load(path)
  local src, err = fs.read_file(path)
  if not src then fail(("cannot read %s: %s"):format(path, tostring(err))) end
  local spec = R.run_source(src, fs.display_path(path))
  if type(spec) == "table" and not spec.name then spec.name = (path:match("([^/]+)$"):gsub("%.lua$", "")) end
  return check_spec(spec, fs.display_path(path))
end

-- Sw.from_args(recipe, overrides) -> spec: an override whose value is a comma list (not a {...} literal
-- or a quoted string) is a grid axis; the others apply to every cell.
function Sw.from_args(recipe, overrides)
  local spec = { base = recipe, grid = {}, set = {} }
  for _, o in ipairs(overrides) do
    local key, value = o:match("^([^=]+)=(.*)$")
    if key and value:find(",", 1, true) and not value:match("^%s*[{\"']") then
      local values = {}
      for v in (value .. ","):gmatch("([^,]*),") do
        if v == "" then fail(("%s: an empty value in the list"):format(o)) end
        values[#values + 1] = v
      end
      spec.grid[key] = values
    else
      spec.set[#spec.set + 1] = o
    end
  end
  return check_spec(spec, "command line")
end

-- "k=2,seed=1": the varied keys by their last part (the whole key when two would clash), as a directory name
local function cell_name(varied, keys, variant)
  local last, count = {}, {}
  for _, k in ipairs(keys) do
    local l = k:match("([^.]+)$")
    last[k], count[l] = l, (count[l] or 0) + 1
  end
  local parts = variant and { variant } or {}
  for _, k in ipairs(keys) do
    local v = tostring(varied[k]):gsub("^\"(.*)\"$", "%1")
    parts[#parts + 1] = (count[last[k]] > 1 and k or last[k]) .. "=" .. v
  end
  local name = table.concat(parts, ","):gsub("[^%w%.,=_%-]", "_")
  return name ~= "" and name or "run"
end

-- What a cell's activation cache needs, and with whom it can share it: cells whose model directory and
-- train and dev tokens are the same (the prefix weights are then the pretrained ones for all of them).
local function cache_share(prep)
  local c = prep.plan.cache
  if not c.enabled or #c.chosen == 0 then return nil end
  local dev = prep.dev_loader and core.encoded_hash(prep.dev_loader.enc) or "-"
  return { key = table.concat({ prep.model.dir, core.encoded_hash(prep.loader.enc), dev, c.head }, "\0"),
    boundaries = c.chosen, budget = c.budget }
end

-- Sw.cells(spec) -> { {name, overrides, varied = {key = value text}, variant, recipe}, ... }: every
-- combination resolved (R.load) and checked as `pft validate` checks it (data, model, plan: T.prepare)
-- before anything runs; the first bad cell fails the sweep naming the cell.
function Sw.cells(spec)
  local keys = {}
  for k in pairs(spec.grid) do keys[#keys + 1] = k end
  table.sort(keys)
  local axes = {}
  for _, k in ipairs(keys) do axes[#axes + 1] = { key = k, values = spec.grid[k] } end
  if spec.seeds then
    keys[#keys + 1] = "train.seed"
    axes[#axes + 1] = { key = "train.seed", values = spec.seeds }
  end
  local variants = { false }
  if spec.variants then
    variants = {}
    for name in pairs(spec.variants) do variants[#variants + 1] = name end
    table.sort(variants)
  end
  local cells, seen = {}, {}
  local function add(varied, variant)
    local over = {}
    for _, o in ipairs(spec.set) do over[#over + 1] = o end
    if variant then
      for k, v in pairs(flatten(spec.variants[variant])) do over[#over + 1] = k .. "=" .. literal(v) end
    end
    for _, k in ipairs(keys) do over[#over + 1] = k .. "=" .. varied[k] end
    local name = cell_name(varied, keys, variant or nil)
    if seen[name] then fail(("two cells are both named '%s'"):format(name)) end
    seen[name] = true
    local ok, r = pcall(R.load, spec.base, over)
    local share
    if ok then -- the data, the model and the plan, as `pft validate` checks them
      local okp, prep = pcall(require("pft.train").prepare, r)
      if okp then
        share = cache_share(prep)
        prep.model.bert:free()
      else
        ok, r = false, prep
      end
    end
    if not ok then fail(("cell %s: %s"):format(name, type(r) == "table" and (r.msg or tostring(r)) or tostring(r))) end
    cells[#cells + 1] = { name = name, overrides = over, varied = varied, variant = variant or nil, recipe = r, share = share }
  end
  local function walk(i, varied, variant)
    if i > #axes then return add(varied, variant) end
    for _, v in ipairs(axes[i].values) do
      local copy = {}
      for k, x in pairs(varied) do copy[k] = x end
      copy[axes[i].key] = type(v) == "string" and v or literal(v)
      walk(i + 1, copy, variant)
    end
  end
  for _, variant in ipairs(variants) do walk(1, {}, variant) end
  return cells
end

-- Sw.shard(text) -> {i, n}: "i/n" with 0 <= i < n; nil text: the MPI rank and size, else {0, 1}
function Sw.shard(text)
  if text then
    local i, n = tostring(text):match("^(%d+)/(%d+)$")
    i, n = tonumber(i), tonumber(n)
    if not i or n < 1 or i >= n then fail(("--shard %s: expected i/n with 0 <= i < n"):format(tostring(text))) end
    return { i, n }
  end
  local rank = os.getenv("OMPI_COMM_WORLD_RANK") or os.getenv("PMI_RANK")
  local size = os.getenv("OMPI_COMM_WORLD_SIZE") or os.getenv("PMI_SIZE")
  if rank and size and tonumber(size) and tonumber(size) > 1 then return { tonumber(rank), tonumber(size) } end
  return { 0, 1 }
end

local function sweep_dir(spec, cells)
  local names = {}
  for i, c in ipairs(cells) do names[i] = c.name .. "\0" .. table.concat(c.overrides, "\0") end
  return ("sweeps/%s-%s"):format(spec.name, core.text_hash({ spec.base, table.concat(names, "\1") }):sub(1, 8))
end

local function cell_done(dir, cell)
  local status = (fs.read_file(dir .. "/" .. cell.name .. "/status") or ""):match("^(%S+)")
  return status == "done" or status == "early_stopped"
end

-- One cell: skipped when done, resumed when it has a checkpoint, else trained afresh. Returns the
-- summary (nil when skipped) and T.run's exit code.
local function run_cell(dir, cell, opts)
  local T, Ck = require "pft.train", require "pft.checkpoint"
  local run_dir = dir .. "/" .. cell.name
  if cell_done(dir, cell) then return nil, 0 end
  local r = cell.recipe
  r.output.dir = fs.abspath(run_dir)
  if fs.exists(run_dir) and #Ck.list(run_dir) > 0 then
    return T.run(r, { resume = r.output.dir, quiet = opts.quiet })
  end
  os.execute(("rm -rf '%s'"):format(run_dir:gsub("'", "'\\''"))) -- started, nothing to resume: its own
  return T.run(r, { run_dir = r.output.dir, quiet = opts.quiet })
end

-- One encoder pass per split for each group of this shard's unfinished cells that share a cache: every
-- boundary their plans chose, most-used first while within the smallest of their budgets.
local function share_caches(dir, cells, mine, say)
  local A, T = require "pft.actcache", require "pft.train"
  local groups, order = {}, {}
  for _, i in ipairs(mine) do
    local c = cells[i]
    if c.share and not cell_done(dir, c) then
      local g = groups[c.share.key]
      if not g then
        g = { first = c, uses = {}, budget = c.share.budget, n = 0 }
        groups[c.share.key], order[#order + 1] = g, c.share.key
      end
      g.n, g.budget = g.n + 1, math.min(g.budget, c.share.budget)
      for _, b in ipairs(c.share.boundaries) do g.uses[b] = (g.uses[b] or 0) + 1 end
    end
  end
  for _, key in ipairs(order) do
    local g = groups[key]
    if g.n > 1 then -- a lone cell computes its own
      local prep = T.prepare(g.first.recipe)
      local needed = {}
      for b, n in pairs(g.uses) do needed[#needed + 1] = { b = b, steps = n } end
      local head, width = prep.plan.cache.head, prep.model.bert:config().hidden_size
      local chosen = A.choose(needed, function(b)
        local sum = 0
        for _, sp in pairs(prep.plan.splits) do sum = sum + A.split_bytes(b, prep.info, head, width, sp.n, sp.ntok) end
        return sum
      end, g.budget)
      local cache = A.new(prep.model, { train = prep.loader, dev = prep.dev_loader }, { head = head, dir = prep.plan.cache.dir,
        say = function(line) say(line .. (" (shared by %d cells)"):format(g.n)) end })
      local ok, err = pcall(cache.ensure, cache, chosen)
      cache:free()
      prep.model.bert:free()
      if not ok then error(err, 0) end
    end
  end
end

-- Sw.run(spec, cells, {dir, shard = {i, n}, quiet, say}) -> exit code (0, or the first failing cell's)
function Sw.run(spec, cells, opts)
  opts = opts or {}
  local dir = opts.dir or sweep_dir(spec, cells)
  local shard = opts.shard or { 0, 1 }
  local say = opts.say or print
  local ok, err = core.mkdir(dir) -- and its parents: sweeps/ only when it is the default's
  if not ok and not fs.exists(dir) then fail(("cannot create %s: %s"):format(dir, tostring(err))) end
  local index = {}
  for i, c in ipairs(cells) do index[i] = { name = c.name, varied = c.varied, variant = c.variant, overrides = c.overrides } end
  fs.write_atomic(dir .. "/sweep.json", cjson.encode({ name = spec.name, base = spec.base, cells = index }) .. "\n", "sweep")
  say(("sweep %s: %d cells%s"):format(dir, #cells, shard[2] > 1 and (", shard %d/%d"):format(shard[1], shard[2]) or ""))
  local mine = {}
  for i = 1, #cells do if (i - 1) % shard[2] == shard[1] then mine[#mine + 1] = i end end
  share_caches(dir, cells, mine, say)
  for i, c in ipairs(cells) do
    if (i - 1) % shard[2] == shard[1] then
      local s = run_cell(dir, c, opts)
      if s == nil then
        say(("cell %d/%d %s: done before, skipped"):format(i, #cells, c.name))
      elseif s.exit_code ~= 0 then
        say(("cell %d/%d %s: %s (exit %d); run the same command again to resume"):format(i, #cells, c.name, s.status, s.exit_code))
        return s.exit_code
      else
        local line = cjson.encode({ cell = c.name, varied = c.varied, variant = c.variant, status = s.status,
          summary = cjson.decode(fs.read_file(dir .. "/" .. c.name .. "/summary.json")) }) .. "\n"
        fs.write_file(dir .. "/sweep.jsonl", line, "ab", "sweep") -- one write: shards never interleave lines
        say(("cell %d/%d %s: %s, best %s %s"):format(i, #cells, c.name, s.status, s.best.metric,
          s.best.value and ("%.4f"):format(s.best.value) or "-"))
      end
    end
  end
  return 0
end

return Sw
