-- fuzz_data.lua - the Lua half of fuzz_data.c: one input -> one data file read by pft.data.read.
--
-- Input: byte 1 and byte 2 are flags, the rest is the file.
--   byte 1: bits 0-1 format: tsv, csv, jsonl, or csv named by the extension only (format = nil);
--           bit 2 header = false; bit 3 a text_pair column; bits 4-5 task: classification, regression,
--           token_classification, classification with a given label set {"0", "1"};
--           bit 6 on_error = "skip"; bit 7 limit = 2
--   byte 2: bit 0 columns by index (1, 2, 3) instead of by name ("text", "label", "pair");
--           bit 1 no label column; bit 2 encode what was read (encode_dataset, gather every row, the
--           cache written and read back); bit 3 a preprocess function (lowercasing)
-- Columns by name are "text", "label" and "pair" (JSONL keys alike); the corpus uses them.
-- Checks (fuzz_fail aborts): a dataset that reads has n rows of strings (and pairs), line numbers that
-- increase, at most `limit` rows, labels that are ids into label_names (0-based; lists of them for token
-- classification) or finite numbers for regression; no skipped rows under on_error = "fail"; encoded rows
-- of 2..16 tokens, gathered into a batch of the right shape, and a cache hit that gives the same lengths.
local D = require "pft.data"
local core = require "pft.core"

local root = ...
local tok = core.tokenizer_load(root .. "/tests/fixtures/bert/tiny_seqcls") -- loaded once, before any input
require "cjson" -- the JSONL reader's, loaded here for the same reason (fuzz.h: fuzz_lua_harness)

local EXT = { [0] = "tsv", "csv", "jsonl", "csv" }
local TASKS = { [0] = "classification", "regression", "token_classification", "classification" }

local function check(cond, msg, ...)
  if not cond then fuzz_fail(msg:format(...)) end
end

local function bit(x, i) return math.floor(x / 2 ^ i) % 2 == 1 end

local function verify(ds, spec, opts)
  check(type(ds) == "table" and type(ds.n) == "number" and ds.n >= 1, "no rows but no error")
  check(#ds.texts == ds.n, "%d texts for n = %d", #ds.texts, ds.n)
  if spec.limit then check(ds.n <= spec.limit, "%d rows over limit %d", ds.n, spec.limit) end
  if opts.on_error == "fail" then check(ds.skipped == 0, "rows skipped under on_error = fail") end
  local last = 0
  for i = 1, ds.n do
    check(type(ds.texts[i]) == "string", "text %d is a %s", i, type(ds.texts[i]))
    if spec.text_pair then check(type(ds.pairs[i]) == "string", "pair %d is a %s", i, type(ds.pairs and ds.pairs[i])) end
    check(type(ds.lines[i]) == "number" and ds.lines[i] > last, "line numbers do not increase at row %d", i)
    last = ds.lines[i]
  end
  if spec.label == false then return end
  local task = opts.task or "classification"
  if task == "regression" then
    for i = 1, ds.n do
      local v = ds.labels[i]
      check(type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge, "regression label %d: %s", i, tostring(v))
    end
    return
  end
  local nl = #ds.label_names
  local function id_ok(v) return type(v) == "number" and v >= 0 and v < nl and v == math.floor(v) end
  for i = 1, ds.n do
    local v = ds.labels[i]
    if task == "token_classification" then
      check(type(v) == "table", "token labels %d are a %s", i, type(v))
      for j, x in ipairs(v) do check(id_ok(x), "row %d tag %d: %s of %d labels", i, j, tostring(x), nl) end
    else
      check(id_ok(v), "row %d label %s of %d labels", i, tostring(v), nl)
    end
  end
end

local function encode(ds, tmpdir)
  local enc = core.encode_dataset(tok, ds.texts, ds.pairs, 16)
  check(enc:count() == ds.n, "encoded %d of %d rows", enc:count(), ds.n)
  local lengths, rows = enc:lengths(), {}
  for i = 1, ds.n do
    check(lengths[i] >= 2 and lengths[i] <= 16, "row %d: %d tokens", i, lengths[i])
    rows[i] = ds.n - i + 1
  end
  local b = enc:gather(rows, 0)
  check(b ~= nil, "no batch")
  -- the cache: written by the first D.encode, read by the second
  local dir = tmpdir .. "/cache"
  local e1, info1 = D.encode(ds, tok, { max_length = 16, cache_dir = dir })
  local e2, info2 = D.encode(ds, tok, { max_length = 16, cache_dir = dir })
  check(info1.saved, "cache not saved: %s", tostring(info1.save_error))
  check(info2.hit, "cache missed after a save: %s", tostring(info2.reason))
  local l1, l2 = e1:lengths(), e2:lengths()
  for i = 1, ds.n do check(l1[i] == l2[i], "cached row %d: %d tokens, %d before", i, l2[i], l1[i]) end
  os.remove(info1.path)
end

return function(input, tmpdir)
  if #input < 2 then return end
  local f1, f2 = input:byte(1), input:byte(2)
  local fmt = f1 % 4
  local path = ("%s/in.%s"):format(tmpdir, EXT[fmt])
  local f = assert(io.open(path, "wb"))
  f:write(input:sub(3))
  f:close()
  local by_index = bit(f2, 0)
  local spec = {
    path = path, format = fmt < 3 and EXT[fmt] or nil, header = not bit(f1, 2),
    text = by_index and 1 or "text", label = by_index and 2 or "label",
    text_pair = bit(f1, 3) and (by_index and 3 or "pair") or nil, limit = bit(f1, 7) and 2 or nil,
  }
  if bit(f2, 1) then spec.label = false end
  local t = math.floor(f1 / 16) % 4
  local opts = { task = TASKS[t], on_error = bit(f1, 6) and "skip" or "fail",
    labels = t == 3 and { "0", "1" } or nil, preprocess = bit(f2, 3) and string.lower or nil }
  local ds = D.read(spec, opts) -- raises for a bad file: the expected answer
  verify(ds, spec, opts)
  if bit(f2, 2) and ds.n <= 64 then encode(ds, tmpdir) end
end
