-- pft.data: readers (TSV, CSV, JSONL) and their edge cases, the format registry, labels, loaders
-- (shuffling, bucketing, resuming, padding) and the tokenized-split cache. Fixtures: tests/fixtures/data/.
local pft = require "pft"
local D = require "pft.data"
local check = require "check"

local T = {}
local FIX = TEST_ROOT .. "/tests/fixtures/data/"
local TOK_DIR = TEST_ROOT .. "/tests/fixtures/tokenizer/minilm"
local SST2_DEV = TEST_ROOT .. "/../shared/data/sst2/dev.tsv"

local function tokenizer() return pft.tokenizer_load(TOK_DIR) end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(pft.mkdir(d))
  return d
end

local function rmdir(d) os.execute(("rm -rf '%s'"):format(d)) end

local function read_all(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function write_all(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

local function same_list(got, want, what)
  check.eq(#got, #want, what .. " length")
  for i = 1, #want do check.eq(got[i], want[i], ("%s[%d]"):format(what, i)) end
end

-- --- readers -------------------------------------------------------------------------------------------

function T.csv_quoted_fields_crlf_bom_and_empty_lines()
  local ds = D.read({ path = FIX .. "quoted.csv", text = "text", label = "label" })
  same_list(ds.texts, { "hello, world", "tab\there", "two\nlines", 'say "hi"', "plain text", "crlf\r\ninside", "last" }, "texts")
  same_list(ds.lines, { 2, 3, 5, 7, 8, 9, 11 }, "start lines (4 is empty; 6 and 10 are inside quotes)")
  same_list(ds.label_names, { "neg", "pos" }, "label set in byte order")
  same_list(ds.labels, { 1, 0, 1, 0, 1, 0, 1 }, "label ids")
  same_list(ds.columns, { "text", "label" }, "header without the BOM")
  check.eq(ds.skipped, 0, "nothing skipped")
end

function T.csv_without_header_by_index()
  local ds = D.read({ path = FIX .. "noheader.csv", header = false, text = 2, label = 1 })
  same_list(ds.texts, { "great film", "dull, long", "fine" }, "texts")
  same_list(ds.labels, { 1, 0, 1 }, "labels")
  check.raises(function() D.read({ path = FIX .. "noheader.csv", header = false }) end,
    "column 'sentence' is given by name but the split has header = false")
end

function T.csv_text_after_closing_quote_is_malformed()
  check.raises(function() D.read({ path = FIX .. "bad_quote.csv", text = "text" }) end,
    "bad_quote.csv:3: text after a closing quote")
  local ds = D.read({ path = FIX .. "bad_quote.csv", text = "text" }, { on_error = "skip" })
  same_list(ds.texts, { "ok", "fine" }, "texts around the bad row")
  same_list(ds.skipped_lines, { 3 }, "skipped line")
end

function T.csv_unterminated_quote_always_fails()
  check.raises(function() D.read({ path = FIX .. "unterminated.csv", text = "text" }, { on_error = "skip" }) end,
    "unterminated.csv:3: unterminated quoted field")
end

function T.tsv_keeps_text_and_skips_blank_lines()
  local ds = D.read({ path = FIX .. "small.tsv" })
  same_list(ds.texts, { "it 's a charming journey . ", "unfunny and dull ", "a gem", "flat" }, "texts kept as is")
  same_list(ds.lines, { 2, 4, 6, 7 }, "file lines")
  same_list(ds.label_names, { "0", "1" }, "labels")
  same_list(ds.labels, { 1, 0, 1, 0 }, "ids")
end

function T.tsv_without_header()
  local ds = D.read({ path = FIX .. "noheader.tsv", header = false, text = 1, label = 2 })
  check.eq(ds.n, 3, "rows")
  same_list(ds.label_names, { "0", "1", "2" }, "labels")
end

function T.unknown_column_name_names_the_header()
  check.raises(function() D.read({ path = FIX .. "small.tsv", text = "text" }) end,
    "small.tsv: no column 'text' in the header (sentence, label)")
end

function T.missing_column_fails_or_is_skipped_and_counted()
  check.raises(function() D.read({ path = FIX .. "missing.tsv" }) end,
    "missing.tsv:3: row has 1 field, column 'label' (2) missing")
  local ds = D.read({ path = FIX .. "missing.tsv" }, { on_error = "skip" })
  check.eq(ds.n, 2, "rows kept")
  check.eq(ds.skipped, 2, "rows skipped")
  same_list(ds.skipped_lines, { 3, 5 }, "skipped lines")
  check.truthy(ds.skipped_messages[1]:find("missing.tsv:3: row has 1 field", 1, true), ds.skipped_messages[1])
end

function T.empty_file_and_header_only_are_errors()
  check.raises(function() D.read({ path = FIX .. "empty.tsv" }) end, "empty.tsv: no data rows (the file is empty)")
  check.raises(function() D.read({ path = FIX .. "header_only.tsv" }) end, "header_only.tsv: no data rows (the file is empty but for its header)")
  check.raises(function() D.read({ path = FIX .. "no_such_file.tsv" }) end, "no_such_file.tsv")
end

function T.invalid_utf8_passes_through_and_is_counted()
  local ds = D.read({ path = FIX .. "invalid_utf8.tsv" })
  check.eq(ds.n, 4, "every row kept")
  check.eq(ds.texts[2], "bad \255 byte", "bytes passed through")
  check.eq(ds.invalid_utf8, 2, "rows with invalid UTF-8")
  same_list(ds.invalid_utf8_lines, { 3, 4 }, "their lines")
  -- the tokenizer drops the ill-formed sequence (core/text.h)
  local tok = tokenizer()
  local enc = pft.encode_dataset(tok, { "bad \255 byte", "bad byte" }, nil, 32)
  local b = enc:gather({ 1, 2 }, 0)
  same_list(b:ids()[1], b:ids()[2], "ids with and without the bad byte")
end

function T.jsonl_pairs_and_string_labels()
  local ds = D.read({ path = FIX .. "pairs.jsonl", text = "premise", text_pair = "hypothesis" })
  check.eq(ds.n, 3, "rows (the empty line skipped)")
  same_list(ds.pairs, { "a person rests", "a cat meows", "children are outside" }, "pairs")
  same_list(ds.label_names, { "contradiction", "entailment", "neutral" }, "labels")
  same_list(ds.labels, { 1, 0, 2 }, "ids")
  check.raises(function() D.read({ path = FIX .. "pairs.jsonl", text = 1 }) end, "JSONL rows have no column order")
end

function T.jsonl_malformed_lines()
  check.raises(function() D.read({ path = FIX .. "bad.jsonl", text = "text" }) end, "bad.jsonl:2: invalid JSON")
  local ds = D.read({ path = FIX .. "bad.jsonl", text = "text" }, { on_error = "skip" })
  same_list(ds.texts, { "ok", "fine" }, "texts")
  same_list(ds.skipped_lines, { 2, 3, 4 }, "skipped: bad JSON, an array, a missing key")
  same_list(ds.label_names, { "0", "1" }, "numeric JSON labels as written")
end

function T.label_order_integers_strings_and_given()
  same_list(D.read({ path = FIX .. "labels_int.tsv" }).label_names, { "-1", "2", "10" }, "numeric order")
  local ds = D.read({ path = FIX .. "labels_str.tsv" })
  same_list(ds.label_names, { "negative", "neutral", "positive" }, "byte order")
  same_list(D.label_set({ path = FIX .. "labels_str.tsv" }), ds.label_names, "label_set from a spec")
  same_list(D.label_set(ds), ds.label_names, "label_set from a dataset")
  local given = D.read({ path = FIX .. "labels_str.tsv" }, { labels = { "positive", "negative", "neutral" } })
  same_list(given.labels, { 0, 1, 2, 0 }, "ids follow the given order")
end

function T.unseen_evaluation_label_is_an_error()
  local train = D.read({ path = FIX .. "labels_str.tsv" })
  check.raises(function() D.read({ path = FIX .. "dev_unseen.tsv" }, { labels = train.label_names }) end,
    "dev_unseen.tsv:3: label 'mixed' was not seen in training (labels: negative, neutral, positive)")
end

function T.regression_labels()
  local ds = D.read({ path = FIX .. "regression.csv", text = "sentence1", text_pair = "sentence2", label = "score" },
    { task = "regression" })
  same_list(ds.labels, { 0.5, 4.25, 2 }, "float labels")
  check.eq(ds.label_names, nil, "no label names")
  check.raises(function()
    D.read({ path = FIX .. "regression_bad.csv", text = "sentence1", label = "score" }, { task = "regression" })
  end, "regression_bad.csv:3: label 'high' is not a finite number")
end

function T.token_classification_tags()
  local ds = D.read({ path = FIX .. "tokcls.jsonl", text = "tokens", label = "tags" }, { task = "token_classification" })
  same_list(ds.texts, { "EU rejects German call", "Peter Blackburn" }, "words joined")
  same_list(ds.label_names, { "B-MISC", "B-ORG", "B-PER", "I-PER", "O" }, "tag set")
  same_list(ds.labels[1], { 1, 4, 0, 4 }, "tags of row 1 (a JSON list)")
  same_list(ds.labels[2], { 2, 3 }, "tags of row 2 (a string)")
end

-- CoNLL column files: words and tags by column position, sentences split on blank lines, -DOCSTART-
-- skipped, CRLF; a short line is malformed (file:line), an unseen tag names its sentence's line.
function T.conll_reader()
  local ds = D.read({ path = FIX .. "ner4.conll", format = "conll", label = 4 }, { task = "token_classification" })
  check.eq(ds.n, 3, "sentences")
  same_list(ds.words[1], { "EU", "rejects", "German" }, "words of sentence 1")
  same_list(ds.texts, { "EU rejects German", "Peter Blackburn", "BRUSSELS" }, "texts: words joined by spaces")
  same_list(ds.label_names, { "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER", "O" }, "tags")
  same_list(ds.labels[2], { 3, 4 }, "tags of sentence 2 (CRLF lines)")
  same_list(ds.lines, { 3, 7, 12 }, "line of each sentence's first token")
  local two = D.read({ path = TEST_ROOT .. "/../shared/data/conll2003/valid.txt", format = "conll" },
    { task = "token_classification" })
  check.eq(two.n, 3250, "CoNLL-2003 valid: sentences (word TAG 0: the tag in column 2, the default)")
  check.raises(function() D.read({ path = FIX .. "ner_bad.conll", format = "conll" }, { task = "token_classification" }) end,
    "ner_bad.conll:4: a token line needs 2 columns (word in 1, tag in 2), got 1 ('BRUSSELS')")
  local skipped = D.read({ path = FIX .. "ner_bad.conll", format = "conll" }, { task = "token_classification", on_error = "skip" })
  check.eq(skipped.n, 2, "the broken sentence skipped whole")
  check.eq(skipped.skipped, 1, "and counted")
  check.raises(function()
    D.read({ path = FIX .. "ner_unseen.conll", format = "conll" }, { task = "token_classification", labels = ds.label_names })
  end, "ner_unseen.conll:4: tag 'B-XYZ' (word 1) was not seen in training")
  check.raises(function() D.read({ path = FIX .. "ner4.conll", format = "conll" }) end,
    "CoNLL files hold tagged tokens: task.kind must be token_classification")
  check.raises(function() D.read({ path = FIX .. "tokcls.jsonl", text = "tokens", text_pair = "tokens", label = "tags" },
    { task = "token_classification" }) end, "token classification reads one text column (the words)")
  check.raises(function() D.read({ path = FIX .. "ner4.conll", format = "conll", text = "word" }, { task = "token_classification" }) end,
    "a CoNLL split's text is a column number (1-based), got 'word'")
end

-- Token rows: as many tags as words, and at least one word.
function T.token_rows_need_a_tag_per_word()
  local d = tmpdir()
  write_all(d .. "/t.jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}\n{"tokens": [], "tags": []}\n{"tokens": ["c"], "tags": ["O"]}\n')
  local ds = D.read({ path = d .. "/t.jsonl", text = "tokens", label = "tags" }, { task = "token_classification", on_error = "skip" })
  check.eq(ds.n, 1, "one good row")
  check.truthy(ds.skipped_messages[1]:find("t.jsonl:1: 1 tag for 2 words", 1, true), ds.skipped_messages[1])
  check.truthy(ds.skipped_messages[2]:find("t.jsonl:2: empty sentence (no words)", 1, true), ds.skipped_messages[2])
  rmdir(d)
end

-- Token labels as transformers' token-classification example aligns them (tests/gen_ner_fixtures.py:
-- BertTokenizerFast, is_split_into_words, truncation at 128 and 16): the same ids, the word's tag at its
-- first piece and -100 elsewhere; with label_all_tokens the later pieces get the tag, B-X as I-X.
function T.token_labels_match_transformers()
  local f = assert(io.open(TEST_ROOT .. "/tests/fixtures/ner/alignment.json"))
  local fx = require("cjson").decode(f:read("*a"))
  f:close()
  local tok = pft.tokenizer_load(TEST_ROOT .. "/models/all-MiniLM-L6-v2")
  local ds = D.read({ path = TEST_ROOT .. "/../shared/data/conll2003/train.txt", format = "conll", limit = 300 },
    { task = "token_classification" })
  same_list(ds.label_names, fx.tags, "tag order")
  local rows = {}
  for i = 1, ds.n do rows[i] = i end
  for _, c in ipairs(fx.cases) do
    for _, all in ipairs({ false, true }) do
      local L = D.loader(ds, tok, { batch_size = ds.n, max_length = c.max_length, cache = false, label_all_tokens = all })
      local item = L:epoch(0)()
      local ids, lengths = item.batch:ids(), item.batch:lengths()
      local _, t = item.batch:size()
      local bad = 0
      for i, want in ipairs(c.rows) do
        local wl = all and want.labels_all or want.labels
        if lengths[i] ~= #want.ids then bad = bad + 1 end
        for j = 1, #want.ids do
          if ids[i][j] ~= want.ids[j] or item.labels[(i - 1) * t + j] ~= wl[j] then bad = bad + 1 end
        end
        for j = #want.ids + 1, t do if item.labels[(i - 1) * t + j] ~= -100 then bad = bad + 1 end end
      end
      check.eq(bad, 0, ("max_length %d%s: positions that differ from transformers"):format(c.max_length,
        all and ", label_all_tokens" or ""))
      item.batch:free()
      L.enc:free()
    end
  end
  tok:free()
end

function T.limit_and_preprocess()
  local ds = D.read({ path = FIX .. "small.tsv", limit = 2 }, { preprocess = function(s) return s:upper() end })
  same_list(ds.texts, { "IT 'S A CHARMING JOURNEY . ", "UNFUNNY AND DULL " }, "first two rows, preprocessed")
end

function T.misuse_raises()
  check.raises(function() D.read({ path = FIX .. "small.tsv", colum = 1 }) end, "unknown key 'colum'")
  check.raises(function() D.read({ path = FIX .. "small.tsv" }, { on_error = "ignore" }) end, "on_error 'ignore'")
  check.raises(function() D.read({ path = FIX .. "small.txt" }) end, "cannot tell the format")
end

function T.sst2_dev_counts_and_labels()
  local f = io.open(SST2_DEV, "rb")
  check.truthy(f, SST2_DEV .. " exists (the shared SST-2 data is required)")
  f:close()
  local ds = D.read({ path = SST2_DEV })
  check.eq(ds.n, 6735, "rows")
  same_list(ds.label_names, { "0", "1" }, "labels")
  check.eq(ds.skipped, 0, "skipped")
  check.eq(ds.invalid_utf8, 0, "invalid UTF-8 rows")
end

-- --- the format registry --------------------------------------------------------------------------------

function T.format_of_each_extension()
  local want = { ["a.tsv"] = "tsv", ["a.csv"] = "csv", ["a.jsonl"] = "jsonl", ["a.ndjson"] = "jsonl", ["a.json"] = "jsonl",
    ["dir.v2/B.TSV"] = "tsv", ["x.NDJSON"] = "jsonl", ["/abs/path/c.Csv"] = "csv" }
  for path, fmt in pairs(want) do
    check.eq(D.format_of(path), fmt, path .. " (a path)")
    check.eq(D.format_of({ path = path }), fmt, path .. " (a split)")
  end
  -- every extension a reader claims gives that reader
  for name, r in pairs(D.READERS) do
    for _, ext in ipairs(r.extensions) do check.eq(D.format_of("f." .. ext), name, "f." .. ext) end
  end
  -- and D.read reads a .ndjson file as JSON Lines, not TSV
  local dir = tmpdir()
  local ok, err = pcall(function()
    local p = dir .. "/pairs.ndjson"
    write_all(p, read_all(FIX .. "pairs.jsonl"))
    local ds = D.read({ path = p, text = "premise", text_pair = "hypothesis" })
    check.eq(ds.format, "jsonl", "format of a .ndjson split")
    same_list(ds.pairs, { "a person rests", "a cat meows", "children are outside" }, ".ndjson pairs")
  end)
  rmdir(dir)
  if not ok then error(err, 0) end
end

function T.explicit_format_wins_over_the_extension()
  check.eq(D.format_of({ path = "x.tsv", format = "csv" }), "csv", "csv named .tsv")
  check.eq(D.format_of({ path = "x.txt", format = "jsonl" }), "jsonl", "an unknown extension with a format")
  check.raises(function() D.format_of({ path = "x.tsv", format = "xml" }) end, "data: format 'xml' is not one of tsv, csv, jsonl")
  local dir = tmpdir()
  local ok, err = pcall(function()
    local p = dir .. "/quoted.tsv" -- CSV text under a TSV name
    write_all(p, read_all(FIX .. "quoted.csv"))
    local ds = D.read({ path = p, format = "csv", text = "text", label = "label" })
    check.eq(ds.format, "csv", "ds.format")
    same_list(ds.texts, D.read({ path = FIX .. "quoted.csv", text = "text", label = "label" }).texts, "read as CSV")
  end)
  rmdir(dir)
  if not ok then error(err, 0) end
end

function T.unknown_extension_names_the_file_and_the_known_extensions()
  for _, path in ipairs({ "data/train.txt", "data/train" }) do
    local ok, err = pcall(D.format_of, path)
    check.eq(ok, false, path .. " raises")
    check.eq(err:sub(1, #("data: " .. path .. ": cannot tell the format")), "data: " .. path .. ": cannot tell the format",
      "the message starts with the file, without a position: " .. err)
    for _, r in pairs(D.READERS) do
      for _, ext in ipairs(r.extensions) do check.truthy(err:find("." .. ext, 1, true), ("names .%s: %s"):format(ext, err)) end
    end
    check.eq(err, ('data: %s: cannot tell the format from the extension (known: .tsv, .csv, .jsonl, .ndjson, .json, '
      .. '.conll); set format = "tsv" | "csv" | "jsonl" | "conll"'):format(path), "the whole message")
  end
  check.raises(function() D.read({ path = FIX .. "small.txt" }) end, "(known: .tsv, .csv, .jsonl, .ndjson, .json, .conll)")
  check.raises(function() D.format_of({}) end, "data.format_of: a path")
end

function T.readers_keys_are_the_format_names()
  local keys = {}
  for name in pairs(D.READERS) do keys[#keys + 1] = name end
  table.sort(keys)
  local names = D.format_names()
  local sorted = { unpack(names) }
  table.sort(sorted)
  same_list(sorted, keys, "format_names() == the keys of READERS")
  same_list(names, { "tsv", "csv", "jsonl", "conll" }, "the formats pft reads, in registry order")
  names[1] = "changed"
  check.eq(D.format_names()[1], "tsv", "format_names() returns a fresh list")
  for name, r in pairs(D.READERS) do
    check.eq(r.name, name, name .. ": entry name")
    check.truthy(type(r.extensions) == "table" and #r.extensions >= 1, name .. ": extensions")
    check.eq(type(r.description), "string", name .. ": description")
    check.eq(type(r.records), "function", name .. ": records")
  end
end

function T.read_dispatches_through_the_registry()
  for _, fmt in ipairs({ "tsv", "csv", "jsonl" }) do
    local r = D.READERS[fmt]
    local records, calls = r.records, 0
    r.records = function(...)
      calls = calls + 1
      return records(...)
    end
    local file = ({ tsv = "small.tsv", csv = "quoted.csv", jsonl = "pairs.jsonl" })[fmt]
    local text = ({ tsv = "sentence", csv = "text", jsonl = "premise" })[fmt]
    local ok, err = pcall(D.read, { path = FIX .. file, text = text })
    r.records = records
    if not ok then error(err, 0) end
    check.eq(calls, 1, fmt .. ": D.read called READERS." .. fmt .. ".records")
  end
end

function T.requiring_data_loads_no_recipe_module()
  local p = assert(io.popen(("'%s' -e %s 2>&1"):format(TEST_PFT, "'local before = {} for k in pairs(package.loaded) do "
    .. "before[k] = true end require \"pft.data\" for k in pairs(package.loaded) do if not before[k] then io.write(k, \" \") end end'")))
  local out = p:read("*a")
  p:close()
  check.truthy(not out:find("pft.recipe", 1, true), "modules pft.data loads: " .. out)
end

function T.cache_dir_from_the_source_tree_and_the_environment()
  local function run(env)
    local p = assert(io.popen(("%s '%s' -e 'io.write(require(\"pft.data\").cache_dir())' 2>&1"):format(env, TEST_PFT)))
    local out = p:read("*a")
    p:close()
    return out
  end
  check.eq(run("env -u PFT_CACHE"), require("pft.fs").abspath(TEST_ROOT) .. "/build/cache", "the source tree's build/cache")
  check.eq(run("PFT_CACHE=/some/where"), "/some/where", "$PFT_CACHE")
end

function T.num_batches_counts_the_short_last_batch()
  for _, c in ipairs({ { 300, 16, 19 }, { 7, 5, 2 }, { 10, 5, 2 }, { 0, 5, 0 }, { 1, 32, 1 }, { 32, 32, 1 }, { 33, 32, 2 } }) do
    check.eq(D.num_batches(c[1], c[2]), c[3], ("num_batches(%d, %d)"):format(c[1], c[2]))
  end
  check.raises(function() D.num_batches(10, 0) end, "batch_size must be a positive integer")
  check.raises(function() D.num_batches(10, 1.5) end, "batch_size must be a positive integer")
  check.raises(function() D.num_batches(-1, 4) end, "n must be a non-negative integer")
  -- the loader counts with it
  local L = D.loader(D.read({ path = FIX .. "small.tsv" }), tokenizer(), { batch_size = 3, cache = false })
  check.eq(L:num_batches(), 2, "4 rows in batches of 3")
  local num_batches = D.num_batches
  D.num_batches = function() return 12345 end
  local got = L:num_batches()
  D.num_batches = num_batches
  check.eq(got, 12345, "Loader:num_batches is D.num_batches")
end

-- --- encoding and loaders -------------------------------------------------------------------------------

function T.encoded_rows_match_the_tokenizer()
  local tok = tokenizer()
  local ds = D.read({ path = FIX .. "quoted.csv", text = "text" })
  local enc = pft.encode_dataset(tok, ds.texts, nil, 8)
  local rows = { 3, 1, 7 }
  local got = enc:gather(rows, 0)
  local want = tok:encode_batch({ ds.texts[3], ds.texts[1], ds.texts[7] }, nil, { max_length = 8 })
  check.all_near(got:ids(), want:ids(), 0, "ids")
  check.all_near(got:mask(), want:mask(), 0, "mask")
  check.all_near(got:lengths(), want:lengths(), 0, "lengths")
  local fixed = enc:gather(rows, 12)
  check.eq(select(2, fixed:size()), 12, "pad_to")
  -- pairs
  local p = D.read({ path = FIX .. "pairs.jsonl", text = "premise", text_pair = "hypothesis" })
  local pe = pft.encode_dataset(tok, p.texts, p.pairs, 16)
  local pw = tok:encode_batch(p.texts, p.pairs, { max_length = 16 })
  check.all_near(pe:gather({ 1, 2, 3 }, 0):type_ids(), pw:type_ids(), 0, "pair type ids")
  check.raises(function() enc:gather({ 8 }, 0) end, "gather: row 1 is 8, expected an integer in 1..7")
end

local function sst2_small(n)
  local ds = D.read({ path = SST2_DEV, limit = n })
  return ds
end

function T.shuffle_is_deterministic_per_seed_and_epoch()
  local tok = tokenizer()
  local ds = sst2_small(300)
  local function plan(seed, e, bucket)
    local L = D.loader(ds, tok, { batch_size = 16, shuffle = true, bucket = bucket, seed = seed, cache = false })
    local rows = {}
    for _, b in ipairs(L:batches(e)) do for _, r in ipairs(b) do rows[#rows + 1] = r end end
    return table.concat(rows, ",")
  end
  for _, bucket in ipairs({ false, true }) do
    check.eq(plan(7, 0, bucket), plan(7, 0, bucket), "same seed and epoch")
    check.truthy(plan(7, 0, bucket) ~= plan(7, 1, bucket), "another epoch")
    check.truthy(plan(7, 0, bucket) ~= plan(8, 0, bucket), "another seed")
  end
  -- every row exactly once
  local L = D.loader(ds, tok, { batch_size = 16, shuffle = true, bucket = true, seed = 3, cache = false })
  local seen, count = {}, 0
  for item in L:epoch(2) do
    check.eq(#item.labels, #item.rows, "a label per row")
    for k, r in ipairs(item.rows) do
      check.eq(seen[r], nil, "row " .. r .. " once")
      seen[r] = true
      count = count + 1
      check.eq(item.labels[k], ds.labels[r], "label follows its row")
    end
  end
  check.eq(count, 300, "all rows")
  check.eq(L:num_batches(), 19, "ceil(300 / 16)")
  -- unshuffled: file order
  local plain = D.loader(ds, tok, { batch_size = 16, cache = false })
  same_list(plain:batches(0)[2], { 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 }, "batch 2 in order")
end

-- every row exactly once per epoch, and as many batches as num_batches() promises, with a row count that
-- is not a multiple of the batch size: the last partial batch (of the whole split unbucketed; of each
-- bucketing chunk, and of the last short chunk, bucketed) must not be dropped, merged or duplicated
function T.every_row_once_with_a_partial_last_batch()
  local tok = tokenizer()
  for _, n in ipairs({ 7, 37 }) do -- 7: one full batch of 5 and a partial one; 37: 7 full, a partial of 2
    local ds = sst2_small(n)
    check.eq(ds.n, n, "rows read")
    for _, bucket in ipairs({ false, true }) do
      for _, shuffle in ipairs({ false, true }) do
        -- bucket_chunks = 2: chunks of 10 rows, so 37 rows make three full chunks and a short one of 7
        local L = D.loader(ds, tok, { batch_size = 5, shuffle = shuffle, bucket = bucket, seed = 9, cache = false,
          bucket_chunks = 2 })
        local what = ("%d rows, batch_size 5, bucket %s, shuffle %s"):format(n, tostring(bucket), tostring(shuffle))
        check.eq(L:num_batches(), math.ceil(n / 5), what .. ": num_batches")
        for e = 0, 1 do
          local plan, seen, count, sizes = L:batches(e), {}, 0, {}
          check.eq(#plan, L:num_batches(), what .. ": #batches(" .. e .. ") == num_batches()")
          for b, rows in ipairs(plan) do
            check.truthy(#rows >= 1 and #rows <= 5, ("%s: batch %d has %d rows"):format(what, b, #rows))
            sizes[#sizes + 1] = #rows
            for _, r in ipairs(rows) do
              check.truthy(r == math.floor(r) and r >= 1 and r <= n, ("%s: row %s in 1..%d"):format(what, tostring(r), n))
              check.eq(seen[r], nil, ("%s, epoch %d: row %d seen once"):format(what, e, r))
              seen[r] = true
              count = count + 1
            end
          end
          check.eq(count, n, ("%s, epoch %d: rows in the batches (sizes %s)"):format(what, e, table.concat(sizes, " ")))
          local iterated, rows_iterated = 0, 0
          for item in L:epoch(e) do
            iterated = iterated + 1
            rows_iterated = rows_iterated + #item.rows
            check.eq(item.batch:size(), #item.rows, what .. ": batch rows")
          end
          check.eq(iterated, L:num_batches(), what .. ": the epoch iterator yields num_batches() batches")
          check.eq(rows_iterated, n, what .. ": the epoch iterator yields every row")
        end
      end
    end
  end
end

function T.bucketing_reduces_padding()
  local tok = tokenizer()
  local ds = sst2_small(2000)
  local opts = { batch_size = 32, shuffle = true, seed = 11, cache = false, max_length = 128 }
  local random = D.loader(ds, tok, opts)
  opts.bucket = true
  local bucketed = D.loader(ds, tok, opts)
  -- count pad cells from the batches themselves
  local function pads(L)
    local pad = 0
    for item in L:epoch(0) do
      local n, t = item.batch:size()
      pad = pad + n * t - item.batch:tokens()
    end
    return pad
  end
  local pr, pb = pads(random), pads(bucketed)
  check.eq(pr, random:pad_tokens(0), "pad_tokens agrees with the batches")
  print(("  pad tokens over 2000 SST-2 rows: random batches %d, bucketed %d"):format(pr, pb))
  check.truthy(pb * 4 < pr, ("bucketing cuts padding at least fourfold (%d vs %d)"):format(pb, pr))
end

function T.resume_yields_exactly_the_remaining_batches()
  local tok = tokenizer()
  local ds = sst2_small(500)
  local L = D.loader(ds, tok, { batch_size = 32, shuffle = true, bucket = true, seed = 5, cache = false })
  local full = {}
  for item in L:epoch(1) do full[#full + 1] = item end
  check.eq(#full, 16, "batches")
  local fresh = D.loader(ds, tok, { batch_size = 32, shuffle = true, bucket = true, seed = 5, cache = false })
  local k = 7
  local i = k
  for item in fresh:epoch(1, k) do
    check.eq(item.index, i, "index")
    same_list(item.rows, full[i].rows, "rows of batch " .. i)
    check.all_near(item.batch:ids(), full[i].batch:ids(), 0, "ids of batch " .. i)
    i = i + 1
  end
  check.eq(i, #full + 1, "ran to the end")
  local n = 0
  for _ in L:epoch(1, #full + 1) do n = n + 1 end
  check.eq(n, 0, "start past the end: nothing")
end

-- --- the cache ----------------------------------------------------------------------------------------

function T.cache_hit_miss_stale_corrupt()
  local tok = tokenizer()
  local dir = tmpdir()
  local ok, err = pcall(function()
    local src = dir .. "/split.tsv"
    write_all(src, read_all(FIX .. "small.tsv"))
    local ds = D.read({ path = src })
    local opts = { max_length = 32, cache_dir = dir }
    local e1, i1 = D.encode(ds, tok, opts)
    check.eq(i1.hit, false, "first: miss")
    check.truthy(i1.reason:find("^missing"), i1.reason)
    check.eq(i1.saved, true, "written")
    local e2, i2 = D.encode(ds, tok, opts)
    check.eq(i2.hit, true, "second: hit")
    check.eq(i2.path, i1.path, "same file")
    check.all_near(e2:gather({ 1, 2, 3, 4 }, 0):ids(), e1:gather({ 1, 2, 3, 4 }, 0):ids(), 0, "cached ids")
    -- another max length: another key, a miss
    local _, i3 = D.encode(ds, tok, { max_length = 16, cache_dir = dir })
    check.eq(i3.hit, false, "max_length is in the key")
    -- corrupt: flip a byte in the body, then truncate
    local bytes = read_all(i1.path)
    write_all(i1.path, bytes:sub(1, #bytes - 3) .. "\7" .. bytes:sub(#bytes - 1))
    local _, i4 = D.encode(ds, tok, opts)
    check.truthy(not i4.hit and i4.reason:find("^corrupt"), "flipped byte: " .. tostring(i4.reason))
    check.eq(i4.saved, true, "rebuilt")
    check.eq(select(2, D.encode(ds, tok, opts)).hit, true, "hit after the rebuild")
    write_all(i1.path, read_all(i1.path):sub(1, 40))
    local _, i5 = D.encode(ds, tok, opts)
    check.truthy(not i5.hit and i5.reason:find("^corrupt"), "truncated: " .. tostring(i5.reason))
    -- stale: another tokenizer (another vocab)
    local other = pft.tokenizer_load(TEST_ROOT .. "/tests/fixtures/bert/tiny_seqcls")
    check.truthy(pft.tokenizer_hash(other) ~= pft.tokenizer_hash(tok), "vocab hashes differ")
    local _, i45 = D.encode(ds, other, { max_length = 32, cache_dir = dir })
    check.eq(i45.hit, false, "another tokenizer misses")
    -- stale: the source changes (size and content)
    write_all(src, read_all(FIX .. "small.tsv") .. "one more\t1\n")
    local ds2 = D.read({ path = src })
    local e6, i6 = D.encode(ds2, tok, opts)
    check.truthy(not i6.hit and i6.reason:find("^stale"), "changed source: " .. tostring(i6.reason))
    check.eq(e6:count(), 5, "rebuilt with the new row")
    -- stale: same file, other texts (a preprocess function)
    local ds3 = D.read({ path = src }, { preprocess = string.upper })
    local _, i7 = D.encode(ds3, tok, opts)
    check.truthy(not i7.hit and i7.reason:find("^stale"), "other texts: " .. tostring(i7.reason))
    -- no temporary files left behind
    local p = io.popen(("ls '%s'"):format(dir))
    for name in p:lines() do check.truthy(not name:find("%.tmp%."), "leftover " .. name) end
    p:close()
  end)
  rmdir(dir)
  if not ok then error(err, 0) end
end

function T.loader_uses_the_cache()
  local tok = tokenizer()
  local dir = tmpdir()
  local ok, err = pcall(function()
    local ds = D.read({ path = FIX .. "small.tsv" })
    local a = D.loader(ds, tok, { cache_dir = dir, batch_size = 2 })
    local b = D.loader(ds, tok, { cache_dir = dir, batch_size = 2 })
    check.eq(a.cache.hit, false, "first loader encodes")
    check.eq(b.cache.hit, true, "second loader reads the cache")
  end)
  rmdir(dir)
  if not ok then error(err, 0) end
end

return T
