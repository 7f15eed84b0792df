-- pft.compare: runs side by side. A sweep directory or any run directories -> one row per setting (seeds
-- averaged), the varied settings as columns, best dev and test metric as mean and standard deviation,
-- trainable parameters, optimizer memory, wall time, tokens/s; sorted by the metric, the best marked.
--
--   local C = require "pft.compare"
--   local runs = C.collect({ "sweeps/sst2-freeze-1a2b3c4d" })   -- or run directories
--   local t = C.table(runs, { metric = nil })                    -- nil: the runs' best_metric
--   io.write(C.format(t, "text"))                                -- text | md | csv | json
--   C.diff(runs[1], runs[2]) -> { {key, a, b}, ... }             -- settings that differ
--   C.charts(runs, t, "charts/") -> written files, or nil and why (gnuplot missing)
local R = require "pft.recipe"
local fs = require "pft.fs"
local cjson = require "cjson"
local core = require "pft.core"
local Plan = require "pft.plan"

local C = {}

local function fail(msg) error("compare: " .. msg, 0) end

local function read_json(path)
  local s = fs.read_file(path)
  if not s then return nil end
  local ok, v = pcall(cjson.decode, s)
  return ok and v or nil
end

-- Settings as flat keys ("schedule.k" = 2); lists and functions as text, run-specific keys left out.
local SKIP = { ["output.dir"] = true, name = true }
local function flat(t, prefix, out)
  out = out or {}
  for k, v in pairs(t) do
    local key = prefix and (prefix .. "." .. tostring(k)) or tostring(k)
    if SKIP[key] then -- not a setting
    elseif type(v) == "table" and next(v) ~= nil and #v == 0 then flat(v, key, out)
    elseif type(v) == "table" then
      local parts = {}
      for i, x in ipairs(v) do parts[i] = type(x) == "table" and "{...}" or tostring(x) end
      out[key] = "{" .. table.concat(parts, ", ") .. "}"
    else out[key] = tostring(v) end
  end
  return out
end

-- One run directory: its recipe, summary, status, dev history and training curve.
local function read_run(dir, varied)
  local src = fs.read_file(dir .. "/recipe.lua")
  if not src then return nil end
  local ok, recipe = pcall(R.run_source, src, dir .. "/recipe.lua")
  if not ok or type(recipe) ~= "table" then return nil end
  local run = { dir = dir, recipe = recipe, settings = flat(recipe), summary = read_json(dir .. "/summary.json") or {},
    status = ((fs.read_file(dir .. "/status") or "unknown"):match("^(%S+)")), dev = {}, train = {}, varied = varied }
  for line in ((fs.read_file(dir .. "/metrics.jsonl") or "") .. "\n"):gmatch("([^\n]*)\n") do
    local okl, rec = pcall(cjson.decode, line)
    if okl and type(rec) == "table" then
      if rec.split == "dev" then run.dev[#run.dev + 1] = rec elseif rec.split == "train" then run.train[#run.train + 1] = rec end
    end
  end
  return run
end

-- C.collect(paths) -> runs: each path a sweep directory (its cells, in order) or a run directory.
function C.collect(paths)
  local runs = {}
  for _, p in ipairs(paths) do
    local sweep = read_json(p .. "/sweep.json")
    if sweep then
      for _, cell in ipairs(sweep.cells or {}) do
        local r = read_run(p .. "/" .. cell.name, cell.varied)
        if r then r.cell = cell.name; runs[#runs + 1] = r end
      end
    else
      local r = read_run(p)
      if not r then fail(("%s is neither a run directory (recipe.lua) nor a sweep (sweep.json)"):format(p)) end
      runs[#runs + 1] = r
    end
  end
  if #runs == 0 then fail("no runs found in " .. table.concat(paths, ", ")) end
  return runs
end

-- The settings that differ between runs (sweep cells: their grid keys), seeds last.
local function varied_keys(runs)
  local keys, seen = {}, {}
  for _, r in ipairs(runs) do
    for k, v in pairs(r.settings) do
      for _, o in ipairs(runs) do
        if o.settings[k] ~= v and not seen[k] then seen[k] = true; keys[#keys + 1] = k end
      end
    end
  end
  table.sort(keys, function(a, b)
    if (a == "train.seed") ~= (b == "train.seed") then return b == "train.seed" end
    return a < b
  end)
  return keys
end

local function lower_is_better(m) return m:match("loss") ~= nil or m == "mse" end

local function mean_std(xs)
  if #xs == 0 then return nil, nil end
  local s = 0
  for _, x in ipairs(xs) do s = s + x end
  local m, v = s / #xs, 0
  for _, x in ipairs(xs) do v = v + (x - m) ^ 2 end
  return m, #xs > 1 and math.sqrt(v / (#xs - 1)) or 0
end

-- C.table(runs, {metric}) -> { columns (varied keys but the seed), metric, rows = { {values, n, dev = {m, s},
-- test = {m, s}, params, optimizer_bytes, wall_s, tokens_per_s, runs, best}, ... } } sorted best first. A
-- metric a run's task does not report is left blank, not an error.
function C.table(runs, opts)
  opts = opts or {}
  local metric = opts.metric or runs[1].recipe.train.best_metric
  local keys = varied_keys(runs)
  local cols = {}
  for _, k in ipairs(keys) do if k ~= "train.seed" then cols[#cols + 1] = k end end
  local groups, order = {}, {}
  for _, r in ipairs(runs) do
    local vals = {}
    for i, k in ipairs(cols) do vals[i] = r.settings[k] or "" end
    local id = table.concat(vals, "\0")
    if not groups[id] then groups[id] = { values = vals, runs = {} }; order[#order + 1] = id end
    table.insert(groups[id].runs, r)
  end
  local rows = {}
  for _, id in ipairs(order) do
    local g, dev, test, params, obytes, wall, tps = groups[id], {}, {}, {}, {}, {}, {}
    for _, r in ipairs(g.runs) do
      local s = r.summary
      local best = nil
      for _, h in ipairs(r.dev) do
        local v = h.metrics and h.metrics[metric]
        if type(v) == "number" and (best == nil or (lower_is_better(metric) and v < best) or (not lower_is_better(metric) and v > best)) then
          best = v
        end
      end
      if best then dev[#dev + 1] = best end
      if s.test and type(s.test[metric]) == "number" then test[#test + 1] = s.test[metric] end
      if s.trainable_params then params[#params + 1] = s.trainable_params end
      if s.optimizer_bytes then obytes[#obytes + 1] = s.optimizer_bytes end
      if s.wall_s then wall[#wall + 1] = s.wall_s end
      if s.tokens_per_s then tps[#tps + 1] = s.tokens_per_s end
    end
    local row = { values = g.values, n = #g.runs, runs = g.runs }
    row.dev = { mean_std(dev) }
    row.test = { mean_std(test) }
    row.params, row.optimizer_bytes = mean_std(params), mean_std(obytes)
    row.wall_s, row.tokens_per_s = mean_std(wall), mean_std(tps)
    rows[#rows + 1] = row
  end
  local function score(r) return r.test[1] or r.dev[1] end
  table.sort(rows, function(a, b)
    local x, y = score(a), score(b)
    if x == nil or y == nil then return x ~= nil end
    if lower_is_better(metric) then return x < y end
    return x > y
  end)
  if rows[1] and score(rows[1]) then rows[1].best = true end
  return { columns = cols, metric = metric, rows = rows }
end

local function num(m, s, fmt)
  if m == nil then return "" end
  local t = (fmt or "%.4f"):format(m)
  if s and s > 0 then t = t .. " ± " .. (fmt or "%.4f"):format(s) end
  return t
end

-- The table's cells as text: header then one array per row.
local function cells(t)
  local head = { "" }
  for _, c in ipairs(t.columns) do head[#head + 1] = c end
  for _, h in ipairs({ "runs", "dev " .. t.metric, "test " .. t.metric, "trainable", "optimizer", "wall s", "tokens/s" }) do
    head[#head + 1] = h
  end
  local out = { head }
  for _, r in ipairs(t.rows) do
    local row = { r.best and "*" or "" }
    for _, v in ipairs(r.values) do row[#row + 1] = v end
    row[#row + 1] = tostring(r.n)
    row[#row + 1] = num(r.dev[1], r.dev[2])
    row[#row + 1] = num(r.test[1], r.test[2])
    row[#row + 1] = r.params and Plan.group3(math.floor(r.params + 0.5)) or ""
    row[#row + 1] = r.optimizer_bytes and Plan.mib(r.optimizer_bytes) or ""
    row[#row + 1] = num(r.wall_s, nil, "%.1f")
    row[#row + 1] = num(r.tokens_per_s, nil, "%.0f")
    out[#out + 1] = row
  end
  return out
end

local function utf8_len(s) return #s:gsub("[\128-\191]", "") end

-- C.format(t, "text" | "md" | "csv" | "json") -> string
function C.format(t, fmt)
  fmt = fmt or "text"
  if fmt == "json" then
    local rows = {}
    for i, r in ipairs(t.rows) do
      local v = {}
      for j, c in ipairs(t.columns) do v[c] = r.values[j] end
      rows[i] = { settings = v, runs = r.n, best = r.best or false, dev_mean = r.dev[1], dev_std = r.dev[2],
        test_mean = r.test[1], test_std = r.test[2], trainable_params = r.params, optimizer_bytes = r.optimizer_bytes,
        wall_s = r.wall_s, tokens_per_s = r.tokens_per_s }
    end
    return cjson.encode({ metric = t.metric, rows = rows }) .. "\n"
  end
  local grid = cells(t)
  local lines = {}
  if fmt == "csv" then
    for _, row in ipairs(grid) do
      local q = {}
      for i, c in ipairs(row) do q[i] = c:find('[,"\n]') and ('"' .. c:gsub('"', '""') .. '"') or c end
      lines[#lines + 1] = table.concat(q, ",")
    end
  elseif fmt == "md" then
    for i, row in ipairs(grid) do
      lines[#lines + 1] = "| " .. table.concat(row, " | ") .. " |"
      if i == 1 then lines[#lines + 1] = "|" .. ("---|"):rep(#row) end
    end
  elseif fmt == "text" then
    local w = {}
    for _, row in ipairs(grid) do for i, c in ipairs(row) do w[i] = math.max(w[i] or 0, utf8_len(c)) end end
    for _, row in ipairs(grid) do
      local p = {}
      for i, c in ipairs(row) do p[i] = c .. (" "):rep(w[i] - utf8_len(c)) end
      lines[#lines + 1] = (table.concat(p, "  "):gsub("%s+$", ""))
    end
  else
    fail(("--format %s: text, md, csv or json"):format(tostring(fmt)))
  end
  return table.concat(lines, "\n") .. "\n"
end

-- C.diff(a, b) -> { {key, a value, b value}, ... } for the settings that differ, sorted by key
function C.diff(a, b)
  local keys, seen = {}, {}
  for _, s in ipairs({ a.settings, b.settings }) do
    for k in pairs(s) do if not seen[k] then seen[k] = true; keys[#keys + 1] = k end end
  end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    if a.settings[k] ~= b.settings[k] then out[#out + 1] = { k, a.settings[k] or "(none)", b.settings[k] or "(none)" } end
  end
  return out
end

-- Charts with gnuplot (PNG and SVG): the metric against trainable parameters and against wall time (one
-- point per row), and learning curves (training loss and the dev metric against the step, every run).
local function have_gnuplot() return os.execute("command -v gnuplot >/dev/null 2>&1") == 0 end

local function run_label(r) return (r.cell or r.dir:match("([^/]+)$") or r.dir):gsub('"', "'") end

-- A row's name on a chart: its sweep cell without the seed (a variant's name, "top2,lr=1e-4"), else its
-- varied values.
local function row_label(r)
  local cell = r.runs and r.runs[1] and r.runs[1].cell
  local name = cell and cell:gsub(",?seed=%d+", "") or ""
  if name == "" then name = table.concat(r.values, ",") end
  return (name:gsub('"', "'"))
end

function C.charts(runs, t, out_dir)
  if not have_gnuplot() then
    return nil, "charts: gnuplot not found (Debian: apt-get install gnuplot-nox); the table is above"
  end
  assert(core.mkdir(out_dir) or fs.exists(out_dir))
  local function write(name, text) fs.write_file(out_dir .. "/" .. name, text, "wb", "compare") end
  local pts = {}
  for _, r in ipairs(t.rows) do
    local y = r.test[1] or r.dev[1]
    if y and r.params then pts[#pts + 1] = ("%g %g %g \"%s\""):format(r.params, r.wall_s or 0, y, row_label(r)) end
  end
  write("points.dat", table.concat(pts, "\n") .. "\n")
  local curves = {}
  for i, r in ipairs(runs) do
    local tr, dv = {}, {}
    for _, rec in ipairs(r.train) do tr[#tr + 1] = ("%d %g"):format(rec.step, rec.loss) end
    for _, rec in ipairs(r.dev) do
      local v = rec.metrics and rec.metrics[t.metric]
      if type(v) == "number" then dv[#dv + 1] = ("%d %g"):format(rec.step, v) end
    end
    write(("train-%d.dat"):format(i), table.concat(tr, "\n") .. "\n")
    write(("dev-%d.dat"):format(i), table.concat(dv, "\n") .. "\n")
    curves[i] = run_label(r)
  end
  local files, script = {}, {}
  for _, term in ipairs({ { "pngcairo size 900,600 noenhanced", "png" }, { "svg size 900,600 noenhanced", "svg" } }) do
    local function chart(name, body)
      files[#files + 1] = out_dir .. "/" .. name .. "." .. term[2]
      script[#script + 1] = ("set terminal %s\nset output '%s/%s.%s'\n%s\nunset logscale\n"):format(term[1], out_dir, name, term[2], body)
    end
    local y = (t.rows[1] and t.rows[1].test[1]) and "test " .. t.metric or "best dev " .. t.metric
    chart("metric-vs-params", ("set xlabel 'trainable parameters'\nset ylabel '%s'\nset logscale x\nset grid\n" ..
      "plot '%s/points.dat' using 1:3 with points pt 7 notitle, '' using 1:3:4 with labels offset 0,1 notitle"):format(y, out_dir))
    chart("metric-vs-wall", ("set xlabel 'wall time (s)'\nset ylabel '%s'\nset grid\n" ..
      "plot '%s/points.dat' using 2:3 with points pt 7 notitle, '' using 2:3:4 with labels offset 0,1 notitle"):format(y, out_dir))
    local tp, dp = {}, {}
    for i, label in ipairs(curves) do
      tp[#tp + 1] = ("'%s/train-%d.dat' using 1:2 with lines title \"%s\""):format(out_dir, i, label)
      dp[#dp + 1] = ("'%s/dev-%d.dat' using 1:2 with linespoints title \"%s\""):format(out_dir, i, label)
    end
    chart("curves", ("set multiplot layout 1,2\nset xlabel 'step'\nset grid\nset ylabel 'training loss'\nplot %s\n" ..
      "set ylabel 'dev %s'\nplot %s\nunset multiplot"):format(table.concat(tp, ", "), t.metric, table.concat(dp, ", ")))
  end
  write("charts.gp", table.concat(script, "\n"))
  local ok = os.execute(("gnuplot '%s/charts.gp' >/dev/null 2>&1"):format(out_dir)) == 0
  if not ok then return nil, "charts: gnuplot failed on " .. out_dir .. "/charts.gp" end
  return files
end

return C
