-- pft.metrics: evaluation numbers for classification and regression, from Lua arrays of predictions.
--
--   local Mx = require "pft.metrics"
--   local m = Mx.classification({0, 1, 1}, {0, 1, 0}, {"neg", "pos"}, {loss = 0.41})
--   m.accuracy, m.f1_macro, m.precision_macro, m.recall_macro, m.mcc, m.loss
--   m.per_class.pos.f1, m.confusion[gold + 1][pred + 1]
--   Mx.regression({0.1, 0.9}, {0.0, 1.0}) -> {pearson, spearman, mse}
--   print(Mx.format(m))        -- "acc 0.6667 f1 0.6667 mcc 0.5000 loss 0.4100"
--
--   Mx.token_classification({{"B-PER", "I-PER", "O"}}, {{"B-PER", "O", "O"}}) -> {f1, precision, recall,
--     token_accuracy, per_type = {PER = {precision, recall, f1, support}}, entities, predicted}
--
-- Entities follow seqeval's default (IOB2, lenient) mode, against which tests/fixtures/ner/seqeval.json
-- (tests/gen_seqeval_fixtures.py) checks them: an I- after O or after another type starts an entity.
-- Conventions (those of scikit-learn and scipy, against which tests/lua/test_metrics.lua was checked):
-- class ids are 0-based indices into label_names; a ratio whose denominator is 0 (precision of a class
-- never predicted, recall of a class absent from gold, F1 when both are 0) is 0, as zero_division=0;
-- macro averages are unweighted means over all classes in label_names; MCC is Gorodkin's multiclass R_K,
-- 0 when undefined; the confusion matrix has gold classes as rows and predictions as columns. Pearson
-- and Spearman (average ranks for ties) are 0 when a side is constant (scipy returns nan there).
local Mx = {}

-- What each task kind's evaluation reports (recipes' best_metric and eval.metrics are checked against
-- these) and the metric that picks the best model when the recipe does not say.
Mx.TASKS = {
  classification = { names = { "accuracy", "f1_macro", "precision_macro", "recall_macro", "mcc", "loss" }, best = "accuracy" },
  regression = { names = { "pearson", "spearman", "mse", "loss" }, best = "pearson" },
  token_classification = { names = { "f1", "precision", "recall", "token_accuracy", "loss" }, best = "f1" },
}

local function check_ids(xs, k, what)
  for i, v in ipairs(xs) do
    if type(v) ~= "number" or v ~= math.floor(v) or v < 0 or v >= k then
      error(("metrics: %s[%d] = %s is not a class id in 0..%d"):format(what, i, tostring(v), k - 1), 3)
    end
  end
end

local function ratio(a, b) return b > 0 and a / b or 0 end

-- Mx.classification(pred, gold, label_names, opts) -> metrics table; opts.loss (mean loss) is copied in
function Mx.classification(pred, gold, label_names, opts)
  if #pred ~= #gold then error(("metrics: %d predictions for %d gold labels"):format(#pred, #gold), 2) end
  if #gold == 0 then error("metrics: no examples", 2) end
  local k = #label_names
  check_ids(pred, k, "pred")
  check_ids(gold, k, "gold")
  local conf = {}
  for i = 1, k do
    conf[i] = {}
    for j = 1, k do conf[i][j] = 0 end
  end
  for i = 1, #gold do
    local r = conf[gold[i] + 1]
    r[pred[i] + 1] = r[pred[i] + 1] + 1
  end
  local n, correct = #gold, 0
  local t, p = {}, {} -- gold (row) and predicted (column) totals
  for i = 1, k do t[i], p[i] = 0, 0 end
  for i = 1, k do
    correct = correct + conf[i][i]
    for j = 1, k do
      t[i] = t[i] + conf[i][j]
      p[j] = p[j] + conf[i][j]
    end
  end
  local per_class, sp, sr, sf = {}, 0, 0, 0
  for i = 1, k do
    local tp = conf[i][i]
    local prec, rec = ratio(tp, p[i]), ratio(tp, t[i])
    local f1 = ratio(2 * tp, p[i] + t[i])
    per_class[label_names[i]] = { precision = prec, recall = rec, f1 = f1, support = t[i] }
    sp, sr, sf = sp + prec, sr + rec, sf + f1
  end
  -- Gorodkin: (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))
  local pt, pp, tt = 0, 0, 0
  for i = 1, k do
    pt, pp, tt = pt + p[i] * t[i], pp + p[i] * p[i], tt + t[i] * t[i]
  end
  local den = math.sqrt((n * n - pp) * (n * n - tt))
  local m = {
    n = n,
    accuracy = correct / n,
    precision_macro = sp / k,
    recall_macro = sr / k,
    f1_macro = sf / k,
    mcc = den > 0 and (correct * n - pt) / den or 0,
    per_class = per_class,
    confusion = conf,
    labels = { unpack(label_names) },
  }
  if opts and opts.loss then m.loss = opts.loss end
  return m
end

local function mean(xs)
  local s = 0
  for _, v in ipairs(xs) do s = s + v end
  return s / #xs
end

local function pearson(x, y)
  local mx, my = mean(x), mean(y)
  local sxy, sxx, syy = 0, 0, 0
  for i = 1, #x do
    local dx, dy = x[i] - mx, y[i] - my
    sxy, sxx, syy = sxy + dx * dy, sxx + dx * dx, syy + dy * dy
  end
  local den = math.sqrt(sxx * syy)
  return den > 0 and sxy / den or 0
end

-- 1-based ranks, ties sharing their average rank
local function ranks(x)
  local idx = {}
  for i = 1, #x do idx[i] = i end
  table.sort(idx, function(a, b)
    if x[a] ~= x[b] then return x[a] < x[b] end
    return a < b
  end)
  local r, i = {}, 1
  while i <= #idx do
    local j = i
    while j < #idx and x[idx[j + 1]] == x[idx[i]] do j = j + 1 end
    local avg = (i + j) / 2
    for q = i, j do r[idx[q]] = avg end
    i = j + 1
  end
  return r
end

-- Mx.regression(pred, gold, opts) -> {pearson, spearman, mse, n}; opts.loss is copied in
function Mx.regression(pred, gold, opts)
  if #pred ~= #gold then error(("metrics: %d predictions for %d gold values"):format(#pred, #gold), 2) end
  if #gold == 0 then error("metrics: no examples", 2) end
  local se = 0
  for i = 1, #gold do se = se + (pred[i] - gold[i]) ^ 2 end
  local m = { n = #gold, pearson = pearson(pred, gold), spearman = pearson(ranks(pred), ranks(gold)), mse = se / #gold }
  if opts and opts.loss then m.loss = opts.loss end
  return m
end

-- --- token classification: entity spans as seqeval finds them -------------------------------------------

-- "B-PER" -> "B", "PER"; "O" -> "O", "_" (seqeval's split: the first character, the rest after a '-')
local function split_tag(tag)
  local prefix = tag:sub(1, 1)
  local rest = tag:sub(2)
  local typ = rest:match("^[^-]*%-(.*)$") or rest
  return prefix, typ ~= "" and typ or "_"
end

local function chunk_ends(pt, t, ptype, typ)
  if pt == "E" or pt == "S" then return true end
  if (pt == "B" or pt == "I") and (t == "B" or t == "S" or t == "O") then return true end
  return pt ~= "O" and pt ~= "." and ptype ~= typ
end

local function chunk_starts(pt, t, ptype, typ)
  if t == "B" or t == "S" then return true end
  if (pt == "E" or pt == "S" or pt == "O") and (t == "E" or t == "I") then return true end
  return t ~= "O" and t ~= "." and ptype ~= typ
end

-- Mx.entities(tags[, offset]) -> { {type, first, last}, ... } (1-based positions, + offset)
function Mx.entities(tags, offset)
  offset = offset or 0
  local out, pt, ptype, begin = {}, "O", "", 1
  for i = 1, #tags + 1 do
    local t, typ = split_tag(tags[i] or "O")
    if chunk_ends(pt, t, ptype, typ) then out[#out + 1] = { ptype, begin + offset, i - 1 + offset } end
    if chunk_starts(pt, t, ptype, typ) then begin = i end
    pt, ptype = t, typ
  end
  return out
end

-- Mx.token_classification(pred, gold[, opts]) -> entity-level micro precision / recall / F1 (exact span
-- and type), per type, and token accuracy; pred and gold are lists of tag sequences of equal lengths.
function Mx.token_classification(pred, gold, opts)
  if #pred ~= #gold then error(("metrics: %d predicted sequences for %d gold ones"):format(#pred, #gold), 2) end
  local gold_set, counts, tokens, right = {}, {}, 0, 0
  local function count(typ) counts[typ] = counts[typ] or { gold = 0, pred = 0, correct = 0 }; return counts[typ] end
  local offset = 0
  for i, g in ipairs(gold) do
    local p = pred[i]
    if #p ~= #g then error(("metrics: sequence %d: %d predicted tags for %d gold ones"):format(i, #p, #g), 2) end
    for j = 1, #g do
      tokens = tokens + 1
      if p[j] == g[j] then right = right + 1 end
    end
    for _, e in ipairs(Mx.entities(g, offset)) do
      gold_set[e[1] .. "\0" .. e[2] .. "\0" .. e[3]] = true
      count(e[1]).gold = count(e[1]).gold + 1
    end
    for _, e in ipairs(Mx.entities(p, offset)) do
      local c = count(e[1])
      c.pred = c.pred + 1
      if gold_set[e[1] .. "\0" .. e[2] .. "\0" .. e[3]] then c.correct = c.correct + 1 end
    end
    offset = offset + #g + 1 -- seqeval joins the sequences with an O between them
  end
  local per_type, tg, tp, tc = {}, 0, 0, 0
  for typ, c in pairs(counts) do
    local prec, rec = ratio(c.correct, c.pred), ratio(c.correct, c.gold)
    per_type[typ] = { precision = prec, recall = rec, f1 = ratio(2 * prec * rec, prec + rec), support = c.gold }
    tg, tp, tc = tg + c.gold, tp + c.pred, tc + c.correct
  end
  local prec, rec = ratio(tc, tp), ratio(tc, tg)
  local m = { precision = prec, recall = rec, f1 = ratio(2 * prec * rec, prec + rec), token_accuracy = ratio(right, tokens),
    per_type = per_type, entities = tg, predicted = tp, n = #gold }
  if opts and opts.loss then m.loss = opts.loss end
  return m
end

-- The short names Mx.format prints; HEADLINE is what it prints when no names are asked for.
local SHORT = { accuracy = "acc", f1_macro = "f1", precision_macro = "precision", recall_macro = "recall", mcc = "mcc",
  pearson = "pearson", spearman = "spearman", mse = "mse", loss = "loss", f1 = "f1", precision = "precision",
  recall = "recall", token_accuracy = "token_acc" }
local HEADLINE = { "accuracy", "f1_macro", "mcc", "f1", "precision", "recall", "token_accuracy", "pearson", "spearman",
  "mse", "loss" }

-- Mx.only(m, names) -> the metrics of m named in names (all of m when names is nil): what a recipe's
-- eval.metrics asks to report and log.
function Mx.only(m, names)
  if not names then return m end
  local out = {}
  for _, k in ipairs(names) do out[k] = m[k] end
  return out
end

-- Mx.format(m[, names]) -> one line: the named metrics in that order, or the headline numbers of either
-- kind, then loss when present
function Mx.format(m, names)
  local parts = {}
  for _, k in ipairs(names or HEADLINE) do
    if m[k] ~= nil then parts[#parts + 1] = ("%s %.4f"):format(SHORT[k] or k, m[k]) end
  end
  return table.concat(parts, " ")
end

return Mx
