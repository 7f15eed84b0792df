-- pft.metrics: evaluation numbers for classification and regression, from Lua arrays of predictions.
--
--   local Mx = require "pft.metrics"
--   local m = Mx.classification({0, 1, 1}, {0, 1, 0}, {"neg", "pos"}, {loss = 0.41})
--   m.accuracy, m.f1_macro, m.precision_macro, m.recall_macro, m.mcc, m.loss
--   m.per_class.pos.f1, m.confusion[gold + 1][pred + 1]
--   Mx.regression({0.1, 0.9}, {0.0, 1.0}) -> {pearson, spearman, mse}
--   print(Mx.format(m))        -- "acc 0.6667 f1 0.6667 mcc 0.5000 loss 0.4100"
--
-- Conventions (those of scikit-learn and scipy, against which tests/lua/test_metrics.lua was checked):
-- class ids are 0-based indices into label_names; a ratio whose denominator is 0 (precision of a class
-- never predicted, recall of a class absent from gold, F1 when both are 0) is 0, as zero_division=0;
-- macro averages are unweighted means over all classes in label_names; MCC is Gorodkin's multiclass R_K,
-- 0 when undefined; the confusion matrix has gold classes as rows and predictions as columns. Pearson
-- and Spearman (average ranks for ties) are 0 when a side is constant (scipy returns nan there).
local Mx = {}

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

-- The short names Mx.format prints; HEADLINE is what it prints when no names are asked for.
local SHORT = { accuracy = "acc", f1_macro = "f1", precision_macro = "precision", recall_macro = "recall", mcc = "mcc",
  pearson = "pearson", spearman = "spearman", mse = "mse", loss = "loss" }
local HEADLINE = { "accuracy", "f1_macro", "mcc", "pearson", "spearman", "mse", "loss" }

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
