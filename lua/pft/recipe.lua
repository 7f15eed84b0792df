-- pft.recipe: load a recipe file in a restricted environment, merge it onto its `base`, apply
-- command-line overrides, check everything against the schema and fill in the defaults.
--
--   local R = require "pft.recipe"
--   local r = R.load("sst2-gradual", { "optim.lr=3e-5", "~data.train.limit" })
--   print(r.optim.lr, r.data.train.path)          --> 3e-05  /abs/path/to/shared/data/sst2/train.tsv
--   print(R.dump(r))                              -- valid Lua that loads back to the same table
--
-- Errors name the place: "recipes/x.lua:12: unknown key 'optim.lrr' (did you mean 'optim.lr'?)",
-- "override 'optim.lr=fast': optim.lr must be a number > 0 (got string \"fast\")".
-- Every key, its type and its default is in pft.recipe_schema; docs/recipes.md carries the table that
-- R.doc_table() prints (a test keeps the two equal).
local fs = require "pft.fs"

local R = {}

-- An error object for malformed command-line arguments, so that the CLI can exit 2 instead of 1.
R.UsageError = {}
R.UsageError.__index = R.UsageError
R.UsageError.__tostring = function(e) return e.msg end
local function usage_error(msg) error(setmetatable({ msg = msg, usage = true }, R.UsageError), 0) end

-- ---------------------------------------------------------------------------------------------
-- Paths

local dirname, basename, file_exists, read_file = fs.dirname, fs.basename, fs.exists, fs.read_file
local display_path = fs.display_path
R.cwd, R.abspath, R.root = fs.cwd, fs.abspath, fs.root -- (for callers of pft.recipe; pft.fs is their home)

-- Directories searched for shipped recipes, in order: $PFT_RECIPES, <root>/recipes (source tree),
-- <LUADIR>/pft/recipes beside this file (installed: `make install` and LuaRocks put them there).
function R.recipe_dirs()
  local dirs = {}
  local env = os.getenv("PFT_RECIPES")
  if env and env ~= "" then dirs[#dirs + 1] = env end
  local root, installed = R.root()
  if installed then
    local src = debug.getinfo(1, "S").source
    dirs[#dirs + 1] = dirname(R.abspath(src:sub(2))) .. "/recipes"
  else
    dirs[#dirs + 1] = root .. "/recipes"
  end
  return dirs
end

-- The data root that "${PFT_DATA}" in recipe paths stands for: $PFT_DATA, else, in a source checkout,
-- <root>/../shared/data. An installed pft has no default (its prefix's parent is nobody's data root).
function R.data_root()
  local env = os.getenv("PFT_DATA")
  if env and env ~= "" then return R.abspath(env) end
  local root, installed = require("pft.fs").root()
  if installed then
    error("${PFT_DATA} in a data path: set PFT_DATA to the directory that holds the data sets (sst2/, conll2003/)", 0)
  end
  return R.abspath(root .. "/../shared/data")
end

local function is_path(s) return s:find("/", 1, true) or s:match("%.lua$") end

-- A recipe name ("sst2-head") or a path ("recipes/x.lua", "x.lua"): the absolute file path, or
-- nil and a message. rel_dir: the directory a relative path is taken against (default: cwd).
function R.resolve_path(name, rel_dir)
  if is_path(name) then
    local p = name
    if p:sub(1, 1) ~= "/" and rel_dir then p = rel_dir .. "/" .. p end
    p = R.abspath(p)
    if file_exists(p) then return p end
    return nil, ("recipe file '%s' not found"):format(name)
  end
  for _, d in ipairs(R.recipe_dirs()) do
    local p = R.abspath(d .. "/" .. name .. ".lua")
    if file_exists(p) then return p end
  end
  return nil, ("no recipe named '%s' (see `pft ls`; a file path needs a '/' or '.lua')"):format(name)
end

local Schema = require "pft.recipe_schema"
local SCHEMA, EVERY_DOCS, describe = Schema.SCHEMA, Schema.EVERY_DOCS, Schema.describe
R.SCHEMA = SCHEMA


-- The spec at a dotted path (array indices are numbers), or nil.
local function spec_at(parts)
  local s = SCHEMA
  for _, p in ipairs(parts) do
    if s.kind == "struct" then
      s = s.by[p]
    elseif s.kind == "array" and type(p) == "number" then
      s = s.elem
    else
      return nil
    end
    if not s then return nil end
  end
  return s
end

local function join(parts)
  local out = ""
  for i, p in ipairs(parts) do
    if type(p) == "number" then out = out .. "[" .. p .. "]"
    else out = out .. (i > 1 and "." or "") .. p end
  end
  return out
end

local function copy_parts(parts, extra)
  local c = {}
  for i, p in ipairs(parts) do c[i] = p end
  c[#c + 1] = extra
  return c
end

-- ---------------------------------------------------------------------------------------------
-- Places: "file:line" for a key found in a recipe's source, "override 'k=v'" for the command line.

-- Finds the line of the key path in the source: each part must appear as `part =` (or ["part"] =)
-- after the previous one. Returns nil when not found.
local function find_line(src, parts)
  local pos = 1
  local found = false
  for _, p in ipairs(parts) do
    if type(p) == "string" then
      local best
      for _, pat in ipairs({ "[^%w_%.]" .. p .. "%s*=[^=]", "%[%s*[\"']" .. p .. "[\"']%s*%]%s*=" }) do
        local s = src:find(pat, pos)
        if s and (not best or s < best) then best = s end
      end
      if not best and pos == 1 and src:sub(1, #p) == p then best = 0 end
      if not best then break end
      pos, found = best + 1, true
    end
  end
  if not found then return nil end
  local line = 1
  for _ in src:sub(1, pos):gmatch("\n") do line = line + 1 end
  return line
end

local function place(ctx, parts)
  if ctx.override then return ("override '%s'"):format(ctx.override) end
  local line = ctx.src and find_line(ctx.src, parts)
  return line and (ctx.file .. ":" .. line) or ctx.file
end

local function fail(ctx, parts, msg) error(place(ctx, parts) .. ": " .. msg, 0) end

-- Levenshtein distance, for "did you mean".
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end
R.distance = distance

-- All dotted key paths of the schema, in order (arrays as "rules[]").
local function all_paths(s, prefix, out)
  out = out or {}
  if s.kind == "struct" then
    for _, f in ipairs(s.fields) do
      local p = prefix and (prefix .. "." .. f[1]) or f[1]
      out[#out + 1] = { path = p, key = f[1], spec = f[2] }
      all_paths(f[2], p, out)
    end
  elseif s.kind == "array" then
    all_paths(s.elem, prefix .. "[]", out)
  end
  return out
end

local function suggestion(spec, parts, key)
  local best, bestd
  for _, f in ipairs(spec.fields) do
    local d = distance(key:lower(), f[1]:lower())
    if not bestd or d < bestd then best, bestd = f[1], d end
  end
  if best and bestd <= math.max(1, math.floor(#key / 3)) then return join(copy_parts(parts, best)) end
  for _, e in ipairs(all_paths(SCHEMA)) do -- the same key in another section: `lr` for `optim.lr`
    if e.key == key and not e.path:find("[]", 1, true) then return e.path end
  end
end

-- Checks v against spec at parts; raises with ctx's place. NONE (false for nullable keys) passes.
local function check_value(spec, v, parts, ctx)
  local name = join(parts)
  if v == false and spec.nullable and spec.kind ~= "boolean" then return end
  if spec.kind == "struct" then
    if type(v) ~= "table" then fail(ctx, parts, ("%s must be %s (got %s)"):format(name, spec.want, describe(v))) end
    for k, x in pairs(v) do
      if type(k) ~= "string" or not spec.by[k] then
        local kp = copy_parts(parts, type(k) == "string" and k or ("[" .. tostring(k) .. "]"))
        local msg = ("unknown key '%s'"):format(join(kp))
        local sug = type(k) == "string" and suggestion(spec, parts, k)
        if sug then msg = msg .. (" (did you mean '%s'?)"):format(sug) end
        fail(ctx, kp, msg)
      end
      check_value(spec.by[k], x, copy_parts(parts, k), ctx)
    end
    if spec.post then
      local e = spec.post(v)
      if e then fail(ctx, parts, name .. " " .. e) end
    end
  elseif spec.kind == "array" then
    if type(v) ~= "table" then fail(ctx, parts, ("%s must be %s (got %s)"):format(name, spec.want, describe(v))) end
    for k in pairs(v) do
      if type(k) ~= "number" or k < 1 or k > #v or k ~= math.floor(k) then
        fail(ctx, parts, ("%s must be a list (got key '%s')"):format(name, tostring(k)))
      end
    end
    for i, x in ipairs(v) do check_value(spec.elem, x, copy_parts(parts, i), ctx) end
  else
    local ok, why = spec.check(v)
    if not ok then
      if why then fail(ctx, parts, ("%s: bad selector %s"):format(name, why)) end
      fail(ctx, parts, ("%s must be %s (got %s)"):format(name, spec.want, describe(v)))
    end
  end
end

-- R.validate(t, file [, source]): checks a recipe table (complete or partial) against the schema.
-- file names the place in messages; source (default: read from file) gives the lines.
function R.validate(t, file, source)
  local ctx = { file = file or "recipe", src = source }
  if not ctx.src and file then ctx.src = read_file(file) end
  check_value(SCHEMA, t, {}, ctx)
  return t
end

-- ---------------------------------------------------------------------------------------------
-- Loading files in a restricted environment

local function shallow_copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- The limits of one recipe evaluation (and of each later call of a function the recipe defined):
-- Lua instructions, and growth of the Lua heap. A recipe is a few hundred instructions and kilobytes;
-- these only stop an endless loop or a memory bomb, with an error that names the file.
R.INSTRUCTION_BUDGET = 50000000
R.MEMORY_CEILING_KB = 256 * 1024
local HOOK_EVERY = 4 -- instructions between checks: a doubling string outgrows the ceiling by 4x at most

-- The recipe's strings: string.rep capped at the ceiling (one call could allocate gigabytes before a
-- hook runs), no string.dump (bytecode has no use in a recipe).
local function sandbox_string()
  local s = shallow_copy(string)
  s.dump = nil
  local rep = string.rep
  s.rep = function(str, n, sep)
    local len = #tostring(str) + (sep and #tostring(sep) or 0)
    if type(n) == "number" and len * n > R.MEMORY_CEILING_KB * 1024 then
      error(("string.rep: %d copies of %d bytes is over the recipe memory ceiling (%d MiB)"):format(n, len,
        R.MEMORY_CEILING_KB / 1024), 2)
    end
    return rep(str, n, sep)
  end
  return s
end

local function sandbox()
  local tbl = shallow_copy(table)
  tbl.unpack = tbl.unpack or unpack
  return {
    math = shallow_copy(math), string = sandbox_string(), table = tbl,
    pairs = pairs, ipairs = ipairs, next = next, tostring = tostring, tonumber = tonumber, type = type,
    select = select, error = error, assert = assert, unpack = unpack or table.unpack,
  }
end

-- Calls fn(...) with the instruction budget and memory ceiling in force (a count hook, set here,
-- outside the sandbox; the JIT is off for recipe code, since compiled loops do not run count hooks).
-- Errors name `display`. Returns fn's results.
local guarded_call
function guarded_call(display, fn, ...)
  local old_hook, old_mask, old_count = debug.gethook()
  local ticks, max_ticks = 0, math.ceil(R.INSTRUCTION_BUDGET / HOOK_EVERY)
  local kb_limit = collectgarbage("count") + R.MEMORY_CEILING_KB
  local overrun
  debug.sethook(function()
    -- between pcall's return and the reset below the hook still runs: never raise in guarded_call itself
    if debug.getinfo(2, "f").func == guarded_call then return end
    ticks = ticks + 1
    if ticks > max_ticks then
      overrun = ("%s: the recipe ran past its budget of %d Lua instructions (an endless loop?)"):format(display,
        R.INSTRUCTION_BUDGET)
    elseif collectgarbage("count") > kb_limit then
      overrun = ("%s: the recipe used more than the recipe memory ceiling (%d MiB)"):format(display,
        R.MEMORY_CEILING_KB / 1024)
    end
    if overrun then error(overrun, 0) end
  end, "", HOOK_EVERY)
  local res = { pcall(fn, ...) }
  debug.sethook(old_hook, old_mask, old_count)
  if res[1] and collectgarbage("count") > kb_limit then -- one big allocation just before returning
    collectgarbage()
    if collectgarbage("count") > kb_limit then
      res = { false, ("%s: the recipe used more than the recipe memory ceiling (%d MiB)"):format(display,
        R.MEMORY_CEILING_KB / 1024) }
    end
  end
  if not res[1] then
    local e = res[2]
    if overrun then e = overrun end -- the hook's message, whatever the recipe's code made of it
    if tostring(e):find("not enough memory", 1, true) then
      e = ("%s: the recipe ran out of memory (ceiling %d MiB)"):format(display, R.MEMORY_CEILING_KB / 1024)
      collectgarbage()
    end
    error(e, 0)
  end
  return unpack(res, 2, table.maxn(res))
end

-- Every function in the recipe's table, wrapped so that each later call runs under the same limits;
-- R.function_source() finds the original through the wrapper.
local original_of = setmetatable({}, { __mode = "k" })
local function guard_functions(t, display, seen)
  seen = seen or {}
  if seen[t] then return end
  seen[t] = true
  for k, v in pairs(t) do
    if type(v) == "function" then
      local wrapped = function(...) return guarded_call(display, v, ...) end
      original_of[wrapped] = v
      t[k] = wrapped
    elseif type(v) == "table" then
      guard_functions(v, display, seen)
    end
  end
end

-- R.function_source(fn) -> the function a recipe defined (through the guard), for debug.getinfo.
function R.function_source(fn) return original_of[fn] or fn end

-- R.run_source(src, display) -> the value the recipe chunk returns, run in the restricted environment
-- under the limits. Text only: a precompiled (bytecode) chunk is refused, since LuaJIT does not verify
-- bytecode and a crafted one escapes any environment. Syntax errors raise {msg, syntax = true}.
function R.run_source(src, display)
  if src:sub(1, 1) == "\27" then
    error(("%s: a precompiled (bytecode) chunk is not accepted as a recipe; give its Lua source"):format(display), 0)
  end
  local chunk, serr = loadstring(src, "@" .. display, "t")
  if not chunk then error(setmetatable({ msg = serr, syntax = true }, R.UsageError), 0) end
  setfenv(chunk, sandbox())
  if jit then jit.off(chunk, true) end
  local t = guarded_call(display, chunk)
  if type(t) == "table" then guard_functions(t, display) end
  return t
end

-- Runs one recipe file; returns its table and source. Errors carry file:line.
local function run_file(path, display)
  local src, err = read_file(path)
  if not src then error(("%s: cannot read: %s"):format(display, err), 0) end
  local t = R.run_source(src, display)
  if type(t) ~= "table" then error(("%s: a recipe must return a table (got %s)"):format(display, describe(t)), 0) end
  return t, src
end

-- Deep merge by the schema: structs merge key by key; everything else (lists, selectors, rules,
-- scalars) is replaced as a whole. Returns a new table; origins records where each key came from.
local function merge(spec, base, top, parts, origins, origin)
  if spec and spec.kind == "struct" and type(base) == "table" and type(top) == "table" then
    local out = {}
    for k, v in pairs(base) do out[k] = v end
    for k, v in pairs(top) do
      local p = copy_parts(parts, k)
      out[k] = merge(spec.by[k], base[k], v, p, origins, origin)
    end
    return out
  end
  if origins then origins[join(parts)] = origin end
  return top
end

local function note_origins(spec, t, parts, origins, origin)
  if type(t) ~= "table" or not spec or spec.kind ~= "struct" then
    origins[join(parts)] = origin
    return
  end
  for k, v in pairs(t) do note_origins(spec.by[k], v, copy_parts(parts, k), origins, origin) end
end

-- Loads path and its chain of bases: the merged (unchecked-for-completeness) table.
local function load_chain(path, stack, origins)
  local display = display_path(path)
  for i, p in ipairs(stack) do
    if p == path then
      local names = {}
      for j = i, #stack do names[#names + 1] = display_path(stack[j]) end
      names[#names + 1] = display
      error(("%s: recipe base cycle: %s"):format(display, table.concat(names, " -> ")), 0)
    end
  end
  local t, src = run_file(path, display)
  R.validate(t, display, src)
  local origin = { file = display, src = src }
  if t.base == nil or t.base == false then
    note_origins(SCHEMA, t, {}, origins, origin)
    return t
  end
  local bpath, err = R.resolve_path(t.base, dirname(path))
  if not bpath then error(("%s: base: %s"):format(place(origin, { "base" }), err), 0) end
  stack[#stack + 1] = path
  local b = load_chain(bpath, stack, origins)
  stack[#stack] = nil
  b.name, b.base = nil, nil -- a name belongs to its own file
  local merged = merge(SCHEMA, b, t, {}, origins, origin)
  return merged
end

-- ---------------------------------------------------------------------------------------------
-- Overrides: "a.b=value" and "~a.b"

-- A safe reader for Lua table literals: { 1, 2e-5, "x", true, key = value, ["k"] = v, {nested} }.
-- Nothing is executed.
local function parse_literal(s)
  local pos = 1
  local function perr(msg) usage_error(("cannot read '%s': %s at character %d"):format(s, msg, pos)) end
  local function ws() pos = s:find("[^%s]", pos) or #s + 1 end
  local value
  local function str_lit()
    local q = s:sub(pos, pos)
    local i, out = pos + 1, {}
    while i <= #s do
      local c = s:sub(i, i)
      if c == q then pos = i + 1; return table.concat(out) end
      if c == "\\" then
        local n = s:sub(i + 1, i + 1)
        local map = { n = "\n", t = "\t", ["\\"] = "\\", ['"'] = '"', ["'"] = "'" }
        if not map[n] then perr("unsupported escape") end
        out[#out + 1] = map[n]
        i = i + 2
      else
        out[#out + 1] = c
        i = i + 1
      end
    end
    perr("unfinished string")
  end
  local function tbl()
    pos = pos + 1
    local t, n = {}, 0
    while true do
      ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1; return t end
      local key
      local ident = s:match("^([%a_][%w_]*)%s*=[^=]", pos)
      if ident then
        key = ident
        pos = s:find("=", pos, true) + 1
      elseif s:sub(pos, pos) == "[" then
        pos = pos + 1
        ws()
        key = value()
        ws()
        if s:sub(pos, pos) ~= "]" then perr("expected ']'") end
        pos = pos + 1
        ws()
        if s:sub(pos, pos) ~= "=" then perr("expected '='") end
        pos = pos + 1
      end
      local v = value()
      if key ~= nil then t[key] = v else n = n + 1; t[n] = v end
      ws()
      local c = s:sub(pos, pos)
      if c == "," or c == ";" then pos = pos + 1
      elseif c ~= "}" then perr("expected ',' or '}'") end
    end
  end
  value = function()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then return tbl() end
    if c == '"' or c == "'" then return str_lit() end
    local word = s:match("^[%w_%.%+%-]+", pos)
    if not word then perr("unexpected '" .. c .. "'") end
    pos = pos + #word
    if word == "true" then return true end
    if word == "false" then return false end
    local n = tonumber(word)
    if n == nil then perr(("'%s' is not a number, string (quote it), boolean or table"):format(word)) end
    return n
  end
  local v = value()
  ws()
  if pos <= #s then perr("unexpected text after the value") end
  return v
end
R.parse_literal = parse_literal

-- Types a command-line string by the spec it will go into.
local function coerce(spec, raw)
  if raw:match("^%s*{") then return parse_literal(raw) end
  if not spec then return raw end
  local k = spec.kind
  if k == "number" then return tonumber(raw) or raw end
  if k == "boolean" then
    if raw == "true" then return true elseif raw == "false" then return false end
    return raw
  end
  if k == "list" then
    local out = {}
    for item in (raw .. ","):gmatch("([^,]*),") do out[#out + 1] = coerce(spec.elem, (item:gsub("^%s+", ""):gsub("%s+$", ""))) end
    return out
  end
  if k == "selector" then
    if raw:find(",", 1, true) then
      local out = {}
      for item in raw:gmatch("[^,]+") do out[#out + 1] = (item:gsub("^%s+", ""):gsub("%s+$", "")) end
      return out
    end
    return raw
  end
  if k == "alt" then
    for _, a in ipairs(spec.alts) do
      local v = coerce(a, raw)
      if a.check(v) then return v end
    end
    return raw
  end
  return raw
end

local function split_key(key)
  local parts = {}
  for p in key:gmatch("[^%.]+") do
    local name, idx = p:match("^([%a_][%w_]*)%[(%d+)%]$")
    if name then
      parts[#parts + 1] = name
      parts[#parts + 1] = tonumber(idx)
    elseif p:match("^%d+$") then
      parts[#parts + 1] = tonumber(p)
    else
      parts[#parts + 1] = p
    end
  end
  return parts
end

-- R.parse_override("optim.lr=3e-5") -> { key = "optim.lr", parts = {"optim", "lr"}, value = 3e-5, raw = ... };
-- "~data.train.limit" -> { key =, parts =, remove = true }. Values are typed by the schema; an
-- unknown key raises "override '...': unknown key ..."; a malformed argument raises a usage error.
function R.parse_override(s)
  local o
  if s:sub(1, 1) == "~" then
    o = { key = s:sub(2), remove = true, raw = s }
  else
    local k, v = s:match("^([^=]+)=(.*)$")
    if not k then usage_error(("override '%s' is not key=value or ~key"):format(s)) end
    o = { key = k, raw = s, text = v }
  end
  if not o.key:match("^[%a_][%w_%.%[%]]*$") then usage_error(("override '%s': bad key '%s'"):format(s, o.key)) end
  o.parts = split_key(o.key)
  local ctx = { override = s }
  -- walk the schema to report the first unknown part
  local spec = SCHEMA
  for i, p in ipairs(o.parts) do
    local parent = spec
    if spec.kind == "struct" and type(p) == "string" then spec = spec.by[p]
    elseif spec.kind == "array" and type(p) == "number" then spec = spec.elem
    else spec = nil end
    if not spec then
      local prefix = {}
      for j = 1, i - 1 do prefix[j] = o.parts[j] end
      local msg = ("unknown key '%s'"):format(join(copy_parts(prefix, p)))
      local sug = parent.kind == "struct" and type(p) == "string" and suggestion(parent, prefix, p)
      if sug then msg = msg .. (" (did you mean '%s'?)"):format(sug) end
      fail(ctx, o.parts, msg)
    end
  end
  o.spec = spec
  if not o.remove then
    if spec.kind == "function" then fail(ctx, o.parts, o.key .. " is a function: set it in a recipe file") end
    o.value = coerce(spec, o.text)
    check_value(spec, o.value, o.parts, ctx)
  end
  return o
end

local NONE = false -- a removed nullable key, until defaults are filled

local function apply_override(t, o)
  local cur = t
  for i = 1, #o.parts - 1 do
    local p = o.parts[i]
    if type(cur[p]) ~= "table" then
      if o.remove then return end
      if type(p) == "number" and p > #cur + 1 then
        error(("override '%s': %s has no entry %d"):format(o.raw, join({ unpack(o.parts, 1, i - 1) }), p - 1), 0)
      end
      cur[p] = {}
    end
    cur = cur[p]
  end
  local last = o.parts[#o.parts]
  if o.remove then
    if type(last) == "number" then
      table.remove(cur, last)
    elseif o.spec.nullable and o.spec.kind ~= "boolean" then
      cur[last] = NONE
    else
      cur[last] = nil
    end
  else
    cur[last] = o.value
  end
end

-- ---------------------------------------------------------------------------------------------
-- Defaults and normalisation

local deep_copy = Schema.deep_copy

local function fill(spec, v)
  if v == NONE and spec.nullable and spec.kind ~= "boolean" then return nil end
  if spec.kind == "struct" then
    if v == nil then
      if spec.absent then return nil end
      v = {}
    end
    local out = {}
    for k, x in pairs(v) do out[k] = x end
    for _, f in ipairs(spec.fields) do out[f[1]] = fill(f[2], v[f[1]]) end
    return out
  end
  if spec.kind == "array" then
    if v == nil then return {} end
    local out = {}
    for i, x in ipairs(v) do out[i] = fill(spec.elem, x) end
    return out
  end
  if v == nil then return deep_copy(spec.default) end
  return deep_copy(v)
end

local function expand_path(p)
  p = p:gsub("%${([%w_]+)}", function(var)
    if var == "PFT_DATA" then return R.data_root() end
    local e = os.getenv(var)
    if not e then error(("path '%s': environment variable %s is not set"):format(p, var), 0) end
    return e
  end)
  return R.abspath(p)
end

-- A split with its path absolute and its format known (explicit, else from the extension: pft.data).
local function finish_split(s, key)
  if not s then return nil end
  local ok_path, path = pcall(expand_path, s.path)
  if not ok_path then error(("%s.path: %s"):format(key, tostring(path)), 0) end
  s.path = path
  local ok, fmt = pcall(require("pft.data").format_of, s)
  if not ok then error(("%s: %s"):format(key, tostring(fmt):gsub("^data: ", "")), 0) end
  s.format = fmt
  return s
end

-- What data.dev and data.test take from data.train when the recipe does not set them: the columns and
-- the header; and the format, when their own extension names none (CoNLL .txt files).
-- A recipe that names its own training file gets no dev or test split by default: the schema's default
-- splits are SST-2's, which belong only with SST-2's training data.
local INHERITED_SPLIT_KEYS = { "text", "text_pair", "label", "header" }
local function inherit_split_keys(data)
  local tr = type(data) == "table" and data.train
  if type(tr) ~= "table" then return end
  for _, k in ipairs({ "dev", "test" }) do
    if data[k] == nil and tr.path ~= nil then data[k] = false end
    local s = data[k]
    if type(s) == "table" then
      for _, key in ipairs(INHERITED_SPLIT_KEYS) do if s[key] == nil then s[key] = tr[key] end end
      if s.format == nil and tr.format ~= nil and type(s.path) == "string" then
        local ok = pcall(require("pft.data").format_of, s.path)
        if not ok then s.format = tr.format end
      end
    end
  end
end

local function resolve(t, top_path)
  inherit_split_keys(t.data)
  local r = fill(SCHEMA, t)
  r.base = nil
  if r.name == nil then r.name = top_path and basename(top_path):gsub("%.lua$", "") or "recipe" end
  for _, k in ipairs({ "train", "dev", "test" }) do r.data[k] = finish_split(r.data[k], "data." .. k) end
  if r.train.best_metric == nil then r.train.best_metric = Schema.default_best_metric(r.task.kind) end
  if r.output.dir == nil then r.output.dir = "runs/" .. r.name .. "-" .. os.date("%Y%m%d-%H%M%S") end
  r.output.dir = R.abspath(r.output.dir)
  return r
end

-- ---------------------------------------------------------------------------------------------
-- The entry point

local origins_of = setmetatable({}, { __mode = "k" })

-- R.load(path_or_name, overrides) -> the resolved recipe: base merged, overrides applied, every key
-- present (nil only where nil is the documented default), data paths absolute. overrides: an
-- array of "key=value" / "~key" strings (or parsed overrides).
function R.load(name, overrides)
  local path, err = R.resolve_path(name)
  if not path then usage_error(err) end
  local origins = {}
  local t = load_chain(path, {}, origins)
  t = deep_copy(t)
  for _, s in ipairs(overrides or {}) do
    local o = type(s) == "table" and s or R.parse_override(s)
    apply_override(t, o)
    origins[o.key] = { override = o.raw }
  end
  R.validate(t, display_path(path), read_file(path)) -- a removal can leave e.g. a rule without `at`
  local r = resolve(t, path)
  origins_of[r] = origins
  return r
end

-- Where a key of a loaded recipe was set: "recipes/x.lua:12", "override 'k=v'", or nil (a default).
function R.where(r, key)
  local origins = origins_of[r]
  if not origins then return nil end
  local parts = split_key(key)
  for n = #parts, 1, -1 do
    local o = origins[join({ unpack(parts, 1, n) })]
    if o then return place(o, parts) end
  end
end

-- ---------------------------------------------------------------------------------------------
-- Dump: pretty, stable, valid Lua

local function is_ident(k) return type(k) == "string" and k:match("^[%a_][%w_]*$") and not ({
  ["and"] = 1, ["break"] = 1, ["do"] = 1, ["else"] = 1, ["elseif"] = 1, ["end"] = 1, ["false"] = 1, ["for"] = 1,
  ["function"] = 1, ["if"] = 1, ["in"] = 1, ["local"] = 1, ["nil"] = 1, ["not"] = 1, ["or"] = 1, ["repeat"] = 1,
  ["return"] = 1, ["then"] = 1, ["true"] = 1, ["until"] = 1, ["while"] = 1 })[k] end

local function fmt_number(v)
  if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return ("%d"):format(v) end
  for _, f in ipairs({ "%.15g", "%.16g", "%.17g" }) do
    local s = f:format(v)
    if tonumber(s) == v then return s end
  end
end

local function fmt_key(k)
  if is_ident(k) then return k end
  if type(k) == "number" then return "[" .. fmt_number(k) .. "]" end
  return ("[%q]"):format(k)
end

local function ordered_keys(t, spec)
  local keys, seen = {}, {}
  if spec and spec.kind == "struct" then
    for _, f in ipairs(spec.fields) do
      if t[f[1]] ~= nil then keys[#keys + 1] = f[1]; seen[f[1]] = true end
    end
  end
  local n = #t
  for i = 1, n do if not seen[i] then keys[#keys + 1] = i; seen[i] = true end end
  local rest = {}
  for k in pairs(t) do if not seen[k] then rest[#rest + 1] = k end end
  table.sort(rest, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) == "number"
  end)
  for _, k in ipairs(rest) do keys[#keys + 1] = k end
  return keys
end

local function is_flat(t)
  for _, v in pairs(t) do if type(v) == "table" or type(v) == "function" then return false end end
  return true
end

-- The text of a recipe function, from the file that defined it: debug.getinfo's lines, cut to the
-- `function ... end` expression that compiles to a function defined over the same lines. Returns the
-- text, or nil and why not (no file, a local of the file used as an upvalue, ...).
local function function_text(fn, srcs)
  local orig = R.function_source(fn)
  local info = debug.getinfo(orig, "Su")
  if info.what ~= "Lua" then return nil, "not a Lua function" end
  if (info.nups or 0) > 0 then
    local names = {}
    for i = 1, info.nups do names[#names + 1] = "'" .. tostring(debug.getupvalue(orig, i)) .. "'" end
    return nil, ("it uses %s, a local of its file, which a saved recipe cannot hold"):format(table.concat(names, ", "))
  end
  local file = info.source:match("^@(.*)$")
  if not file then return nil, "it was not defined in a file" end
  local src = srcs and srcs[file] or read_file(file) or read_file(R.cwd() .. "/" .. file)
  if not src then return nil, ("its file %s cannot be read"):format(file) end
  local all = {}
  for l in (src .. "\n"):gmatch("([^\n]*)\n") do all[#all + 1] = l end
  local L1, L2 = info.linedefined, info.lastlinedefined
  if L1 < 1 or L2 > #all then return nil, ("%s has no lines %d-%d"):format(file, L1, L2) end
  local starts, ends = {}, {}
  local first, last = all[L1], all[L2]
  for p in first:gmatch("()%f[%w_]function%f[^%w_]") do starts[#starts + 1] = p end
  for p in last:gmatch("%f[%w_]end%f[^%w_]()") do ends[#ends + 1] = p end
  for _, a in ipairs(starts) do
    for j = #ends, 1, -1 do
      local b = ends[j]
      local text
      if L1 == L2 then
        text = b > a and first:sub(a, b - 1) or nil
      else
        local parts = { first:sub(a) }
        for k = L1 + 1, L2 - 1 do parts[#parts + 1] = all[k] end
        parts[#parts + 1] = last:sub(1, b - 1)
        text = table.concat(parts, "\n")
      end
      local chunk = text and loadstring("return " .. text, "=check", "t")
      if chunk then
        setfenv(chunk, {})
        local res = { pcall(chunk) }
        if res[1] and #res == 2 and type(res[2]) == "function" then
          local i2 = debug.getinfo(res[2], "S")
          if i2.lastlinedefined - i2.linedefined == L2 - L1 then return text end
        end
      end
    end
  end
  return nil, ("its text could not be found at %s:%d"):format(file, L1)
end

local function dump_value(v, spec, indent, out, ctx, path)
  ctx, path = ctx or { problems = {} }, path or ""
  local t = type(v)
  if t == "string" then out[#out + 1] = ("%q"):format(v):gsub("\\\n", "\\n")
  elseif t == "number" then out[#out + 1] = fmt_number(v)
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "function" then
    local text, why = function_text(v, ctx.srcs)
    if text then
      out[#out + 1] = text
    else
      ctx.problems[#ctx.problems + 1] = ("%s: the function's source cannot be saved: %s"):format(path, why)
      out[#out + 1] = "nil --[[ <function: source not saved> ]]"
    end
  elseif t == "table" then
    local keys = ordered_keys(v, spec)
    local n = #v
    -- a removed key (nil where the default is not): `false`, so that loading the dump does not bring the
    -- default back
    local removed = {}
    if spec and spec.kind == "struct" then
      for _, f in ipairs(spec.fields) do
        local fs = f[2]
        if v[f[1]] == nil and fs.nullable and fs.kind ~= "boolean" and
          (fs.default ~= nil or (fs.kind == "struct" and not fs.absent)) then
          removed[#removed + 1] = f[1]
        end
      end
    end
    if #keys == 0 and #removed == 0 then out[#out + 1] = "{}"; return end
    if is_flat(v) and #keys + #removed <= 8 and #removed == 0 then
      local items = {}
      for _, k in ipairs(keys) do
        local sub = {}
        dump_value(v[k], nil, indent, sub, ctx, path .. "." .. tostring(k))
        items[#items + 1] = ((type(k) == "number" and k <= n) and "" or (fmt_key(k) .. " = ")) .. table.concat(sub)
      end
      out[#out + 1] = "{ " .. table.concat(items, ", ") .. " }"
      return
    end
    out[#out + 1] = "{\n"
    local pad = indent .. "  "
    for _, k in ipairs(keys) do
      local x = v[k]
      local sub_spec = spec and (spec.kind == "struct" and spec.by[k] or spec.kind == "array" and spec.elem) or nil
      if type(x) == "function" then
        local i = debug.getinfo(R.function_source(x), "S")
        out[#out + 1] = ("%s-- %s = <function> from %s:%d\n"):format(pad, fmt_key(k), i.short_src, i.linedefined)
      end
      out[#out + 1] = pad .. ((type(k) == "number" and k <= n) and "" or (fmt_key(k) .. " = "))
      dump_value(x, sub_spec, pad, out, ctx, path == "" and tostring(k) or (path .. "." .. tostring(k)))
      out[#out + 1] = ",\n"
    end
    for _, k in ipairs(removed) do out[#out + 1] = pad .. fmt_key(k) .. " = false, -- removed\n" end
    out[#out + 1] = indent .. "}"
  else
    out[#out + 1] = "nil --[[ " .. t .. " ]]"
  end
end

R.UNRESUMABLE_MARK = "-- pft-unresumable: "
R.function_text = function_text -- (fn) -> its source text, or nil and why not

-- R.dump(t) -> Lua source `return { ... }`, keys in schema order, a removed key as `false`, a function
-- as its source text (recovered from the file that defined it); and the list of problems: functions
-- whose source cannot be recovered. Loading the source with R.load gives back t (docs/training.md).
-- When there are problems the source starts with R.UNRESUMABLE_MARK lines and such a function is nil.
-- R.dump_checked(t) -> the same source, and the problems (an array of messages, empty when none).
function R.dump_checked(t)
  local srcs = {}
  local origins = origins_of[t]
  if origins then
    for _, o in pairs(origins) do if o.file and o.src then srcs[o.file] = o.src end end
  end
  local ctx = { srcs = srcs, problems = {} }
  local out = { "return " }
  dump_value(t, SCHEMA, "", out, ctx, "")
  out[#out + 1] = "\n"
  local text = table.concat(out)
  if #ctx.problems > 0 then
    local head = {}
    for _, p in ipairs(ctx.problems) do head[#head + 1] = R.UNRESUMABLE_MARK .. p:gsub("\n", " ") .. "\n" end
    text = table.concat(head) .. text
  end
  return text, ctx.problems
end

function R.dump(t) return (R.dump_checked(t)) end

-- ---------------------------------------------------------------------------------------------
-- Docs: the key table of docs/recipes.md

local function fmt_default(spec)
  local d = spec.default
  if spec.kind == "struct" then return spec.absent and "none" or "" end
  if spec.kind == "array" then return "`{}`" end
  if d == nil then return "none" end
  local out = {}
  dump_value(d, nil, "", out)
  return "`" .. table.concat(out) .. "`"
end

-- R.doc_table() -> the markdown table of every key: | key | type | default | meaning |
function R.doc_table()
  local lines = { "| key | type | default | meaning |", "|---|---|---|---|" }
  for _, e in ipairs(all_paths(SCHEMA)) do
    local s = e.spec
    local doc = EVERY_DOCS[e.path] or s.doc or ""
    local default = fmt_default(s)
    if e.path == "name" then default = "file name" end
    if e.path == "train.best_metric" then default = "`\"accuracy\"`" end
    if e.path:match("^data%.%w+%.format$") then default = "from extension" end
    local split, key = e.path:match("^data%.(%w+)%.([%w_]+)$")
    if (split == "dev" or split == "test") then
      for _, k in ipairs(INHERITED_SPLIT_KEYS) do if k == key then default = "`data.train`'s" end end
      if key == "format" then default = "from extension, else `data.train`'s" end
    end
    if e.path == "output.dir" then default = "`runs/<name>-<time>`" end
    lines[#lines + 1] = ("| `%s` | %s | %s | %s |"):format(e.path, s.tname, default, doc:gsub("|", "\\|"))
  end
  return table.concat(lines, "\n") .. "\n"
end

return R
