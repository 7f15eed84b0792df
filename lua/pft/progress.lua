-- pft.progress: what a user sees while a run trains. On a terminal, one bar redrawn with \r; otherwise
-- a plain line every `log_every` steps (logs and CI keep them readable).
--
--   local P = require "pft.progress"
--   local p = P.new({ total = 300, log_every = 50, out = io.stdout })
--   p:update({ step = 10, epoch = 0, loss = 0.69, lr = 2e-5, tokens = 4096 })
--   p:line("eval step 100: accuracy 0.81")   -- clears the bar first
--   p:finish()
local core = require "pft.core"

local P = {}
P.__index = P

function P.new(opts)
  local out = opts.out or io.stdout
  local tty = opts.tty
  if tty == nil then tty = out == io.stdout and core.isatty(1) or out == io.stderr and core.isatty(2) or false end
  return setmetatable({ out = out, tty = tty, total = opts.total, log_every = opts.log_every or 50,
    quiet = opts.quiet, tokens = 0, t0 = nil, drawn = false }, P)
end

local clock = core.clock -- wall time: os.clock is CPU time, which threads inflate

local function fmt_time(s)
  s = math.max(0, math.floor(s + 0.5))
  if s >= 3600 then return ("%d:%02d:%02d"):format(s / 3600, (s % 3600) / 60, s % 60) end
  return ("%d:%02d"):format(s / 60, s % 60)
end
P.fmt_time = fmt_time

-- info = {step (completed optimizer steps), epoch (0-based), loss, lr, tokens (this step)}
function P:update(info)
  if self.quiet then return end
  local now = clock()
  if not self.t0 then self.t0, self.step0 = now, info.step - 1 end
  self.tokens = self.tokens + (info.tokens or 0)
  local dt = now - self.t0
  local done = info.step - self.step0
  local tps = dt > 0 and self.tokens / dt or 0
  local eta = done > 0 and dt / done * (self.total - info.step) or 0
  if self.tty then
    local width = 24
    local fill = math.floor(width * info.step / math.max(1, self.total))
    local bar = ("="):rep(fill) .. (fill < width and ">" or "") .. (" "):rep(math.max(0, width - fill - 1))
    self.out:write(("\r\27[Kepoch %d [%s] %d/%d loss %.4f lr %.2e %.0f tok/s ETA %s"):format(info.epoch + 1, bar,
      info.step, self.total, info.loss, info.lr, tps, fmt_time(eta)))
    self.out:flush()
    self.drawn = true
  elseif info.step % self.log_every == 0 or info.step == self.total then
    self.out:write(("step %d/%d epoch %d loss %.4f lr %.2e %.0f tok/s ETA %s\n"):format(info.step, self.total,
      info.epoch + 1, info.loss, info.lr, tps, fmt_time(eta)))
    self.out:flush()
  end
end

-- A line of its own (evaluation results, messages), below the bar.
function P:line(s)
  if self.quiet then return end
  if self.drawn then self.out:write("\r\27[K") end
  self.out:write(s, "\n")
  self.out:flush()
end

function P:finish()
  if self.drawn and not self.quiet then self.out:write("\n") end
  self.drawn = false
end

return P
