-- pft.checkpoint: the run directory's checkpoints, written so that an interrupt never leaves half of one.
--
--   local C = require "pft.checkpoint"
--   local path = C.save(run_dir, step, { weights = {name = tensor}, optim = opt:state(), state = {...} }, keep)
--   local ck = C.load(C.latest(run_dir))   -- { weights = {name = tensor}, optim = {...}, state = {...} }
--
-- Layout of checkpoints/step-N/: weights.safetensors (the parameters that were ever trainable, and the
-- head), optimizer.safetensors ("<name>.m", "<name>.v" per parameter with optimizer state) and
-- state.json (step counts of the optimizer, RNG, data and schedule position, eval history, best metric).
-- Atomicity: everything is written into checkpoints/.tmp-step-N, then that directory is renamed to
-- step-N (rename(2) is atomic within a file system); state.json is written last, so a directory without
-- it is never treated as a checkpoint. Only the newest `keep` step-N directories are kept.
local core = require "pft.core"
local cjson = require "cjson"

local C = {}

local function write_file(path, data)
  local f, err = io.open(path, "wb")
  if not f then error("checkpoint: cannot write " .. path .. ": " .. tostring(err), 0) end
  local ok, werr = f:write(data)
  local cok, cerr = f:close()
  if not ok or not cok then error("checkpoint: cannot write " .. path .. ": " .. tostring(werr or cerr), 0) end
end

function C.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- step-N directory names under run_dir/checkpoints, oldest first (by N).
function C.list(run_dir)
  local names = core.list_dir(run_dir .. "/checkpoints") or {}
  local steps = {}
  for _, n in ipairs(names) do
    local s = n:match("^step%-(%d+)$")
    if s and C.read_file(run_dir .. "/checkpoints/" .. n .. "/state.json") then steps[#steps + 1] = tonumber(s) end
  end
  table.sort(steps)
  local out = {}
  for i, s in ipairs(steps) do out[i] = run_dir .. "/checkpoints/step-" .. s end
  return out
end

function C.latest(run_dir)
  local l = C.list(run_dir)
  return l[#l]
end

local function remove_tree(path)
  if core.list_dir(path) then
    local ok, err = core.remove_dir(path)
    if not ok then error("checkpoint: " .. err, 0) end
  end
end

-- ck = { weights = {name = tensor}, optim = opt:state(), state = table (JSON) }; returns the path.
function C.save(run_dir, step, ck, keep)
  local dir = run_dir .. "/checkpoints"
  assert(core.mkdir(dir))
  local final, tmp = dir .. "/step-" .. step, dir .. "/.tmp-step-" .. step
  remove_tree(tmp)
  assert(core.mkdir(tmp))
  core.save_tensors(tmp .. "/weights.safetensors", ck.weights, { format = "pt" })
  local moments, steps = {}, {}
  for name, s in pairs(ck.optim) do
    moments[name .. ".m"] = s.m
    if s.v then moments[name .. ".v"] = s.v end
    steps[name] = s.step
  end
  core.save_tensors(tmp .. "/optimizer.safetensors", moments, { format = "pt" })
  local state = {}
  for k, v in pairs(ck.state) do state[k] = v end
  state.optimizer_steps = next(steps) and steps or nil
  write_file(tmp .. "/state.json", cjson.encode(state))
  remove_tree(final) -- a step saved twice (an interrupt right after a scheduled save)
  local ok, err = os.rename(tmp, final)
  if not ok then error("checkpoint: cannot rename " .. tmp .. " to " .. final .. ": " .. tostring(err), 0) end
  if keep and keep > 0 then
    local all = C.list(run_dir)
    for i = 1, #all - keep do remove_tree(all[i]) end
  end
  return final
end

-- Reads a checkpoint directory back: { weights, optim (opt:load_state's table), state }.
function C.load(path)
  local text = C.read_file(path .. "/state.json")
  if not text then error("checkpoint: " .. path .. " has no state.json (not a complete checkpoint)", 0) end
  local state = cjson.decode(text)
  local weights = core.read_safetensors(path .. "/weights.safetensors")
  local moments = core.read_safetensors(path .. "/optimizer.safetensors")
  local optim = {}
  for name, step in pairs(state.optimizer_steps or {}) do
    local m = moments[name .. ".m"]
    if not m then error(("checkpoint: %s: optimizer state of '%s' has no m"):format(path, name), 0) end
    optim[name] = { step = step, m = m, v = moments[name .. ".v"] }
  end
  return { weights = weights, optim = optim, state = state, path = path }
end

return C
