-- Checked before training (issue 10, part 3): each mistake here used to pass `pft validate` and fail only
-- mid-run or after the whole run. Each must now fail `pft validate`, and `pft train` before it writes a run
-- directory, with a message that names the file, key or line. Fixtures: tests/fixtures/preflight/ (ok.lua is a
-- recipe that passes; each test breaks one thing with an override) and the tiny models in tests/fixtures/bert/.
local check = require "check"
local R = require "pft.recipe"
local P = require "pft.preflight"

local T = {}
local ROOT = R.abspath(TEST_ROOT)
local FIX = "tests/fixtures/preflight"

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Runs build/pft in the repository root; returns output and exit code.
local function pft(args)
  local marker = "__pft_exit_code="
  local p = assert(io.popen(("cd %s && %s %s 2>&1; echo %s$?"):format(sh_quote(ROOT), sh_quote(R.abspath(TEST_PFT)), args, marker)))
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match(marker .. "(%d+)%s*$"))
  return (out:gsub(marker .. "%d+%s*$", "")), code
end

local function has(s, needle) check.truthy(s:find(needle, 1, true), s .. "\n-- lacks: " .. needle) end

-- `pft validate ok.lua OVERRIDES` must fail (exit 1) with every needle in its output; returns the output.
local function validate_fails(overrides, needles, recipe)
  local out, code = pft("validate " .. (recipe or FIX .. "/ok.lua") .. " " .. overrides)
  check.eq(code, 1, "exit code of validate " .. overrides .. ": " .. out)
  for _, n in ipairs(needles) do has(out, n) end
  return out
end

-- R.load + P.check in this process, paths made absolute (the runner's cwd may not be the root); the
-- error message, or nil when both pass.
local function load_error(overrides, recipe)
  local over = { "model.name=" .. ROOT .. "/tests/fixtures/bert/tiny_seqcls" }
  for _, s in ipairs({ "train", "dev", "test" }) do
    over[#over + 1] = ("data.%s.path=%s/%s/%s.tsv"):format(s, ROOT, FIX, s)
  end
  for _, o in ipairs(overrides or {}) do
    over[#over + 1] = (o:gsub("@/", ROOT .. "/"))
  end
  local ok, err = pcall(function() P.check(R.load(ROOT .. "/" .. (recipe or FIX .. "/ok.lua"), over)) end)
  if ok then return nil end
  return tostring(err)
end

local function load_fails(overrides, needles, recipe)
  local err = load_error(overrides, recipe)
  check.truthy(err, "no error for " .. table.concat(overrides, " "))
  for _, n in ipairs(needles) do has(err, n) end
  return err
end

function T.ok_recipe_passes()
  check.eq(load_error({}), nil, "ok.lua")
  local out, code = pft("validate " .. FIX .. "/ok.lua")
  check.eq(code, 0, "validate ok.lua: " .. out)
end

-- data.test / data.dev: missing, or a label the training data does not have
function T.test_file_missing()
  load_fails({ "data.test.path=@/" .. FIX .. "/nope.tsv" }, { "data.test", "nope.tsv" })
  validate_fails("data.test.path=" .. FIX .. "/nope.tsv", { "data.test", "nope.tsv" })
end

function T.dev_file_missing()
  validate_fails("data.dev.path=" .. FIX .. "/nope.tsv", { "data.dev", "nope.tsv" })
end

function T.test_label_unseen_in_training()
  local want = "label 'mixed' (line 8) does not occur in the training data (labels: negative, neutral, positive)"
  load_fails({ "data.test.path=@/" .. FIX .. "/test_unseen.tsv" }, { "data.test: ", "test_unseen.tsv", want })
  validate_fails("data.test.path=" .. FIX .. "/test_unseen.tsv", { "data.test: ", "test_unseen.tsv", want })
end

function T.dev_label_unseen_in_training()
  validate_fails("data.dev.path=" .. FIX .. "/dev_unseen.tsv", { "data.dev: ", "dev_unseen.tsv",
    "label 'mixed' (line 4) does not occur in the training data" })
end

-- train.best_metric the task does not produce
function T.best_metric_typo()
  load_fails({ "train.best_metric=acc" }, { "train.best_metric 'acc'", "accuracy", "did you mean 'accuracy'" })
  validate_fails("train.best_metric=f1", { "train.best_metric 'f1'", "f1_macro" })
end

function T.best_metric_of_another_task()
  local over = { "task.kind=regression", "model.name=@/tests/fixtures/bert/tiny_regression",
    "data.train.path=@/tests/fixtures/data/regression.csv", "data.train.text=sentence1", "data.train.label=score",
    "~data.dev", "~data.test" }
  check.eq(load_error({ over[1], over[2], over[3], over[4], over[5], over[6], over[7], "train.best_metric=spearman" }), nil,
    "spearman is a regression metric")
  load_fails({ over[1], over[2], over[3], over[4], over[5], over[6], over[7], "train.best_metric=accuracy" },
    { "train.best_metric 'accuracy'", "regression", "pearson" })
  validate_fails("task.kind=regression model.name=tests/fixtures/bert/tiny_regression data.train.path=tests/fixtures/data/regression.csv "
    .. "data.train.text=sentence1 data.train.label=score '~data.dev' '~data.test' train.best_metric=f1_macro",
    { "train.best_metric 'f1_macro'", "regression" })
end

-- eval.metrics: each name one the task produces
function T.eval_metrics_of_the_task()
  load_fails({ 'eval.metrics={"bogus"}' }, { "eval.metrics[1] 'bogus'", "classification produces" })
  check.eq(load_error({ 'eval.metrics={"mcc","loss"}' }), nil, "mcc and loss are classification metrics")
end

-- A child of sst2 that switches to regression selects by pearson (sst2 leaves best_metric to the task):
-- it used to inherit accuracy, train, and die at the first evaluation.
function T.a_regression_child_of_sst2_selects_by_pearson()
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write('return { base = "sst2", task = { kind = "regression" } }\n')
  f:close()
  local ok, r = pcall(R.load, path)
  os.remove(path)
  check.truthy(ok, tostring(r))
  check.eq(ok and r.train.best_metric, "pearson", "best_metric follows the task")
end

-- the model: vocab.txt vs vocab_size, max_length vs max_position_embeddings, dropout
function T.vocab_larger_than_vocab_size()
  local want = "vocab.txt has 99 entries but config.json vocab_size is 90"
  load_fails({ "model.name=@/" .. FIX .. "/model_bigvocab" }, { "model_bigvocab", want })
  validate_fails("model.name=" .. FIX .. "/model_bigvocab", { "model " .. FIX .. "/model_bigvocab: " .. want })
end

function T.max_length_above_max_position_embeddings()
  load_fails({ "model.max_length=100" }, { "model.max_length 100", "max_position_embeddings 64" })
  validate_fails("model.max_length=65", { "model.max_length 65", "max_position_embeddings 64" })
  check.eq(load_error({ "model.max_length=64" }), nil, "64 fits")
end

function T.config_dropout_out_of_range()
  local err = load_fails({ "model.name=@/" .. FIX .. "/model_dropout" }, { "config.json", "hidden_dropout_prob", "2" })
  has(err, "attention_probs_dropout_prob")
  validate_fails("model.name=" .. FIX .. "/model_dropout", { "hidden_dropout_prob", "-0.5" })
end

-- numbers: finite, integers within 2^53 and a sane maximum, in every number key
function T.numbers_must_be_finite_and_in_range()
  load_fails({ "train.epochs=1e300" }, { "train.epochs must be an integer >= 1 and <=", "1e+300" })
  validate_fails("train.epochs=1e300", { "override 'train.epochs=1e300': train.epochs must be an integer >= 1 and <=" })
  validate_fails("optim.lr=inf", { "optim.lr must be a finite number > 0", "inf" })
  validate_fails("optim.lr=1e999", { "optim.lr must be a finite number > 0" })
  validate_fails("train.max_steps=1e400", { "train.max_steps must be a finite integer >= 1" })
  validate_fails("train.seed=1180591620717411303424", { "train.seed must be an integer >= 0 and <= 2^53" })
  validate_fails("", { "big_seed.lua:4: train.seed must be an integer >= 0 and <= 2^53" }, FIX .. "/big_seed.lua")
  validate_fails("lr_schedule.warmup=-inf", { "lr_schedule.warmup must be a finite number >= 0" })
  validate_fails("'optim.betas={0.9, 1e999}'", { "optim.betas must be a list of 2 numbers", "inf" })
  -- every number key of the schema refuses inf, nan and 2^60
  local function each(spec, path)
    if spec.kind == "struct" then
      for _, f in ipairs(spec.fields) do each(f[2], path and (path .. "." .. f[1]) or f[1]) end
    elseif spec.kind == "number" then
      for _, v in ipairs({ math.huge, -math.huge, 0 / 0 }) do
        check.eq(spec.check(v), false, path .. " accepts " .. tostring(v))
      end
      if spec.tname == "integer" then check.eq(spec.check(2 ^ 60), false, path .. " accepts 2^60") end
    elseif spec.kind == "list" then
      each(spec.elem, path .. "[]")
    elseif spec.kind == "alt" then
      for _, a in ipairs(spec.alts) do each(a, path) end
    end
  end
  each(R.SCHEMA)
  check.eq(load_error({ "train.seed=9007199254740992", "train.max_steps=1000000" }), nil, "2^53 is a fine seed")
end

-- task.labels: duplicates, empty names, a single class
function T.task_labels_duplicates_or_empty()
  load_fails({ "task.labels={\"negative\",\"positive\",\"negative\"}" }, { "task.labels", "distinct" })
  validate_fails("'task.labels={\"negative\",\"neutral\",\"negative\"}'", { "task.labels must be", "distinct", "\"negative\"" })
  validate_fails("'task.labels={\"negative\",\"\",\"positive\"}'", { "task.labels must be", "non-empty" })
end

function T.output_dir_empty()
  load_fails({ "output.dir=" }, { "output.dir must be a non-empty string" })
  validate_fails("output.dir=", { "override 'output.dir=': output.dir must be a non-empty string" })
end

function T.one_label_classification_is_an_error()
  local want = "has only one label ('positive')"
  load_fails({ "data.train.path=@/" .. FIX .. "/one_label.tsv" }, { "data.train", "one_label.tsv", want })
  validate_fails("data.train.path=" .. FIX .. "/one_label.tsv", { "data.train", "one_label.tsv", want })
  validate_fails("'task.labels={\"positive\"}'", { "task.labels", "at least 2" })
end

-- data files: duplicate header names, CR-only or binary files, folders
function T.duplicate_header_names()
  load_fails({ "data.train.path=@/" .. FIX .. "/dup_header.tsv" }, { "dup_header.tsv", "column 'sentence'", "columns 1 and 3" })
  validate_fails("data.train.path=" .. FIX .. "/dup_header.tsv", { "dup_header.tsv", "duplicate column 'sentence'" })
  validate_fails("data.dev.path=" .. FIX .. "/dup_header.csv", { "data.dev", "dup_header.csv", "duplicate column 'label'" })
end

function T.cr_only_and_binary_files_are_not_quoted_whole()
  for _, f in ipairs({ "cr_only.tsv", "binary.tsv" }) do
    local out = validate_fails("data.train.path=" .. FIX .. "/" .. f, { f })
    check.truthy(#out < 600, ("%s: a message of %d bytes: %s"):format(f, #out, out))
  end
  validate_fails("data.train.path=" .. FIX .. "/cr_only.tsv", { "CR" })
  validate_fails("data.train.path=" .. FIX .. "/binary.tsv", { "binary" })
end

function T.data_messages_quote_at_most_80_characters()
  local D = require "pft.data"
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write("a\rb\t", ("x"):rep(5000), "\n", "a\tb\n")
  f:close()
  local err = check.raises(function() D.read({ path = path, format = "tsv" }) end, "no column 'sentence' in the header")
  check.truthy(#err < #path + 200, "a message of " .. #err .. " bytes")
  has(err, "\\x0d")
  f = assert(io.open(path, "wb"))
  f:write("sentence\tscore\n", "ok\t", ("9"):rep(400), "x\n")
  f:close()
  err = check.raises(function() D.read({ path = path, format = "tsv", label = "score" }, { task = "regression" }) end,
    "is not a finite number")
  check.truthy(#err < #path + 200, "a message of " .. #err .. " bytes")
  os.remove(path)
  check.raises(function() D.read({ path = ROOT .. "/" .. FIX .. "/dup_header.tsv" }) end,
    "dup_header.tsv:1: duplicate column 'sentence' in the header (columns 1 and 3)")
  check.raises(function() D.read({ path = ROOT .. "/" .. FIX .. "/cr_only.tsv" }) end, "CR only")
  check.raises(function() D.read({ path = ROOT .. "/" .. FIX .. "/binary.tsv" }) end, "a binary file (a NUL byte at byte 1)")
end

function T.folder_as_data_path()
  load_fails({ "data.train.path=@/" .. FIX .. "/folder.tsv" }, { "data.train", "folder.tsv", "is a directory" })
  validate_fails("data.test.path=" .. FIX .. "/folder.tsv", { "data.test", "folder.tsv", "is a directory" })
  local D = require "pft.data"
  check.raises(function() D.read({ path = ROOT .. "/" .. FIX .. "/folder.tsv" }) end, "is a directory")
end

-- `pft train` fails the same way before it creates the run directory
function T.train_fails_before_the_run_directory()
  local dir = os.tmpname()
  os.remove(dir)
  local cases = {
    { "data.test.path=" .. FIX .. "/test_unseen.tsv", "label 'mixed' (line 8) does not occur in the training data" },
    { "model.name=" .. FIX .. "/model_bigvocab", "vocab.txt has 99 entries" },
    { "train.best_metric=acc", "train.best_metric 'acc'" },
    { "train.epochs=1e300", "train.epochs must be" },
  }
  for _, c in ipairs(cases) do
    local out, code = pft(("train %s/ok.lua %s output.dir=%s"):format(FIX, c[1], sh_quote(dir)))
    check.eq(code, 1, "exit code of train " .. c[1] .. ": " .. out)
    has(out, c[2])
    local f = io.open(dir, "r")
    if f then f:close() end
    check.eq(f, nil, "train " .. c[1] .. " created " .. dir)
  end
  -- and T.run, given a recipe table (not through R.load), runs the same checks
  local r = R.load(ROOT .. "/" .. FIX .. "/ok.lua", { "model.name=" .. ROOT .. "/tests/fixtures/bert/tiny_seqcls",
    "data.train.path=" .. ROOT .. "/" .. FIX .. "/train.tsv", "data.dev.path=" .. ROOT .. "/" .. FIX .. "/dev.tsv",
    "data.test.path=" .. ROOT .. "/" .. FIX .. "/nope.tsv", "output.dir=" .. dir })
  check.raises(function() require("pft.train").run(r, { quiet = true }) end, "data.test")
  local f = io.open(dir, "r")
  if f then f:close() end
  check.eq(f, nil, "T.run created " .. dir)
end

return T
