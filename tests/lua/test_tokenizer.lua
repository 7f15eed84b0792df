-- pft.Tokenizer and pft.Batch through the binding: ids as in the fixtures' README, pairs, truncation,
-- padding, the invalid-UTF-8 policy, batch reuse, errors. Parity with BertTokenizerFast on all of SST-2
-- is tested in C (tests/c/test_text.c); here the binding's behaviour.
local pft = require "pft"
local check = require "check"

local TINY = TEST_ROOT .. "/tests/fixtures/bert/tiny_seqcls"
local MINILM = os.getenv("PFT_MINILM") or TEST_ROOT .. "/models/all-MiniLM-L6-v2" -- as tests/c/test_bert.c

local T = {}

local function tok() return pft.tokenizer_load(TINY) end

function T.encode_single_and_pair()
  local t = tok()
  local e = t:encode("hello world")
  check.eq(table.concat(e.ids, " "), "2 42 43 3", "[CLS] hello world [SEP]")
  check.eq(table.concat(e.type_ids, " "), "0 0 0 0", "type ids")
  e = t:encode("a funny film", "not boring")
  check.eq(#e.ids, 8, "pair length")
  check.eq(table.concat(e.type_ids, " "), "0 0 0 0 0 1 1 1", "pair type ids")
  e = t:encode("Actors ACTING")
  check.eq(t:token(e.ids[2]) .. " " .. t:token(e.ids[3]) .. " " .. t:token(e.ids[4]), "actor ##s act", "lowercase, wordpieces")
  check.eq(t:encode("hello", nil, 0).ids[2], 42, "nil pair, explicit max_length")
  check.eq(#t:encode("hello world", "", 0).ids, 4, "an empty pair is no pair (as transformers)")
end

function T.vocab_queries()
  local t = tok()
  check.eq(t:vocab_size(), 99, "vocab size")
  check.eq(t:id("[UNK]"), 1, "[UNK]")
  check.eq(t:id("not-a-token"), nil, "unknown token")
  check.eq(t:token(2), "[CLS]", "token 2")
  check.eq(t:token(99), nil, "out of range")
  local c = t:config()
  check.eq(c.lowercase, true, "lowercase")
  check.eq(c.pad_id, 0, "pad id")
  check.eq(c.mask_id, 4, "mask id")
  check.eq(c.model_max_length, 64, "model_max_length")
end

function T.truncation_never_overflows()
  local t = tok()
  local long = ("the movie is very good "):rep(200)
  for _, ml in ipairs({ 2, 3, 12, 128 }) do
    local e = t:encode(long, ml)
    check.eq(#e.ids, ml, "single text truncated to max_length " .. ml)
    check.eq(e.ids[ml], 3, "ends with [SEP]")
  end
  local e = t:encode(long, "not boring", 12)
  check.eq(#e.ids, 12, "pair truncated to max_length")
  check.eq(table.concat(e.type_ids, " "), "0 0 0 0 0 0 0 0 0 1 1 1", "longest_first keeps the short part")
  local b = t:encode_batch({ long, "hello" }, { max_length = 16 })
  local B, Tn = b:size()
  check.eq(B * 100 + Tn, 216, "batch [2, 16]")
  check.eq(table.concat(b:lengths(), " "), "16 3", "lengths")
  check.eq(b:tokens(), 19, "tokens")
  b = t:encode_batch({ long, "hello" }, { max_length = 8, pad_to = 10 })
  check.eq(select(2, b:size()), 10, "pad_to")
  check.eq(table.concat(b:mask()[2], ""), "1110000000", "mask")
  check.eq(#t:encode(long).ids, 1002, "no truncation by default in encode")
end

function T.invalid_utf8_is_dropped()
  local t = tok()
  local cases = { { "hel\255lo world", "hello world" }, { "\192\128good", "good" }, { "good\237\160\128", "good" },
    { "fun\240\159\152", "fun" }, { "\255\254", "" } }
  for _, c in ipairs(cases) do
    check.eq(table.concat(t:encode(c[1]).ids, " "), table.concat(t:encode(c[2]).ids, " "), ("%q"):format(c[1]))
  end
  check.eq(table.concat(t:encode("a\0b").ids, " "), table.concat(t:encode("ab").ids, " "), "NUL is dropped, not an end")
end

function T.batch_pairs_and_reuse()
  local t = tok()
  local b = t:encode_batch({ "hello world", "a funny film" }, { false, "not boring" }, { max_length = 12 })
  check.eq(table.concat(b:lengths(), " "), "4 8", "false: no pair on that row")
  check.eq(table.concat(b:type_ids()[2], " "), "0 0 0 0 0 1 1 1", "pair row")
  check.eq(table.concat(b:ids()[1], " "), "2 42 43 3 0 0 0 0", "padded with [PAD]")
  local r = t:encode_batch({ "hello" }, { into = b })
  check.eq(r, b, "into returns the same batch")
  check.eq(table.concat(b:ids()[1], " "), "2 42 3", "refilled")
  check.eq(tostring(b), "pft.Batch(1 x 3)", "tostring")
end

function T.errors()
  local dir = os.tmpname()
  os.remove(dir)
  assert(pft.mkdir(dir))
  local f = assert(io.open(dir .. "/vocab.txt", "w"))
  f:write("[PAD]\n[CLS]\n[SEP]\nhello\n")
  f:close()
  check.raises(function() pft.tokenizer_load(dir) end, dir .. "/vocab.txt")
  os.remove(dir .. "/vocab.txt")
  os.remove(dir)
  check.raises(function() pft.tokenizer_load(dir) end, "vocab.txt")
  local t = tok()
  check.raises(function() t:encode(nil) end, "string expected, got nil")
  check.raises(function() t:encode("a", {}) end, "string or number expected")
  check.raises(function() t:encode("a", 1) end, "max_length must be 0 (no truncation) or >= 2")
  check.raises(function() t:encode_batch("a") end, "table expected, got string")
  check.raises(function() t:encode_batch({}) end, "texts is empty")
  check.raises(function() t:encode_batch({ "a", 3 }) end, "texts[2] is a number")
  check.raises(function() t:encode_batch({ "a" }, { "b", "c" }) end, "1 texts but 2 pairs")
  check.raises(function() t:encode_batch({ "a" }, { maxlen = 3 }) end, "unknown option 'maxlen'")
  check.raises(function() t:encode_batch({ "a" }, { max_length = 12, pad_to = 8 }) end, "pad_to 8 needs")
  check.raises(function() t:encode_batch({ "a" }, { into = {} }) end, "pft.Batch expected")
  t:free()
  check.raises(function() t:encode("a") end, "tokenizer used after free")
end

function T.minilm_tokenizer()
  local f = io.open(MINILM .. "/vocab.txt")
  if not f then
    error(("MiniLM model missing: %s/vocab.txt (run `make setup`, or `make model` to fetch only the model)"):format(MINILM))
  end
  f:close()
  local t = pft.tokenizer_load(MINILM)
  check.eq(t:vocab_size(), 30522, "MiniLM vocab")
  check.eq(table.concat(t:encode("Hello, world!").ids, " "), "101 7592 1010 2088 999 102", "MiniLM ids")
end

return T
