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
-- it is never treated as a checkpoint. Only the newest `keep` step-N directories are kept, and the best
-- one (the step of the best dev evaluation, when given).
-- Verification: state.json holds `files`, the size and an FNV-1a checksum of every other file of the
-- checkpoint (the whole file up to 64 MiB, its first and last 4 MiB beyond); C.verify checks them and
-- range-checks state.json, and C.latest_valid falls back to the newest checkpoint that passes.
local core = require "pft.core"
local cjson = require "cjson"
local fs = require "pft.fs"

local C = {}

local function write_file(path, data) fs.write_file(path, data, "wb", "checkpoint") end
C.read_file = fs.read_file -- (callers of pft.checkpoint; pft.fs is its home)

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

-- FNV-1a (32 bit) of a string; for a large one, of its first and last 4 MiB (with the size, which the
-- manifest holds anyway). Fast enough for the checkpoints of a small model; a truncation shows in the size.
local ffi = require "ffi"
local bit = require "bit"
local FULL, PART = 64 * 1024 * 1024, 4 * 1024 * 1024
local function fnv_bytes(h, p, a, b) -- multiply in 64 bits to stay exact, reduce to 32
  for i = a, b - 1 do
    h = bit.bxor(h, p[i])
    h = tonumber(ffi.cast("uint32_t", ffi.cast("uint64_t", ffi.cast("uint32_t", h)) * 16777619ULL))
  end
  return h
end
function C.checksum(s)
  local p = ffi.cast("const uint8_t *", s)
  local n = #s
  local h = 2166136261
  if n <= FULL then return ("%08x"):format(fnv_bytes(h, p, 0, n)) end
  h = fnv_bytes(h, p, 0, PART)
  return ("%08x"):format(fnv_bytes(h, p, n - PART, n))
end

local MANIFEST = { "weights.safetensors", "optimizer.safetensors" }

local function remove_tree(path)
  if core.list_dir(path) then
    local ok, err = core.remove_dir(path)
    if not ok then error("checkpoint: " .. err, 0) end
  end
end

-- ck = { weights = {name = tensor}, optim = opt:state(), state = table (JSON) }; keep: how many of the
-- newest to keep (nil: all); best_step: a step whose checkpoint is kept whatever its age. Returns the path.
function C.save(run_dir, step, ck, keep, best_step)
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
  state.files = {}
  for _, f in ipairs(MANIFEST) do
    local bytes = C.read_file(tmp .. "/" .. f)
    if not bytes then error("checkpoint: cannot read back " .. tmp .. "/" .. f, 0) end
    state.files[f] = { size = #bytes, fnv1a = C.checksum(bytes) }
  end
  write_file(tmp .. "/state.json", cjson.encode(state))
  remove_tree(final) -- a step saved twice (an interrupt right after a scheduled save)
  local ok, err = os.rename(tmp, final)
  if not ok then error("checkpoint: cannot rename " .. tmp .. " to " .. final .. ": " .. tostring(err), 0) end
  if keep and keep > 0 then
    local all = C.list(run_dir)
    local best = best_step and (dir .. "/step-" .. best_step)
    for i = 1, #all - keep do if all[i] ~= best then remove_tree(all[i]) end end
  end
  return final
end

-- Removes checkpoints/.tmp-step-N left by a crash or a full disk; returns the names removed.
function C.clean_tmp(run_dir)
  local removed = {}
  for _, n in ipairs(core.list_dir(run_dir .. "/checkpoints") or {}) do
    if n:match("^%.tmp%-step%-%d+$") then
      remove_tree(run_dir .. "/checkpoints/" .. n)
      removed[#removed + 1] = n
    end
  end
  return removed
end

local function is_int(v, min) return type(v) == "number" and v == math.floor(v) and v >= (min or 0) and v < 2 ^ 53 end

-- Range checks of a decoded state.json; returns nil or what is wrong.
local function check_state(st)
  if type(st) ~= "table" then return "not a JSON object" end
  local function bad(key, want) return ("%s must be %s (got %s)"):format(key, want, cjson.encode(st[key] == nil and cjson.null or st[key])) end
  if not is_int(st.step) then return bad("step", "an integer >= 0") end
  if not is_int(st.epoch) then return bad("epoch", "an integer >= 0") end
  if st.total_steps ~= nil and not is_int(st.total_steps, 1) then return bad("total_steps", "an integer >= 1") end
  if st.total_steps ~= nil and st.step > st.total_steps then return bad("step", "at most total_steps " .. st.total_steps) end
  if type(st.rng) ~= "table" or type(st.rng[1]) ~= "number" or type(st.rng[2]) ~= "number" then return bad("rng", "{seed, counter}") end
  if st.history ~= nil and type(st.history) ~= "table" then return bad("history", "an array") end
  if st.best_step ~= nil and not is_int(st.best_step) then return bad("best_step", "an integer >= 0") end
  if st.best_value ~= nil and tonumber(st.best_value) == nil then return bad("best_value", "a number") end
  if st.bad_evals ~= nil and not is_int(st.bad_evals) then return bad("bad_evals", "an integer >= 0") end
  if st.elapsed ~= nil and not (type(st.elapsed) == "number" and st.elapsed >= 0) then return bad("elapsed", "a number >= 0") end
  for _, k in ipairs({ "metrics_bytes", "trainable_log_bytes" }) do
    if st[k] ~= nil and not is_int(st[k]) then return bad(k, "an integer >= 0") end
  end
  if st.trainable ~= nil and type(st.trainable) ~= "table" then return bad("trainable", "an array of names") end
  if st.optimizer_steps ~= nil then
    if type(st.optimizer_steps) ~= "table" then return bad("optimizer_steps", "an object") end
    for n, v in pairs(st.optimizer_steps) do
      if not is_int(v) then return ("optimizer_steps.%s must be an integer >= 0 (got %s)"):format(n, tostring(v)) end
    end
  end
  if st.files ~= nil and type(st.files) ~= "table" then return bad("files", "an object") end
  return nil
end

-- C.read_state(path) -> the checked state of checkpoint directory path, or nil and what is wrong (the
-- message names the file).
function C.read_state(path)
  local file = path .. "/state.json"
  local text = C.read_file(file)
  if not text then return nil, file .. ": missing (not a complete checkpoint)" end
  local ok, state = pcall(cjson.decode, text)
  if not ok then return nil, ("%s: invalid JSON: %s"):format(file, tostring(state):gsub("^.-:%d+: ", "")) end
  local why = check_state(state)
  if why then return nil, file .. ": " .. why end
  return state
end

-- C.verify(path) -> state, or nil and a short reason ("weights.safetensors: size 123, expected 456").
function C.verify(path)
  local state, err = C.read_state(path)
  if not state then return nil, err end
  for f, want in pairs(state.files or {}) do
    local bytes = C.read_file(path .. "/" .. f)
    if not bytes then return nil, f .. ": missing" end
    if type(want) ~= "table" or #bytes ~= want.size then
      return nil, ("%s: size %d, expected %s"):format(f, #bytes, tostring(type(want) == "table" and want.size))
    end
    if want.fnv1a and C.checksum(bytes) ~= want.fnv1a then return nil, f .. ": checksum mismatch" end
  end
  return state
end

-- C.latest_valid(run_dir) -> the newest checkpoint that verifies (or nil), and the list of newer
-- damaged ones as {path, name, reason}.
function C.latest_valid(run_dir)
  local l = C.list(run_dir)
  local damaged = {}
  for i = #l, 1, -1 do
    local ok, why = C.verify(l[i])
    if ok then return l[i], damaged end
    damaged[#damaged + 1] = { path = l[i], name = l[i]:match("[^/]+$"), reason = why }
  end
  return nil, damaged
end

-- Reads a checkpoint directory back: { weights, optim (opt:load_state's table), state }.
function C.load(path)
  local state, err = C.read_state(path)
  if not state then error("checkpoint: " .. err, 0) end
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
