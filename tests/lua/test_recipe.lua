-- pft.recipe: loading, validation errors with file:line, overrides, base inheritance, dump, docs.
local R = require "pft.recipe"
local check = require "check"

local T = {}
local FIX = "tests/fixtures/recipes/"

local function fixture(name) return TEST_ROOT .. "/" .. FIX .. name end

-- The message of the error fn raises (error objects: their msg).
local function err_of(fn)
  local ok, e = pcall(fn)
  check.eq(ok, false, "raised")
  return type(e) == "table" and e.msg or tostring(e)
end

local function has(s, needle, what) check.truthy(s:find(needle, 1, true), (what or "text") .. ": " .. s .. " lacks " .. needle) end

function T.defaults_filled()
  local r = R.load("sst2")
  check.eq(r.name, "sst2", "name from the file")
  check.eq(r.model.name, "all-MiniLM-L6-v2", "model")
  check.eq(r.optim.lr, 5e-5, "optim.lr from sst2.lua")
  check.eq(r.optim.eps, 1e-8, "optim.eps default")
  check.eq(r.train.best_metric, "accuracy", "best_metric")
  check.eq(r.lr_schedule.cut_frac, 0.1, "lr_schedule default")
  check.eq(r.data.train.format, "tsv", "format from the extension")
  check.eq(r.data.train.path:sub(1, 1), "/", "absolute data path")
  has(r.data.train.path, "/sst2/train.tsv", "train path")
  check.eq(r.data.train.path:find("..", 1, true), nil, "normalised path")
  check.eq(r.base, nil, "resolved recipes carry no base")
  check.eq(#r.schedule.rules, 0, "rules")
end

function T.unknown_key_with_suggestion_and_line()
  local e = err_of(function() R.load(fixture("unknown_key.lua")) end)
  has(e, "unknown_key.lua:5: unknown key 'optim.lrr' (did you mean 'optim.lr'?)")
  e = err_of(function() R.validate({ epochs = 2 }, "x.lua", "return {\n  epochs = 2 }") end)
  has(e, "x.lua:2: unknown key 'epochs' (did you mean 'train.epochs'?)", "a key from another section")
end

function T.wrong_type_names_key_and_line()
  local e = err_of(function() R.load(fixture("bad_type.lua")) end)
  has(e, "bad_type.lua:4: optim.lr must be a number > 0 (got string \"fast\")")
  e = err_of(function() R.validate({ train = { epochs = 1.5 } }, "x.lua", "") end)
  has(e, "train.epochs must be an integer >= 1 (got number 1.5)")
  e = err_of(function() R.validate({ optim = { betas = { 0.9 } } }, "x.lua", "") end)
  has(e, "optim.betas must be a list of 2 numbers")
end

function T.bad_enum_lists_choices()
  local e = err_of(function() R.load(fixture("bad_enum.lua")) end)
  has(e, "bad_enum.lua:3: schedule.preset must be one of 'full', 'head', 'top_k', 'gradual', 'chain_thaw', 'bitfit', 'lora' (got string \"halfway\")")
end

function T.bad_selector_syntax_and_rules()
  local e = err_of(function() R.validate({ schedule = { initial = "layers[2]" } }, "x.lua", "") end)
  has(e, "schedule.initial: bad selector 'layers[2]' is not a selector")
  e = err_of(function() R.validate({ schedule = { rules = { { at = { epoch = 1 } } } } }, "x.lua", "") end)
  has(e, "schedule.rules[1] needs exactly one of unfreeze, freeze (got none)")
  e = err_of(function() R.validate({ schedule = { rules = { { at = { epoch = 1, step = 3 }, freeze = "head" } } } }, "x.lua", "") end)
  has(e, "schedule.rules[1].at needs exactly one of epoch, step, fraction, plateau (got epoch, step)")
  e = err_of(function() R.validate({ lr = { discriminative = { decay = 0.9, spread = { 1e-5, 1e-4 } } } }, "x.lua", "") end)
  has(e, "lr.discriminative needs exactly one of decay, spread")
end

function T.restricted_environment()
  local e = err_of(function() R.load(fixture("sandbox.lua")) end)
  has(e, "sandbox.lua:3:")
  has(e, "'os'")
  e = err_of(function() R.load(fixture("syntax.lua")) end)
  has(e, "syntax.lua:3:")
  local ok, obj = pcall(R.load, fixture("syntax.lua"))
  check.eq(type(obj) == "table" and obj.syntax, true, "a syntax error is marked for exit code 3")
end

function T.override_parsing_typed_by_schema()
  local o = R.parse_override("optim.lr=3e-5")
  check.eq(o.value, 3e-5, "number")
  check.eq(R.parse_override("data.shuffle=false").value, false, "boolean")
  check.eq(R.parse_override("model.name=bert-base").value, "bert-base", "string")
  check.eq(R.parse_override("model.name=123").value, "123", "a string key keeps digits as text")
  check.eq(R.parse_override("schedule.every=500").value, 500, "epoch-or-number: number")
  check.eq(R.parse_override("schedule.every=epoch").value, "epoch", "epoch-or-number: epoch")
  check.all_near(R.parse_override("optim.betas=0.8,0.9").value, { 0.8, 0.9 }, 0, "comma list")
  check.all_near(R.parse_override("lr.discriminative.spread={1e-5, 1e-4}").value, { 1e-5, 1e-4 }, 0, "table literal")
  local rules = R.parse_override('schedule.rules={{at={epoch=1}, unfreeze="layer[3]"}}').value
  check.eq(rules[1].at.epoch, 1, "nested literal")
  check.eq(rules[1].unfreeze, "layer[3]", "nested literal string")
  local sel = R.parse_override("schedule.initial=head,pooler").value
  check.eq(#sel, 2, "selector union from commas")
  check.eq(R.parse_override("~data.train.limit").remove, true, "~key")
  has(err_of(function() R.parse_override("optim.lrr=1") end), "override 'optim.lrr=1': unknown key 'optim.lrr' (did you mean 'optim.lr'?)")
  has(err_of(function() R.parse_override("optim.lr=fast") end), "override 'optim.lr=fast': optim.lr must be a number > 0 (got string \"fast\")")
  has(err_of(function() R.parse_override("train.epochs=0") end), "train.epochs must be an integer >= 1")
  has(err_of(function() R.parse_override("optim.lr") end), "is not key=value or ~key")
  has(err_of(function() R.parse_override("schedule.rules={os.exit(1)}") end), "cannot read")
  has(err_of(function() R.parse_override("data.preprocess=x") end), "is a function")
end

function T.overrides_apply_and_remove()
  local r = R.load("sst2", { "optim.lr=3e-5", "train.epochs=1", "data.train.limit=2000", "~data.test", "~optim.eps" })
  check.eq(r.optim.lr, 3e-5, "lr")
  check.eq(r.train.epochs, 1, "epochs")
  check.eq(r.data.train.limit, 2000, "limit")
  check.eq(r.data.test, nil, "~data.test removes the split")
  check.eq(r.optim.eps, 1e-8, "~optim.eps restores the default")
  r = R.load("sst2", { "~data.train.limit", "data.train.path=/tmp/x.csv" })
  check.eq(r.data.train.limit, nil, "~data.train.limit")
  check.eq(r.data.train.format, "csv", "format follows the new path")
  check.eq(R.where(r, "data.train.path"), "override 'data.train.path=/tmp/x.csv'", "where: override")
  has(R.where(r, "optim.lr"), "sst2.lua:", "where: file")
end

function T.base_inheritance()
  local r = R.load(fixture("child.lua"))
  check.eq(r.name, "child", "name from the top file")
  check.eq(r.train.epochs, 1, "the child's key")
  check.eq(r.train.seed, 7, "inherited sibling key")
  check.eq(r.model.max_length, 48, "inherited section")
  check.all_near(r.optim.betas, { 0.8, 0.99 }, 0, "inherited list")
  check.eq(r.data.dev, nil, "dev = false removes the split")
  check.eq(type(r.data.preprocess), "function", "functions kept")
  check.eq(r.data.preprocess("ABC"), "abc", "the function works")
  local v = R.load("sst2-top2")
  check.eq(v.schedule.preset, "top_k", "variant key")
  check.eq(v.model.max_length, 64, "inherited from sst2")
  check.eq(v.name, "sst2-top2", "variant name")
end

function T.base_cycle_is_an_error()
  local e = err_of(function() R.load(fixture("cycle_a.lua")) end)
  has(e, "recipe base cycle:")
  has(e, "cycle_a.lua -> ")
  has(e, "cycle_b.lua -> ")
end

function T.missing_recipe()
  local ok, e = pcall(R.load, "no-such-recipe")
  check.eq(ok, false, "raised")
  check.eq(e.usage, true, "a usage error")
  has(e.msg, "no recipe named 'no-such-recipe'")
end

function T.dump_loads_back_to_the_same_table()
  local r = R.load("sst2-llrd", { "schedule.rules={{at={plateau={patience=2}}, unfreeze={\"all\", minus=\"embeddings\"}}}" })
  local src = R.dump(r)
  local name = os.tmpname() .. ".lua"
  local f = assert(io.open(name, "w"))
  f:write(src)
  f:close()
  local r2 = R.load(name)
  os.remove(name)
  check.eq(R.dump(r2), src, "dump(load(dump(r))) == dump(r)")
  local chunk = assert(loadstring(src))
  local t = chunk()
  check.eq(t.lr.discriminative.decay, 0.8, "values")
  check.eq(t.schedule.rules[1].unfreeze.minus, "embeddings", "selector difference")
  local with_fn = R.dump(R.load(fixture("child.lua")))
  has(with_fn, "-- preprocess = <function>", "functions as comments")
  check.truthy(loadstring(with_fn), "valid Lua with a function comment")
end

function T.every_shipped_recipe_loads()
  local n = 0
  for _, name in ipairs({ "sst2", "sst2-head", "sst2-top2", "sst2-gradual", "sst2-bitfit", "sst2-full", "sst2-llrd", "sst2-chainthaw",
    "conll2003", "conll2003-top2", "bert-frozen" }) do
    local r = R.load(name)
    check.eq(r.name, name, "name")
    n = n + 1
  end
  check.eq(n, 11, "recipes")
  local ner = R.load("conll2003")
  check.eq(ner.data.dev.format, "conll", "conll2003: dev takes train's format (a .txt file)")
  check.eq(ner.train.best_metric, "f1", "conll2003: selected by entity f1")
end

function T.docs_carry_the_key_table()
  local f = assert(io.open(TEST_ROOT .. "/docs/recipes.md"))
  local doc = f:read("*a")
  f:close()
  check.truthy(doc:find(R.doc_table(), 1, true), "docs/recipes.md contains `pft recipes-doc` output verbatim (regenerate it)")
end

-- The presets live in one registry (pft.schedule's PRESETS): the schema's enum and the docs' table follow it.
function T.presets_come_from_one_registry()
  local S = require "pft.schedule"
  check.eq(table.concat(R.SCHEMA.by.schedule.by.preset.choices, ","), table.concat(S.preset_names(), ","), "schema enum")
  check.eq(#S.PRESETS, 7, "seven presets")
  for _, p in ipairs(S.PRESETS) do
    check.truthy(p.start ~= "" and p.after ~= "" and type(p.build) == "function", p.name .. " described and built")
  end
  local f = assert(io.open(TEST_ROOT .. "/docs/recipes.md"))
  local doc = f:read("*a")
  f:close()
  check.truthy(doc:find(S.preset_table(), 1, true), "docs/recipes.md contains the preset table of S.preset_table() verbatim")
end

return T
