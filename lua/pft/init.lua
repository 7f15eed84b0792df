-- pft: the Lua face of the toolkit. `require "pft"` returns the `pft.core` functions (tensors, ops,
-- optimizers; all per-element work is in C) plus a few small helpers that orchestrate them.
--
--   local pft = require "pft"
--   pft.seed(1)
--   local net = pft.nn.Sequential(pft.nn.Linear(2, 32, { name = "fc1" }), pft.tanh, pft.nn.Linear(32, 2, { name = "fc2" }))
--   local opt = pft.adamw(net:parameters(), { lr = 1e-2 })
--   local loss = pft.cross_entropy(net:forward(x), targets)   -- targets: 0-based class ids
--   opt:zero_grad(); loss:backward(); opt:step()
--
-- Conventions: dims and indices are 1-based (as in torch7: t:sum(2), t:narrow(1, 3, 2), t:get(1, 1));
-- token ids and class ids are 0-based, since they index vocabularies and label sets.
local core = require "pft.core"

local pft = {}
for k, v in pairs(core) do pft[k] = v end
pft.core = core
pft.version = "0.1.0"

-- models: pft.load_model("minilm", {head = "seqcls", labels = {"negative", "positive"}}); see pft/model.lua
pft.model = require "pft.model"
pft.load_model = pft.model.load

-- nn: modules are tables with forward(x) and parameters(); a plain function (pft.tanh) is a module too.
local nn = {}
pft.nn = nn

local Linear = {}
Linear.__index = Linear

-- Linear(in, out [, {name = "fc1", bias = true}]): y = x . weight^T + bias, weight [out, in], bias [out].
-- Initialised uniform in +-1/sqrt(in), as torch.nn.Linear.
function nn.Linear(n_in, n_out, opts)
  opts = opts or {}
  local bound = 1 / math.sqrt(n_in)
  local self = setmetatable({}, Linear)
  self.weight = core.rand({ n_out, n_in }, -bound, bound):requires_grad(true)
  if opts.bias ~= false then
    self.bias = core.rand({ n_out }, -bound, bound):requires_grad(true)
  end
  if opts.name then
    self.weight:set_name(opts.name .. ".weight")
    if self.bias then self.bias:set_name(opts.name .. ".bias") end
  end
  return self
end

function Linear:forward(x) return core.linear(x, self.weight, self.bias) end

function Linear:parameters()
  return { self.weight, self.bias }
end

local Sequential = {}
Sequential.__index = Sequential

-- Sequential(m1, m2, ...): each a module or a function of one tensor.
function nn.Sequential(...)
  return setmetatable({ modules = { ... } }, Sequential)
end

function Sequential:forward(x)
  for _, m in ipairs(self.modules) do
    if type(m) == "function" then x = m(x) else x = m:forward(x) end
  end
  return x
end

function Sequential:parameters()
  local params = {}
  for _, m in ipairs(self.modules) do
    if type(m) == "table" and m.parameters then
      for _, p in ipairs(m:parameters()) do params[#params + 1] = p end
    end
  end
  return params
end

return pft
