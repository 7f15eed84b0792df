-- pft.metrics against scikit-learn 1.9.1 and scipy 1.17.1. The expected numbers were computed by hand
-- once with:
--   from sklearn.metrics import accuracy_score, precision_recall_fscore_support, matthews_corrcoef, confusion_matrix
--   from scipy.stats import pearsonr, spearmanr
--   gold = [0,0,0,1,1,1,1,2,2,0,1,2]; pred = [0,1,0,1,1,0,1,1,1,0,1,1]
--   accuracy_score(gold, pred); matthews_corrcoef(gold, pred); confusion_matrix(gold, pred, labels=[0,1,2])
--   precision_recall_fscore_support(gold, pred, labels=[0,1,2], average="macro" and None, zero_division=0)
--   x = [0.5,1.2,1.2,3.0,2.2,0.1,4.0,3.0]; y = [0.4,1.0,1.5,2.5,2.5,0.0,5.0,2.0]
--   pearsonr(x, y)[0]; spearmanr(x, y)[0]; mean((x - y)^2)
local Mx = require "pft.metrics"
local check = require "check"

local T = {}
local TOL = 1e-12

local GOLD = { 0, 0, 0, 1, 1, 1, 1, 2, 2, 0, 1, 2 }
local PRED = { 0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1 }

function T.multiclass_matches_sklearn()
  local m = Mx.classification(PRED, GOLD, { "a", "b", "c" })
  check.near(m.accuracy, 0.5833333333333334, TOL, "accuracy")
  check.near(m.precision_macro, 0.4166666666666667, TOL, "precision_macro")
  check.near(m.recall_macro, 0.5166666666666667, TOL, "recall_macro")
  check.near(m.f1_macro, 0.4551282051282051, TOL, "f1_macro")
  check.near(m.mcc, 0.36099743619057767, TOL, "mcc")
  check.all_near(m.confusion, { { 3, 1, 0 }, { 1, 4, 0 }, { 0, 3, 0 } }, 0, "confusion (rows gold, cols pred)")
  check.near(m.per_class.a.precision, 0.75, TOL, "a precision")
  check.near(m.per_class.b.recall, 0.8, TOL, "b recall")
  check.near(m.per_class.b.f1, 0.6153846153846154, TOL, "b f1")
  check.eq(m.per_class.c.precision, 0, "c is never predicted: zero_division=0")
  check.eq(m.per_class.c.f1, 0, "c f1")
  check.eq(m.per_class.c.support, 3, "c support")
end

function T.binary_matches_sklearn()
  -- matthews_corrcoef([1,0,1,1,0], [1,1,1,0,0]) = 0.16666666666666666; macro P = R = F1 = 0.5833333333333333
  local m = Mx.classification({ 1, 1, 1, 0, 0 }, { 1, 0, 1, 1, 0 }, { "0", "1" }, { loss = 0.25 })
  check.near(m.mcc, 0.16666666666666666, TOL, "mcc")
  check.near(m.f1_macro, 0.5833333333333333, TOL, "f1_macro")
  check.near(m.precision_macro, 0.5833333333333333, TOL, "precision_macro")
  check.eq(m.loss, 0.25, "loss copied in")
  check.eq(Mx.format(m), "acc 0.6000 f1 0.5833 mcc 0.1667 loss 0.2500", "format")
end

function T.degenerate_cases_are_zero()
  local m = Mx.classification({ 1, 1, 1 }, { 1, 1, 1 }, { "0", "1" })
  check.eq(m.accuracy, 1, "accuracy")
  check.eq(m.mcc, 0, "mcc undefined -> 0")
  local r = Mx.regression({ 1, 1, 1 }, { 1, 2, 3 })
  check.eq(r.pearson, 0, "constant predictions -> 0")
  check.eq(r.spearman, 0, "constant predictions -> 0")
end

function T.regression_matches_scipy()
  local x = { 0.5, 1.2, 1.2, 3.0, 2.2, 0.1, 4.0, 3.0 }
  local y = { 0.4, 1.0, 1.5, 2.5, 2.5, 0.0, 5.0, 2.0 }
  local m = Mx.regression(x, y)
  check.near(m.pearson, 0.9264538161707959, TOL, "pearson")
  check.near(m.spearman, 0.9394111922831736, TOL, "spearman (average ranks for ties)")
  check.near(m.mse, 0.31125, TOL, "mse")
  check.eq(Mx.format(m), "pearson 0.9265 spearman 0.9394 mse 0.3113", "format")
end

function T.misuse_raises()
  check.raises(function() Mx.classification({ 0 }, { 0, 1 }, { "a", "b" }) end, "1 predictions for 2 gold labels")
  check.raises(function() Mx.classification({ 2 }, { 0 }, { "a", "b" }) end, "pred[1] = 2 is not a class id in 0..1")
  check.raises(function() Mx.regression({}, {}) end, "no examples")
end

-- Entity-level metrics against seqeval 1.2.2 (tests/gen_seqeval_fixtures.py): the spans of every
-- sequence, micro precision / recall / F1, per type, and token accuracy.
function T.token_classification_matches_seqeval()
  local f = assert(io.open(TEST_ROOT .. "/tests/fixtures/ner/seqeval.json"))
  local fx = require("cjson").decode(f:read("*a"))
  f:close()
  check.truthy(#fx.cases >= 9, "cases")
  for _, c in ipairs(fx.cases) do
    local seqs = {}
    for _, s in ipairs(c.gold) do seqs[#seqs + 1] = s end
    for _, s in ipairs(c.pred) do seqs[#seqs + 1] = s end
    for i, s in ipairs(seqs) do
      local got, want = Mx.entities(s), c.entities[i]
      local a, b = {}, {}
      for _, e in ipairs(got) do a[#a + 1] = ("%s %d %d"):format(e[1], e[2] - 1, e[3] - 1) end -- seqeval: 0-based
      for _, e in ipairs(want) do b[#b + 1] = ("%s %d %d"):format(e[1], e[2], e[3]) end
      check.eq(table.concat(a, ", "), table.concat(b, ", "), c.name .. ": entities of sequence " .. i)
    end
    local m = Mx.token_classification(c.pred, c.gold)
    check.near(m.precision, c.precision, TOL, c.name .. ": precision")
    check.near(m.recall, c.recall, TOL, c.name .. ": recall")
    check.near(m.f1, c.f1, TOL, c.name .. ": f1")
    check.near(m.token_accuracy, c.accuracy, TOL, c.name .. ": token accuracy")
    for typ, want in pairs(c.per_type) do
      local got = m.per_type[typ] or {}
      check.near(got.f1 or -1, want.f1, TOL, c.name .. ": f1 of " .. typ)
      check.near(got.precision or -1, want.precision, TOL, c.name .. ": precision of " .. typ)
      check.eq(got.support, want.support, c.name .. ": support of " .. typ)
    end
  end
  check.raises(function() Mx.token_classification({ { "O" } }, { { "O", "O" } }) end, "1 predicted tags for 2 gold ones")
end

return T
