-- Two spirals: a 2-layer MLP (2 -> 32 tanh -> 2) learns to tell two interleaved spirals apart.
--
--   build/pft docs/examples/spirals.lua [steps]
--
-- 400 points (200 per class) generated from a fixed seed; AdamW on the full batch; the loss is printed
-- every 100 steps. It reaches >= 95% training accuracy in about a second (tests/lua/test_spirals.lua
-- checks that). Also a module: require it, or dofile it, and call M.run{...}.
local pft = pft or require "pft"

local M = {}

-- Points of class c lie on r = 0.1 + 0.9 s, theta = 3 pi s + c pi for s in [0, 1), plus Gaussian noise.
function M.data(n_per_class, noise)
  local noise_t = pft.randn({ 2 * n_per_class, 2 }, 0, noise):flat()
  local xs, labels = {}, {}
  for c = 0, 1 do
    for i = 0, n_per_class - 1 do
      local s = i / n_per_class
      local r, theta = 0.1 + 0.9 * s, 3 * math.pi * s + c * math.pi
      local k = #xs
      xs[k + 1] = { r * math.cos(theta) + noise_t[2 * k + 1], r * math.sin(theta) + noise_t[2 * k + 2] }
      labels[k + 1] = c -- class ids are 0-based
    end
  end
  return pft.tensor(xs), labels
end

-- Fraction of rows whose largest logit is the label (two classes: compare the two columns).
function M.accuracy(logits, labels)
  local v, right = logits:flat(), 0
  for i, y in ipairs(labels) do
    local pred = v[2 * i] > v[2 * i - 1] and 1 or 0
    if pred == y then right = right + 1 end
  end
  return right / #labels
end

-- opts: seed, points (per class), hidden, steps, lr, every (print interval; false for quiet)
function M.run(opts)
  opts = opts or {}
  local seed, steps, every = opts.seed or 7, opts.steps or 1000, opts.every
  if every == nil then every = 100 end
  pft.seed(seed)
  local x, labels = M.data(opts.points or 200, opts.noise or 0.02)
  local net = pft.nn.Sequential(
    pft.nn.Linear(2, opts.hidden or 32, { name = "fc1" }),
    pft.tanh,
    pft.nn.Linear(opts.hidden or 32, 2, { name = "fc2" }))
  local opt = pft.adamw(net:parameters(), { lr = opts.lr or 0.03, weight_decay = 0 })
  local t0, loss = os.clock(), nil
  for step = 1, steps do
    opt:zero_grad()
    local l = pft.cross_entropy(net:forward(x), labels)
    l:backward()
    opt:step()
    loss = l:item()
    if every and (step % every == 0 or step == 1) then
      print(("step %5d  loss %.4f"):format(step, loss))
    end
  end
  local acc = pft.no_grad(function() return M.accuracy(net:forward(x), labels) end)
  local seconds = os.clock() - t0
  if every then print(("final loss %.4f, training accuracy %.1f%% (%.2f s CPU, seed %d)"):format(loss, 100 * acc, seconds, seed)) end
  return { accuracy = acc, loss = loss, seconds = seconds }
end

if arg and arg[0] and arg[0]:match("spirals%.lua$") then
  M.run({ steps = tonumber(arg[1]) })
end

return M
