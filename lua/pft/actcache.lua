-- pft.actcache: the frozen-prefix activation cache. A frozen prefix (the embeddings and every layer below
-- the lowest one that trains) runs in eval mode, so its output is a fixed function of each example's
-- tokens: computed once per split, it serves every later step, epoch, evaluation and run, which then run
-- only the layers above it (core/states.h, nn.h pft_bert_forward_ex).
--
--   local A = require "pft.actcache"
--   local b = A.boundary_of(touched, info, "seqcls")        -- 4: layers 4.. train; nil: the embeddings do
--   local cache = A.new(model, { train = loader, dev = dev_loader }, { budget = bytes, say = print })
--   cache:ensure({ 4 })                                      -- opens the files, or computes them in one pass
--   local hidden, pooled, logits = cache:forward("train", 4, item)   -- or nil when boundary 4 is not stored
--
-- Boundaries, for a model of L layers: b in 0..L-1 is the input of layer b (0: the embeddings' output),
-- every real token of a row. With a sequence head, L is the last layer's [CLS] vector of each row (all
-- the pooler reads) and L + 1 the pooler's output (all the classifier reads); with a token head, L is the
-- last layer's output, every token. The boundary a step can start from is the lowest group that trains
-- now or has ever trained in this run: a layer once updated is not the layer the cache was computed with.
--
-- Files: <cache dir>/acts/<split file>-<key>.act, the key a hash of everything the vectors depend on: the
-- prefix's weights (their floats, so a changed checkpoint misses), the model's shape, the rows' token ids
-- (which cover the tokenizer, max_length and the texts) and the boundary. Written atomically; a stale or
-- corrupt file is computed again, with a message, never used.
local core = require "pft.core"
local fs = require "pft.fs"

local A = {}

A.VERSION = "1" -- part of every key: bump when what a boundary holds changes
A.PASS_TOKENS = 4096 -- real tokens per batch of the encoder pass (its taps hold L + 1 copies of them)

local function layer_index(g) return tonumber(g:match("^layer%[(%d+)%]$")) end

-- A.boundary_of(touched, info, head) -> the lowest boundary not below any touched parameter, or nil
-- (an embedding trains: nothing to cache). touched: {[name] = true}.
function A.boundary_of(touched, info, head)
  local L = info.num_layers
  local low = head == "seqcls" and L + 1 or L -- nothing below the classifier trains
  for n in pairs(touched) do
    local g = info.group_of[n]
    if g == "embeddings" then return nil end
    local i = layer_index(g)
    if i then low = math.min(low, i)
    elseif g == "pooler" then low = math.min(low, L) end
  end
  return low
end

-- A.kind(b, info, head) -> "tokens" | "first" | "pooled": what a store at b holds (forward_from's kind)
function A.kind(b, info, head)
  local L = info.num_layers
  if head == "seqcls" and b == L + 1 then return "pooled" end
  if head == "seqcls" and b == L then return "first" end
  return "tokens"
end

-- A.label(b, info, head) -> how the plan names a boundary ("live" for nil)
function A.label(b, info, head)
  if b == nil then return "live" end
  local k = A.kind(b, info, head)
  if k == "pooled" then return "pooled" end
  if k == "first" then return "[CLS]" end
  if b == info.num_layers then return "encoder out" end
  return ("layer[%d] in"):format(b)
end

-- Bytes a split of n rows and ntok tokens takes at boundary b (width = hidden size).
function A.split_bytes(b, info, head, width, n, ntok)
  local per_row = A.kind(b, info, head) ~= "tokens"
  return core.states_bytes(n, per_row and n or ntok, width, per_row)
end

-- The default budget: half of the memory available now, and no more than half of the cache directory's
-- free disk (the store is mapped: beyond memory, every batch would read the disk).
function A.default_budget(dir)
  local mem
  local f = io.open("/proc/meminfo", "rb")
  if f then
    local text = f:read("*a")
    f:close()
    local kb = text:match("MemAvailable:%s*(%d+)")
    mem = kb and tonumber(kb) * 1024
  end
  local probe = dir
  while probe and not fs.exists(probe) do probe = probe:match("^(.*)/[^/]*$") end
  local disk = probe and probe ~= "" and core.free_space(probe) or nil
  local budget = math.huge
  if mem then budget = math.min(budget, mem / 2) end
  if disk then budget = math.min(budget, disk / 2) end
  return budget ~= math.huge and budget or 1024 ^ 3
end

-- A.choose(needed, cost, budget) -> chosen {b...}, skipped {b...}: the boundaries the schedule needs
-- (needed: {{b =, steps =}}), most steps first, while their bytes (cost(b)) fit in the budget.
function A.choose(needed, cost, budget)
  local order = {}
  for i, x in ipairs(needed) do order[i] = x end
  table.sort(order, function(x, y)
    if x.steps ~= y.steps then return x.steps > y.steps end
    return x.b > y.b
  end)
  local chosen, skipped, used = {}, {}, 0
  for _, x in ipairs(order) do
    local c = cost(x.b)
    if used + c <= budget then chosen[#chosen + 1], used = x.b, used + c else skipped[#skipped + 1] = x.b end
  end
  table.sort(chosen)
  table.sort(skipped)
  return chosen, skipped, used
end

-- A.needed(phases, info, head) -> {{b =, steps =}}: each phase's boundary (the lowest group it or an
-- earlier phase trained), with the steps it serves; phases without a boundary or not run are left out.
-- A dynamic phase (a plateau rule) counts one step: when it begins is not known in advance.
function A.needed(phases, info, head)
  local steps, out = {}, {}
  for _, ph in ipairs(phases) do
    local b = not ph.unreached and ph.touched and A.boundary_of(ph.touched, info, head)
    if b and b > 0 then -- boundary 0, the embeddings' output, is cheaper to compute than to store and read
      local n = ph.dynamic and 1 or (ph.to_step - ph.from_step + 1)
      steps[b] = (steps[b] or 0) + n
    end
  end
  for b, n in pairs(steps) do out[#out + 1] = { b = b, steps = n } end
  table.sort(out, function(x, y) return x.b < y.b end)
  return out
end

-- --- the cache over one model and its splits ---------------------------------------------------------

local Cache = {}
Cache.__index = Cache

-- A.new(model, loaders, opts) -> cache. loaders: {train = loader, dev = loader or nil, ...} (pft.data);
-- opts: dir (default <data cache dir>/acts), say (a function of one line), head ("seqcls" | "tokcls").
function A.new(model, loaders, opts)
  opts = opts or {}
  local bert = model.bert or model
  local info = require("pft.schedule").model_info(bert)
  local cfg = bert:config()
  local self = setmetatable({ bert = bert, info = info, head = opts.head or cfg.head, loaders = loaders,
    dir = opts.dir or (require("pft.data").cache_dir() .. "/acts"), say = opts.say or function() end,
    width = cfg.hidden_size, stores = {}, group_hash = {}, seconds = 0, served = 0 }, Cache)
  -- the GEMMs' precision too: a bf16 prefix's output is not an fp32 one's
  self.shape_key = table.concat({ A.VERSION, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size,
    ("%.9g"):format(cfg.layer_norm_eps), self.head, core.precision() }, ",")
  return self
end

-- the hash of one group's parameters (computed once: the prefix is frozen while it is used)
function Cache:hash_of(group)
  if not self.group_hash[group] then
    local ts = {}
    for _, p in ipairs(self.bert:params()) do
      if self.info.group_of[p:name()] == group then ts[#ts + 1] = p end
    end
    self.group_hash[group] = core.tensors_hash(ts)
  end
  return self.group_hash[group]
end

-- The key of split's store at b: the prefix's weights below b, the model's shape, the split's tokens.
function Cache:key(split, b)
  local parts = { self.shape_key, tostring(b), core.encoded_hash(self.loaders[split].enc), self:hash_of("embeddings") }
  for i = 0, math.min(b, self.info.num_layers) - 1 do parts[#parts + 1] = self:hash_of(("layer[%d]"):format(i)) end
  if A.kind(b, self.info, self.head) == "pooled" then parts[#parts + 1] = self:hash_of("pooler") end
  return core.text_hash({ table.concat(parts, "\0") })
end

function Cache:path(split, key)
  local ds = self.loaders[split].ds
  local base = (ds.path or split):match("([^/]+)$"):gsub("[^%w%._-]", "_")
  return ("%s/%s-%s.act"):format(self.dir, base, key)
end

function Cache:per_row(b) return A.kind(b, self.info, self.head) ~= "tokens" end

-- Opens split's store at b when its file is good; returns nil and why not ("missing: ..." etc.).
function Cache:open(split, b)
  local key = self:key(split, b)
  local s, why = core.states_open(self:path(split, key), key, self.loaders[split].enc, self.width, self:per_row(b))
  if s then
    self.stores[split] = self.stores[split] or {}
    self.stores[split][b] = s
  end
  return s, why
end

-- The vectors a tap gives for boundary b: the taps hold layer inputs and the last output, pooled the
-- pooler's output.
local function tap_for(self, b, taps, pooled)
  if A.kind(b, self.info, self.head) == "pooled" then return pooled end
  return taps[math.min(b, self.info.num_layers) + 1]
end

-- One pass over split (rows in order, eval mode, no tape) writing the stores of every boundary in bs.
function Cache:compute(split, bs)
  local loader = self.loaders[split]
  local enc, n = loader.enc, loader.ds.n
  local writers = {}
  local ok, err = core.mkdir(self.dir)
  if not ok then error("activation cache: " .. err, 0) end
  for _, b in ipairs(bs) do
    local key = self:key(split, b)
    writers[b] = core.states_writer(self:path(split, key), key, enc, self.width, self:per_row(b))
  end
  local upto = 0 -- the highest layer input needed, or nil when the whole model must run ([CLS], pooled)
  for _, b in ipairs(bs) do
    if A.kind(b, self.info, self.head) ~= "tokens" then upto = nil; break end
    upto = math.max(upto, b)
  end
  local was_training = self.bert:is_training()
  self.bert:train(false)
  local lengths = loader.lengths
  local done, why = pcall(core.no_grad, function()
    local first = 1
    while first <= n do
      local rows, tokens = {}, 0 -- batches of about A.PASS_TOKENS real tokens: large GEMMs, bounded taps
      while first <= n and (#rows == 0 or tokens + lengths[first] <= A.PASS_TOKENS) do
        rows[#rows + 1], tokens, first = first, tokens + lengths[first], first + 1
      end
      local batch = enc:gather(rows, 0)
      local hidden, pooled, logits, taps
      if upto then taps = self.bert:prefix_taps(batch, upto) -- no layer above the highest boundary runs
      else hidden, pooled, logits, taps = self.bert:forward_taps(batch) end
      for _, b in ipairs(bs) do writers[b]:add(tap_for(self, b, taps, pooled), batch) end
      for _, t in ipairs(taps) do t:free() end
      if hidden then hidden:free() end
      if pooled then pooled:free() end
      if logits then logits:free() end
      batch:free()
    end
  end)
  self.bert:train(was_training)
  if not done then
    for _, w in pairs(writers) do pcall(w.abort, w) end
    error(why, 0)
  end
  for _, b in ipairs(bs) do writers[b]:commit() end
end

-- cache:ensure(bs) -> seconds spent computing: every split's store at every boundary of bs opened, the
-- missing, stale and corrupt ones computed (one forward pass per split for all of them) and opened.
function Cache:ensure(bs)
  local spent = 0
  for split in pairs(self.loaders) do
    local missing, reasons = {}, {}
    for _, b in ipairs(bs) do
      if not (self.stores[split] and self.stores[split][b]) then
        local s, why = self:open(split, b)
        if not s then
          missing[#missing + 1] = b
          if not why:match("^missing") then reasons[#reasons + 1] = why end
        end
      end
    end
    for _, r in ipairs(reasons) do self.say("activation cache: " .. r .. "; computing it again") end
    if #missing > 0 then
      local t0 = core.clock()
      self:compute(split, missing)
      local dt = core.clock() - t0
      spent = spent + dt
      local labels = {}
      for _, b in ipairs(missing) do
        local s, why = self:open(split, b)
        if not s then error("activation cache: a file just written does not read back: " .. tostring(why), 0) end
        labels[#labels + 1] = A.label(b, self.info, self.head)
      end
      self.say(("activation cache: %s of %s (%d rows) computed in %.1f s"):format(table.concat(labels, ", "), split,
        self.loaders[split].ds.n, dt))
    end
  end
  self.seconds = self.seconds + spent
  return spent
end

function Cache:has(split, b)
  return b ~= nil and self.stores[split] ~= nil and self.stores[split][b] ~= nil
end

-- cache:forward(split, b, item) -> hidden (or nil), pooled, logits from split's store at b for the
-- loader item's rows; nil when b is not stored (the caller runs the whole model).
function Cache:forward(split, b, item)
  if not self:has(split, b) then return nil end
  self.served = self.served + 1 -- batches that skipped the prefix
  local x = self.stores[split][b]:gather(item.rows)
  local h, p, lg = self.bert:forward_from(item.batch, A.kind(b, self.info, self.head), b, x)
  x:free()
  return h, p, lg
end

function Cache:free()
  for _, per in pairs(self.stores) do for _, s in pairs(per) do s:free() end end
  self.stores = {}
end

return A
