-- pft.data: dataset readers (TSV, CSV, JSONL), label sets, and batch loaders over a split tokenized once
-- in C. The formats, the malformed-row and invalid-UTF-8 policies, shuffling, bucketing and the cache are
-- described in docs/data.md. Each format is one entry of D.READERS (its extensions, whether a header
-- names its columns, the function that splits a file into records); D.format_of is the one place a
-- split's format is decided.
--
--   local D = require "pft.data"
--   local train = D.read({ path = "../shared/data/sst2/train.tsv", text = "sentence", label = "label" })
--   local dev = D.read({ path = ".../dev.tsv" }, { labels = train.label_names })  -- unseen label: error
--   D.format_of("x.ndjson")  -- "jsonl";  D.format_names()  -- { "csv", "jsonl", "tsv" }
--   local loader = D.loader(train, tokenizer, { batch_size = 32, shuffle = true, bucket = true, seed = 42 })
--   for item in loader:epoch(0) do  -- item.batch (pft.Batch), item.labels, item.index, item.rows
--     ...
--   end
--
-- Reading and splitting lines is Lua (orchestration, well under a second for 60k rows); tokenizing,
-- padding, hashing and the cache are C (core/encoded.c, bound by core/lua_data.c; UTF-8 checks in
-- core/lua_text.c). Rows are 1-based; label ids are 0-based.
local core = require "pft.core"
local fs = require "pft.fs"

local D = {}

local DEFAULT_SPEC = { header = true, text = "sentence", label = "label" }
local SPEC_KEYS = { path = true, format = true, header = true, text = true, text_pair = true, label = true, limit = true }
local READ_KEYS = { task = true, labels = true, on_error = true, preprocess = true }
local LOADER_KEYS = { batch_size = true, shuffle = true, bucket = true, seed = true, max_length = true, cache = true,
  cache_dir = true, bucket_chunks = true, label_all_tokens = true }
local TASKS = { classification = true, regression = true, token_classification = true }
local KEEP_LINES = 10 -- line numbers kept for skipped rows and rows with invalid UTF-8

-- Raises at `level` (as error() counts it) when t has a key that allowed lacks.
local function check_keys(t, allowed, what, level)
  for k in pairs(t) do
    if not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      error(("%s: unknown key '%s' (known: %s)"):format(what, tostring(k), table.concat(names, ", ")), level)
    end
  end
end

-- --- record sources: each calls emit(fields, line) per row, bad(line, message) per malformed row --------

local function is_blank(s) return s:find("^[ \t\r]*$") ~= nil end

-- Text from a file quoted in a message: control bytes shown escaped, cut to QUOTE_MAX characters (a CR-only
-- or binary file is one long "line", which must not end up whole in a message).
local QUOTE_MAX = 80
local function short(s)
  s = tostring(s):gsub("[%z\1-\8\11-\31\127]", function(c) return ("\\x%02x"):format(c:byte()) end)
  s = s:gsub("\t", "\\t"):gsub("\n", "\\n")
  if #s > QUOTE_MAX then s = s:sub(1, QUOTE_MAX) .. "..." end
  return s
end
D.short = short

-- Lines of s without their "\r\n" / "\n", numbered from 1; blank lines are not passed on.
local function each_line(s, fn)
  local pos, line, n = 1, 0, #s
  while pos <= n do
    local nl = s:find("\n", pos, true)
    local stop = nl and nl - 1 or n
    line = line + 1
    if s:byte(stop) == 13 then stop = stop - 1 end
    local l = s:sub(pos, stop)
    if not is_blank(l) then fn(l, line) end
    pos = (nl or n) + 1
  end
end

local function tsv_records(s, emit)
  each_line(s, function(l, line)
    local fields, p = {}, 1
    while true do
      local tab = l:find("\t", p, true)
      if not tab then
        fields[#fields + 1] = l:sub(p)
        break
      end
      fields[#fields + 1] = l:sub(p, tab - 1)
      p = tab + 1
    end
    emit(fields, line)
  end)
end

-- The quoted CSV field whose opening quote is at s[pos]: its text ("" read as ") and the position just
-- after its closing quote. line is where the field starts, for the message when the quote never closes.
local function csv_quoted(s, pos, path, line)
  local parts, p = {}, pos + 1
  while true do
    local q = s:find('"', p, true)
    if not q then error(("%s:%d: unterminated quoted field"):format(path, line), 0) end
    parts[#parts + 1] = s:sub(p, q - 1)
    if s:byte(q + 1) == 34 then
      parts[#parts + 1] = '"'
      p = q + 2
    else
      return table.concat(parts), q + 1
    end
  end
end

-- RFC 4180: fields separated by commas, records by CRLF or LF; a field in double quotes may hold commas,
-- tabs, newlines and doubled quotes. An unterminated quote cannot be resynchronised: it always raises.
local function csv_records(s, emit, bad, path)
  local pos, line, n = 1, 1, #s
  while pos <= n do
    local fields, start, broken = {}, line, nil
    while true do
      if s:byte(pos) == 34 then -- '"'
        local field
        field, pos = csv_quoted(s, pos, path, line)
        for _ in field:gmatch("\n") do line = line + 1 end
        local c = s:byte(pos)
        if c == 13 and s:byte(pos + 1) == 10 then pos, c = pos + 1, 10 end
        if c ~= nil and c ~= 44 and c ~= 10 then
          broken = broken or "text after a closing quote"
          local nl = s:find("\n", pos, true) -- resynchronise at the end of this line
          pos = nl or n + 1
          c = 10
        end
        fields[#fields + 1] = field
        pos = pos + 1
        if c ~= 44 then break end
      else
        local q = s:find("[,\n]", pos)
        local stop = (q or n + 1) - 1
        local last = stop
        if q and s:byte(q) == 10 and s:byte(stop) == 13 then last = stop - 1 end
        fields[#fields + 1] = s:sub(pos, last)
        pos = stop + 2
        if not q or s:byte(q) == 10 then break end
      end
    end
    if broken then
      bad(start, broken)
    elseif not (#fields == 1 and is_blank(fields[1])) then
      emit(fields, start)
    end
    line = line + 1
  end
end

local function jsonl_records(s, emit, bad)
  local ok_cjson, cjson = pcall(require, "cjson")
  if not ok_cjson then error("data: JSONL needs lua-cjson (require \"cjson\" failed)", 0) end
  local decode = cjson.decode
  each_line(s, function(l, line)
    if not l:find("^%s*{") then return bad(line, "not a JSON object") end
    local ok, obj = pcall(decode, l)
    if not ok then return bad(line, "invalid JSON: " .. tostring(obj):gsub("^.-: ", "")) end
    for k, v in pairs(obj) do
      if v == cjson.null then obj[k] = nil end
    end
    emit(obj, line)
  end)
end

-- CoNLL column files: one token per line, whitespace-separated columns (the word in column word_col, the
-- tag in tag_col; others ignored), a blank line between sentences, -DOCSTART- lines skipped. A record is
-- a sentence {tokens = {...}, tags = {...}} at the line of its first token.
local function conll_records(s, emit, bad, _, cols)
  local word_col, tag_col = cols.text, cols.label or cols.text
  local need = math.max(word_col, tag_col)
  local words, tags, first, broken = {}, {}, nil, false
  local function flush()
    if first and not broken then emit({ tokens = words, tags = tags }, first) end
    words, tags, first, broken = {}, {}, nil, false
  end
  local pos, line, n = 1, 0, #s
  while pos <= n do
    local nl = s:find("\n", pos, true)
    local l = s:sub(pos, (nl or n + 1) - 1):gsub("\r$", "")
    line = line + 1
    pos = (nl or n) + 1
    local fields = {}
    for f in l:gmatch("%S+") do fields[#fields + 1] = f end
    if #fields == 0 or fields[1] == "-DOCSTART-" then
      flush()
    elseif #fields < need then
      if not broken then
        bad(line, ("a token line needs %d columns (word in %d, tag in %d), got %d ('%s')"):format(need, word_col, tag_col,
          #fields, short(l)))
      end
      broken, first = true, first or line -- the rest of this sentence goes with it
    else
      first = first or line
      words[#words + 1], tags[#tags + 1] = fields[word_col], fields[tag_col]
    end
  end
  flush()
end

-- --- the formats ------------------------------------------------------------------------------------
-- One entry per format, in a list so that messages name them in a fixed order; adding a format is one
-- entry here (and its test). D.READERS[name] is the entry:
--   name, title (as messages write it), extensions (lower case, without the dot), description,
--   header (split.header applies: the first row may name the columns), keyed (a record is a table of
--   named fields: columns are given by name only), records(text, emit, bad, path) (splits the file).
local FORMATS = {
  { name = "tsv", title = "TSV", extensions = { "tsv" }, header = true, keyed = false, records = tsv_records,
    description = "one row per line, fields split on tabs, no quoting" },
  { name = "csv", title = "CSV", extensions = { "csv" }, header = true, keyed = false, records = csv_records,
    description = "RFC 4180: quoted fields may hold commas, newlines and doubled quotes" },
  { name = "jsonl", title = "JSONL", extensions = { "jsonl", "ndjson", "json" }, header = false, keyed = true,
    records = jsonl_records, description = "one JSON object per line; its keys are the columns" },
  { name = "conll", title = "CoNLL", extensions = { "conll" }, header = false, keyed = true, records = conll_records,
    columns = { text = 1, label = 2 },
    description = "one line per token, whitespace-separated columns (`text`: the word's, default 1; `label`: the tag's, default 2), a blank line between sentences, -DOCSTART- skipped" },
}

D.READERS = {}
local FORMAT_OF_EXT = {} -- "ndjson" -> "jsonl"
for _, r in ipairs(FORMATS) do
  D.READERS[r.name] = r
  for _, ext in ipairs(r.extensions) do
    assert(not FORMAT_OF_EXT[ext], "data: extension claimed by two formats: " .. ext)
    FORMAT_OF_EXT[ext] = r.name
  end
end

-- D.format_names() -> the format names in registry order (the recipe schema's enum is built from it)
function D.format_names()
  local names = {}
  for i, r in ipairs(FORMATS) do names[i] = r.name end
  return names
end

-- What every format lists (each of its names or extensions through fmt), in FORMATS order: for messages.
local function known(what, fmt)
  local out = {}
  for _, r in ipairs(FORMATS) do
    local items = what == "names" and { r.name } or what == "first extensions" and { r.extensions[1] } or r.extensions
    for _, v in ipairs(items) do out[#out + 1] = fmt:format(v) end
  end
  return out
end

-- The format of a split (spec.format when given, else from the extension of spec.path); raises at `level`.
local function format_of(spec, level)
  if type(spec) == "string" then spec = { path = spec } end
  if spec.format then
    if not D.READERS[spec.format] then
      error(("data: format '%s' is not one of %s"):format(tostring(spec.format), table.concat(known("names", "%s"), ", ")),
        level)
    end
    return spec.format
  end
  local ext = spec.path:match("%.([%w]+)$")
  local fmt = ext and FORMAT_OF_EXT[ext:lower()]
  if fmt then return fmt end
  error(("data: %s: cannot tell the format from the extension (known: %s); set format = %s"):format(spec.path,
    table.concat(known("extensions", ".%s"), ", "), table.concat(known("names", '"%s"'), " | ")), level)
end

-- D.format_of(spec_or_path) -> "tsv" | "csv" | "jsonl" | ...: spec.format when given (checked against
-- D.READERS), else the format whose extensions hold the path's (in any case). An unknown format or
-- extension raises a message without a position that names the file and the known extensions.
function D.format_of(spec_or_path)
  local t = type(spec_or_path)
  if t ~= "string" and not (t == "table" and (spec_or_path.format or type(spec_or_path.path) == "string")) then
    error("data.format_of: a path, or a split with a path or a format, is required", 2)
  end
  return (format_of(spec_or_path, 0))
end

-- --- reading ----------------------------------------------------------------------------------------
-- D.read's steps, top to bottom: read_args (the split and options, checked), read_text (the file's bytes,
-- refused when not text), then the reader's records through on_row (the header, the columns of a row,
-- its text and its label), then the counts of rows and invalid UTF-8, then set_labels (names -> ids).
-- The state of one read is `rd` (read_args's table, plus ds, cols, header_names, raw_labels, done).

local function column_name(col)
  return type(col) == "number" and ("column %d"):format(col) or ("column '%s'"):format(col)
end

-- A value read from a field as text: strings as they are, JSON numbers and booleans as written.
local function as_string(v)
  if type(v) == "string" then return v end
  if type(v) == "number" then
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return ("%d"):format(v) end
    return ("%.17g"):format(v)
  end
  if type(v) == "boolean" then return tostring(v) end
  return nil
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function all_integers(names)
  for _, s in ipairs(names) do
    if not s:find("^%-?%d+$") then return false end
  end
  return true
end

-- Sorted unique labels: numerically when every label is an integer, else by bytes.
local function sorted_labels(seen)
  local names = {}
  for s in pairs(seen) do names[#names + 1] = s end
  if all_integers(names) then
    table.sort(names, function(a, b) return tonumber(a) < tonumber(b) end)
  else
    table.sort(names)
  end
  return names
end

-- "a, b or c"
local function either(items)
  if #items < 2 then return items[1] or "" end
  return table.concat(items, ", ", 1, #items - 1) .. " or " .. items[#items]
end

-- D.read's arguments checked and filled in; misuse raises at D.read's caller (level 3 here, 4 in callees).
local function read_args(spec, opts)
  if type(spec) == "string" then spec = { path = spec } end
  if type(spec) ~= "table" or type(spec.path) ~= "string" then error("data.read: spec.path (a string) is required", 3) end
  opts = opts or {}
  check_keys(spec, SPEC_KEYS, "data.read: split", 4)
  check_keys(opts, READ_KEYS, "data.read: options", 4)
  local task = opts.task or "classification"
  if not TASKS[task] then error(("data.read: task '%s' is not one of classification, regression, token_classification"):format(tostring(task)), 3) end
  local on_error = opts.on_error or "fail"
  if on_error ~= "fail" and on_error ~= "skip" then error(("data.read: on_error '%s' is not 'fail' or 'skip'"):format(tostring(on_error)), 3) end
  local preprocess = opts.preprocess
  if preprocess ~= nil and type(preprocess) ~= "function" then error("data.read: preprocess must be a function(text) -> text", 3) end
  local fmt = format_of(spec, 4)
  local header = spec.header
  if header == nil then header = DEFAULT_SPEC.header end
  local label_col = spec.label
  if label_col == nil then label_col = DEFAULT_SPEC.label end
  local limit = spec.limit
  if limit ~= nil and (type(limit) ~= "number" or limit < 1 or limit ~= math.floor(limit)) then
    error(("data.read: %s: limit must be a positive integer"):format(spec.path), 3)
  end
  if task == "token_classification" and spec.text_pair ~= nil then
    error(("data.read: %s: token classification reads one text column (the words); text_pair does not apply"):format(
      spec.path), 3)
  end
  local columns = { text = spec.text or DEFAULT_SPEC.text, pair = spec.text_pair, label = label_col }
  local fixed = D.READERS[fmt].columns
  if fixed then -- token lines: columns are positions; the defaults of other formats ("sentence") mean these
    local function col(v, default, key)
      if v == nil or v == DEFAULT_SPEC[key] then return default end
      if type(v) ~= "number" then
        error(("data.read: %s: a %s split's %s is a column number (1-based), got '%s'"):format(spec.path,
          D.READERS[fmt].title, key, tostring(v)), 4)
      end
      return v
    end
    columns = { text = col(spec.text, fixed.text, "text"), label = label_col and col(label_col, fixed.label, "label") }
    if task ~= "token_classification" then
      error(("data.read: %s: %s files hold tagged tokens: task.kind must be token_classification"):format(spec.path,
        D.READERS[fmt].title), 3)
    end
  end
  return { path = spec.path, format = fmt, reader = D.READERS[fmt], task = task, on_error = on_error,
    preprocess = preprocess, header = header, limit = limit, labels = opts.labels, columns = columns }
end

-- The file's bytes without a UTF-8 BOM; a directory, a binary, UTF-16 or CR-only file raises.
local function read_text(path, fmt)
  local s, err = fs.read_file(path)
  if s == nil and err then error(("data: cannot open %s"):format(err), 3) end -- at D.read's caller
  if s == nil or core.list_dir(path) then -- io.open opens a directory; reading it fails
    error(("data: %s is a directory, not a data file (give the path of a %s file)"):format(path,
      either(known("first extensions", ".%s"))), 0)
  end
  local nul = s:find("%z")
  if nul then
    local bom = s:sub(1, 2)
    if bom == "\255\254" or bom == "\254\255" then
      error(("data: %s: UTF-16 text; save it as UTF-8"):format(path), 0)
    end
    error(("data: %s: a binary file (a NUL byte at byte %d), not %s text"):format(path, nul, fmt), 0)
  end
  if not s:find("\n", 1, true) and s:find("\r[^\r]") then
    error(("data: %s: the lines end in CR only (old Mac line endings); convert them to LF, e.g. tr '\\r' '\\n'"):format(path), 0)
  end
  if s:sub(1, 3) == "\239\187\191" then s = s:sub(4) end -- UTF-8 BOM
  return s
end

local function new_dataset(rd)
  local c = rd.columns
  return { path = rd.path, format = rd.format, task = rd.task, n = 0, texts = {}, pairs = c.pair and {} or nil,
    words = rd.task == "token_classification" and {} or nil,
    labels = {}, label_names = {}, lines = {}, skipped = 0, skipped_lines = {}, skipped_messages = {},
    invalid_utf8 = 0, invalid_utf8_lines = {},
    spec = { text = c.text, text_pair = c.pair, label = c.label, limit = rd.limit, header = rd.header } }
end

-- A malformed row: raises under on_error = "fail", else is counted (the first KEEP_LINES kept).
local function bad(rd, line, msg)
  local full = ("%s:%d: %s"):format(rd.path, line, msg)
  if rd.on_error == "fail" then error(full, 0) end
  local ds = rd.ds
  ds.skipped = ds.skipped + 1
  if #ds.skipped_lines < KEEP_LINES then
    ds.skipped_lines[#ds.skipped_lines + 1] = line
    ds.skipped_messages[#ds.skipped_messages + 1] = full
  end
end

-- A split's column -> the key of its field in a record: a position (from the header names, or given as
-- an index) or, for keyed formats, the name itself. nil for a column the split does not have.
local function resolve(rd, col, names)
  local path = rd.path
  if col == nil or col == false then return nil end
  if type(col) == "number" then
    if col < 1 or col ~= math.floor(col) then error(("data: %s: column index %s must be a positive integer"):format(path, col), 0) end
    return col
  end
  if type(col) ~= "string" then error(("data: %s: a column is a name or a 1-based index, got a %s"):format(path, type(col)), 0) end
  if rd.reader.keyed then return col end
  if not rd.header then
    error(("data: %s: column '%s' is given by name but the split has header = false; give its 1-based index"):format(path, col), 0)
  end
  for i, name in ipairs(names) do
    if name == col then return i end
  end
  error(("data: %s: no column '%s' in the header (%s)"):format(path, short(col), short(table.concat(names, ", "))), 0)
end

-- The first record resolves the columns; true when it is the header (names, not data). A name twice in
-- a header makes a column ambiguous.
local function take_columns(rd, fields, line)
  local names = rd.header and rd.reader.header and fields or nil
  local c = rd.columns
  if rd.reader.columns then -- the reader took the columns itself: its records are sentences
    rd.cols = { text = "tokens", label = c.label and "tags" or nil }
    return false
  end
  rd.cols = { text = resolve(rd, c.text, names or {}), pair = resolve(rd, c.pair, names or {}),
    label = resolve(rd, c.label, names or {}) }
  rd.header_names = names
  if not names then return false end
  local at = {}
  for i, name in ipairs(names) do
    if name ~= "" and at[name] then
      error(("data: %s:%d: duplicate column '%s' in the header (columns %d and %d)"):format(rd.path, line, short(name),
        at[name], i), 0)
    end
    at[name] = at[name] or i
  end
  return true
end

-- The value of column `which` ("text", "pair", "label") in a record, or nil and why the row is malformed.
local function field_of(rd, fields, which)
  local key = rd.cols[which]
  if key == nil then return nil end
  local v
  if rd.reader.keyed then
    if type(key) == "number" then
      error(("data: %s: %s rows have no column order; name the column instead of %d"):format(rd.path, rd.reader.title, key), 0)
    end
    v = fields[key]
    if v == nil then return nil, ("column '%s' missing"):format(key) end
    return v
  end
  v = fields[key]
  if v == nil then
    local nf, col = #fields, rd.columns[which]
    local desc = type(col) == "string" and ("column '%s' (%d)"):format(col, key) or column_name(col)
    return nil, ("row has %d field%s, %s missing"):format(nf, nf == 1 and "" or "s", desc)
  end
  return v
end

-- A token-classification row's words: a list as given, or a text split on whitespace; nil and why when
-- it is neither or is empty.
local function row_words(rd, text)
  local words = {}
  if type(text) == "table" then
    for i, w in ipairs(text) do
      words[i] = as_string(w)
      if not words[i] then return nil, ("word %d is a %s, expected text"):format(i, type(w)) end
    end
  elseif type(text) == "string" then
    for w in text:gmatch("%S+") do words[#words + 1] = w end
  else
    return nil, ("%s is a %s, expected words"):format(column_name(rd.columns.text), type(text))
  end
  if #words == 0 then return nil, "empty sentence (no words)" end
  return words
end

-- A row's text and pair as strings, or nil, nil and why the row is malformed.
local function row_texts(rd, text, pair)
  local t = as_string(text)
  if not t then return nil, nil, ("%s is a %s, expected text"):format(column_name(rd.columns.text), type(text)) end
  if not rd.cols.pair then return t end
  local p = as_string(pair)
  if not p then return nil, nil, ("%s is a %s, expected text"):format(column_name(rd.columns.pair), type(pair)) end
  return t, p
end

-- A row's label as the task reads it (a trimmed string, a finite number, a list of tags), or nil and why
-- the row is malformed.
local function row_label(task, label)
  if task == "token_classification" then
    local tags
    if type(label) == "string" then
      tags = {}
      for tag in label:gmatch("%S+") do tags[#tags + 1] = tag end
    elseif type(label) == "table" then
      tags = {}
      for i, tag in ipairs(label) do tags[i] = as_string(tag) end
    end
    if not tags then return nil, "tags must be a list or a space-separated string" end
    return tags
  end
  local lab = as_string(label)
  if not lab then return nil, ("label is a %s, expected a string or a number"):format(type(label)) end
  lab = trim(lab)
  if lab == "" then return nil, "empty label" end
  if task ~= "regression" then return lab end
  local v = tonumber(lab)
  if not v or v ~= v or v == math.huge or v == -math.huge then
    return nil, ("label '%s' is not a finite number"):format(short(lab))
  end
  return v
end

-- One record (the reader's emit): the header, a data row, or a malformed row.
local function on_row(rd, fields, line)
  if rd.done then return end
  if not rd.cols and take_columns(rd, fields, line) then return end
  local text, pair, label, err
  text, err = field_of(rd, fields, "text")
  if not err and rd.cols.pair then pair, err = field_of(rd, fields, "pair") end
  if not err and rd.cols.label then label, err = field_of(rd, fields, "label") end
  local t, p, lab, words
  if rd.task == "token_classification" then
    if not err then words, err = row_words(rd, text) end
  elseif not err then
    t, p, err = row_texts(rd, text, pair)
  end
  if not err and rd.cols.label then lab, err = row_label(rd.task, label) end
  if not err and words and lab and #lab ~= #words then
    err = ("%d tag%s for %d word%s"):format(#lab, #lab == 1 and "" or "s", #words, #words == 1 and "" or "s")
  end
  if err then return bad(rd, line, err) end
  if words then
    if rd.preprocess then for i, w in ipairs(words) do words[i] = rd.preprocess(w) end end
    t = table.concat(words, " ") -- what the tokenizer reads; words[i] is the i-th space-separated part
  elseif rd.preprocess then
    t = rd.preprocess(t)
    if p then p = rd.preprocess(p) end
  end
  local ds = rd.ds
  local k = ds.n + 1
  ds.n = k
  if words then ds.words[k] = words end
  ds.texts[k] = t
  if p then ds.pairs[k] = p end
  ds.lines[k] = line
  if lab ~= nil then rd.raw_labels[k] = lab end
  if rd.limit and k >= rd.limit then rd.done = true end
end

-- A file without a usable row is an error; invalid UTF-8 is passed through (the tokenizer drops
-- ill-formed sequences) and counted here.
local function count_rows(rd, s)
  local ds = rd.ds
  if ds.n == 0 then
    if ds.skipped > 0 then error(("data: %s: no usable rows (%d malformed, skipped)"):format(rd.path, ds.skipped), 0) end
    error(("data: %s: no data rows (the file is empty%s)"):format(rd.path, rd.header_names and " but for its header" or ""), 0)
  end
  ds.columns = rd.header_names
  if core.utf8_valid(s) then return end
  for i = 1, ds.n do
    if not core.utf8_valid(ds.texts[i]) or (ds.pairs and not core.utf8_valid(ds.pairs[i])) then
      ds.invalid_utf8 = ds.invalid_utf8 + 1
      if #ds.invalid_utf8_lines < KEEP_LINES then ds.invalid_utf8_lines[#ds.invalid_utf8_lines + 1] = ds.lines[i] end
    end
  end
end

-- The label names in id order: the given ones (opts.labels), else the sorted labels (or tags) seen.
local function label_names(given, raw, n)
  local names = {}
  if given then
    for i, v in ipairs(given) do names[i] = as_string(v) or error("data.read: labels must be strings or numbers", 0) end
    return names
  end
  local seen = {}
  for i = 1, n do
    local l = raw[i]
    if type(l) == "table" then for _, tag in ipairs(l) do seen[tag] = true end else seen[l] = true end
  end
  return sorted_labels(seen)
end

-- ds.labels (ids, or numbers for regression) and ds.label_names; a label not in the set raises.
local function set_labels(rd)
  local ds, raw = rd.ds, rd.raw_labels
  if not rd.cols.label then
    ds.labels = nil
    return
  elseif rd.task == "regression" then
    ds.labels, ds.label_names = raw, nil
    return
  end
  local names = label_names(rd.labels, raw, ds.n)
  local id = {}
  for i, name in ipairs(names) do id[name] = i - 1 end
  local function lookup(name, i, j)
    local v = id[name]
    if v == nil then
      local what = j and ("tag '%s' (word %d)"):format(short(name), j) or ("label '%s'"):format(short(name))
      error(("%s:%d: %s was not seen in training (%s: %s)"):format(rd.path, ds.lines[i] + (j and rd.format == "conll" and j - 1 or 0),
        what, j and "tags" or "labels", short(table.concat(names, ", "))), 0)
    end
    return v
  end
  for i = 1, ds.n do
    local l = raw[i]
    if type(l) == "table" then
      local ids = {}
      for j, tag in ipairs(l) do ids[j] = lookup(tag, i, j) end
      ds.labels[i] = ids
    else
      ds.labels[i] = lookup(l, i)
    end
  end
  ds.label_names = { unpack(names) }
end

-- D.read(spec, opts) -> dataset table (docs/data.md)
function D.read(spec, opts)
  local rd = read_args(spec, opts)
  local s = read_text(rd.path, rd.format)
  rd.ds, rd.raw_labels, rd.done = new_dataset(rd), {}, false
  rd.reader.records(s, function(fields, line) on_row(rd, fields, line) end,
    function(line, msg) bad(rd, line, msg) end, rd.path, rd.columns)
  count_rows(rd, s)
  set_labels(rd)
  return rd.ds
end

-- D.label_set(spec_or_ds, opts) -> the label names of the training data, in label-id order
function D.label_set(src, opts)
  local ds = src
  if type(src) == "string" or (type(src) == "table" and not src.texts) then
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.labels = nil
    ds = D.read(src, o)
  end
  if not ds.label_names then error(("data.label_set: %s has no class labels"):format(ds.path), 2) end
  return { unpack(ds.label_names) }
end

-- --- the tokenized-split cache ------------------------------------------------------------------------

-- $PFT_CACHE, else <repo>/build/cache when pft runs from its source tree, else $XDG_CACHE_HOME/pft or
-- ~/.cache/pft
function D.cache_dir()
  local env = os.getenv("PFT_CACHE")
  if env and env ~= "" then return env end
  local build = fs.build_dir()
  if build then return build .. "/cache" end
  local xdg = os.getenv("XDG_CACHE_HOME")
  if xdg and xdg ~= "" then return xdg .. "/pft" end
  return (os.getenv("HOME") or ".") .. "/.cache/pft"
end

-- The split's path as the cache key spells it: $PWD joined, not normalised. Not fs.abspath: it drops
-- "." and ".." segments, which would change the key (and so the file name) of every cache written so far.
local function key_path(path)
  if path:sub(1, 1) == "/" then return path end
  return (os.getenv("PWD") or ".") .. "/" .. path
end

-- D.encode(ds, tokenizer, {max_length = 128, cache = true, cache_dir = nil}) -> pft.Encoded, info
-- info = { hit = bool, path = cache file or nil, reason = why it missed ("missing: ..", "stale: ..",
-- "corrupt: ..") or nil, saved = bool, save_error = message or nil }.
function D.encode(ds, tokenizer, opts)
  opts = opts or {}
  local max_length = opts.max_length or 128
  local words = ds.words ~= nil -- token classification: each token's word is kept (core/encoded.h)
  local function encode() return core.encode_dataset(tokenizer, ds.texts, ds.pairs, max_length, { words = words }) end
  if opts.cache == false then return encode(), { hit = false } end
  local vocab = core.tokenizer_hash(tokenizer)
  local size, mtime = core.file_stat(ds.path)
  if not size then return encode(), { hit = false, reason = mtime } end
  local sp = ds.spec or {}
  local key = table.concat({ key_path(ds.path), tostring(sp.text), tostring(sp.text_pair), vocab, tostring(max_length),
    words and "words" or nil }, "\0")
  local dir = opts.cache_dir or D.cache_dir()
  local base = ds.path:match("([^/]+)$"):gsub("[^%w%._-]", "_")
  local file = ("%s/%s-%s.enc"):format(dir, base, core.text_hash({ key }))
  local expect = { vocab_hash = vocab, max_length = max_length, source_size = size, source_mtime = mtime,
    text_hash = core.text_hash(ds.texts, ds.pairs), count = ds.n, words = words }
  local enc, why = core.load_encoded(file, expect)
  if enc then return enc, { hit = true, path = file } end
  enc = encode()
  local info = { hit = false, path = file, reason = why }
  local ok, err = core.mkdir(dir)
  if ok then ok, err = enc:save(file, expect) end
  info.saved, info.save_error = ok and true or false, err
  return enc, info
end

-- --- loaders ------------------------------------------------------------------------------------------

-- D.num_batches(n, batch_size) -> how many batches n rows make: the last one may be short, none is dropped
function D.num_batches(n, batch_size)
  if type(n) ~= "number" or n < 0 or n ~= math.floor(n) then error("data.num_batches: n must be a non-negative integer", 2) end
  if type(batch_size) ~= "number" or batch_size < 1 or batch_size ~= math.floor(batch_size) then
    error("data.num_batches: batch_size must be a positive integer", 2)
  end
  return math.ceil(n / batch_size)
end

local Loader = {}
Loader.__index = Loader

-- D.loader(ds, tokenizer, {batch_size = 32, shuffle = false, bucket = false, seed = 0, max_length = 128,
--   cache = true, cache_dir = nil, bucket_chunks = 50})
function D.loader(ds, tokenizer, opts)
  opts = opts or {}
  check_keys(opts, LOADER_KEYS, "data.loader: options", 3)
  local bs = opts.batch_size or 32
  if type(bs) ~= "number" or bs < 1 or bs ~= math.floor(bs) then error("data.loader: batch_size must be a positive integer", 2) end
  local seed = opts.seed or 0
  if type(seed) ~= "number" or seed < 0 or seed ~= math.floor(seed) then error("data.loader: seed must be a non-negative integer", 2) end
  local enc, info = D.encode(ds, tokenizer, { max_length = opts.max_length, cache = opts.cache, cache_dir = opts.cache_dir })
  return setmetatable({
    ds = ds, enc = enc, cache = info, lengths = enc:lengths(), batch_size = bs, seed = seed,
    shuffle = opts.shuffle and true or false, bucket = opts.bucket and true or false,
    chunk = (opts.bucket_chunks or 50) * bs,
    continuation = opts.label_all_tokens and ds.words and D.continuation_tags(ds.label_names) or nil,
  }, Loader)
end

-- D.continuation_tags(names) -> {[id + 1] = id}: the tag a word's later tokens get with label_all_tokens,
-- its own except B-X -> I-X when the set has I-X (as transformers' token-classification example maps it).
function D.continuation_tags(names)
  local id, out = {}, {}
  for i, n in ipairs(names) do id[n] = i - 1 end
  for i, n in ipairs(names) do
    local typ = n:match("^B%-(.+)$")
    out[i] = typ and id["I-" .. typ] or i - 1
  end
  return out
end

function Loader:num_batches() return D.num_batches(self.ds.n, self.batch_size) end

-- loader:batches(e) -> array of batches, each an array of 1-based rows; a pure function of (seed, e).
-- Streams: 2e orders the rows, 2e + 1 orders the buckets' batches.
function Loader:batches(e)
  if self._plan_epoch == e then return self._plan end
  local n, bs = self.ds.n, self.batch_size
  local order
  if self.shuffle then
    order = core.permutation(n, self.seed, 2 * e)
  else
    order = {}
    for i = 1, n do order[i] = i end
  end
  local out = {}
  if self.bucket then
    local len, pos = self.lengths, {}
    for i = 1, n do pos[order[i]] = i end
    local function longer_first(a, b)
      if len[a] ~= len[b] then return len[a] > len[b] end
      return pos[a] < pos[b]
    end
    for c = 1, n, self.chunk do
      local chunk = {}
      for i = c, math.min(n, c + self.chunk - 1) do chunk[#chunk + 1] = order[i] end
      table.sort(chunk, longer_first)
      for b = 1, #chunk, bs do
        local rows = {}
        for i = b, math.min(#chunk, b + bs - 1) do rows[#rows + 1] = chunk[i] end
        out[#out + 1] = rows
      end
    end
    if self.shuffle then
      local perm, shuffled = core.permutation(#out, self.seed, 2 * e + 1), {}
      for i, j in ipairs(perm) do shuffled[i] = out[j] end
      out = shuffled
    end
  else
    for b = 1, n, bs do
      local rows = {}
      for i = b, math.min(n, b + bs - 1) do rows[#rows + 1] = order[i] end
      out[#out + 1] = rows
    end
  end
  self._plan_epoch, self._plan = e, out
  return out
end

-- loader:epoch(e, start_batch) -> iterator over {batch = pft.Batch, labels = {...}, index = i, rows = {...}}
-- for batches start_batch (default 1) .. num_batches of epoch e (any integer; the trainer counts from 0).
-- Each batch is padded to its longest row. Token classification: labels has one entry per token position
-- of the batch (rows x width), the word's tag at its first token and -100 elsewhere (label_all_tokens:
-- D.continuation_tags at the other tokens).
function Loader:epoch(e, start_batch)
  if type(e) ~= "number" or e ~= math.floor(e) or e < 0 then error("loader:epoch: epoch must be a non-negative integer", 2) end
  start_batch = start_batch or 1
  if type(start_batch) ~= "number" or start_batch < 1 or start_batch ~= math.floor(start_batch) then
    error("loader:epoch: start_batch must be a positive integer (1 = the first batch)", 2)
  end
  local plan, labels = self:batches(e), self.ds.labels
  local i = start_batch - 1
  return function()
    i = i + 1
    local rows = plan[i]
    if not rows then return nil end
    local batch, lab = self.enc:gather(rows, 0), nil
    if labels and self.ds.words then -- one loss label per token position, -100 where ignored
      local _, t = batch:size()
      lab = self.enc:token_labels(rows, labels, t, self.continuation)
    elseif labels then
      lab = {}
      for k, r in ipairs(rows) do lab[k] = labels[r] end
    end
    return { batch = batch, labels = lab, index = i, rows = rows }
  end
end

-- loader:pad_tokens(e) -> padding cells over all batches of epoch e (what bucketing saves)
function Loader:pad_tokens(e)
  local pad = 0
  for _, rows in ipairs(self:batches(e)) do
    local t, sum = 0, 0
    for _, r in ipairs(rows) do
      local l = self.lengths[r]
      sum = sum + l
      if l > t then t = l end
    end
    pad = pad + t * #rows - sum
  end
  return pad
end

return D
