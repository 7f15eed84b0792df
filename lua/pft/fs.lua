-- pft.fs: files and paths, for every pft module (one home for reading, atomic writing and the root).
-- Directory operations that Lua lacks (mkdir, listing, removal) are the C binding's: pft.core.mkdir,
-- mkdir_excl, list_dir, remove_dir (core/lua_fs.c).
--
--   local fs = require "pft.fs"
--   local text, err = fs.read_file("x.json")         -- nil, message when it cannot be read
--   fs.write_atomic("run/status", "done\n")          -- x.tmp.<pid> then rename(2): never half a file
--   local root, installed = fs.root()               -- the source tree, or the install prefix
local fs = {}

function fs.dirname(p) return p:match("^(.*)/[^/]*$") or "." end
function fs.basename(p) return p:match("([^/]*)$") end

-- The whole file (bytes as they are), or nil and the reason.
function fs.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

function fs.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

function fs.file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

-- Writes (mode "wb", or "ab" to append) and raises "<who>: cannot write <path>: <why>" on failure,
-- including a failed close (a full disk shows there).
function fs.write_file(path, data, mode, who)
  local f, err = io.open(path, mode or "wb")
  if not f then error(("%s: cannot write %s: %s"):format(who or "pft", path, tostring(err)), 0) end
  local ok, werr = f:write(data)
  local cok, cerr = f:close()
  if not ok or not cok then error(("%s: cannot write %s: %s"):format(who or "pft", path, tostring(werr or cerr)), 0) end
end

-- path.tmp.<pid>, then rename(2) over path: a reader sees the old file or the new one, never a part, and
-- two processes writing one path at once (sweep shards) each rename their own temporary.
function fs.write_atomic(path, data, who)
  local tmp = ("%s.tmp.%d"):format(path, require("pft.core").pid())
  fs.write_file(tmp, data, "wb", who)
  local ok, err = os.rename(tmp, path)
  if not ok then
    os.remove(tmp)
    error(("%s: cannot rename %s: %s"):format(who or "pft", tmp, tostring(err)), 0)
  end
end

local cwd_cache
function fs.cwd()
  if not cwd_cache then
    local p = io.popen("pwd")
    cwd_cache = p and p:read("*l") or os.getenv("PWD") or "."
    if p then p:close() end
  end
  return cwd_cache
end

-- p made absolute (against the current directory), without "." and "x/.." segments.
function fs.abspath(p)
  if p:sub(1, 1) ~= "/" then p = fs.cwd() .. "/" .. p end
  local out = {}
  for seg in p:gmatch("[^/]+") do
    if seg == ".." then
      if #out > 0 then out[#out] = nil end
    elseif seg ~= "." then
      out[#out + 1] = seg
    end
  end
  return "/" .. table.concat(out, "/")
end

-- p as a user should read it: relative to the current directory when it lies below it.
function fs.display_path(p)
  local c = fs.cwd() .. "/"
  if p:sub(1, #c) == c then return p:sub(#c + 1) end
  return p
end

-- The source tree (this file is <root>/lua/pft/fs.lua) or the install prefix (<prefix>/share/lua/5.1/
-- pft/fs.lua); the second value says which.
function fs.root()
  local src = debug.getinfo(1, "S").source
  local file = src:sub(1, 1) == "@" and fs.abspath(src:sub(2)) or fs.abspath("lua/pft/fs.lua")
  local dir = fs.dirname(fs.dirname(file)) -- .../lua or .../share/lua/5.1
  if dir:match("/share/lua/5%.1$") then return (dir:gsub("/share/lua/5%.1$", "")), true end
  return fs.dirname(dir), false
end

-- Where pft keeps what it ships beside the code: models/ (`make model`), recipes/, the build tree.
function fs.models_dir()
  local root, installed = fs.root()
  return installed and root .. "/share/pft/models" or root .. "/models"
end

-- ${XDG_DATA_HOME:-$HOME/.local/share}/pft: what an installed pft keeps per user (models); nil without HOME.
function fs.user_data_dir()
  local xdg, home = os.getenv("XDG_DATA_HOME"), os.getenv("HOME")
  if xdg and xdg ~= "" then return xdg .. "/pft" end
  if home and home ~= "" then return home .. "/.local/share/pft" end
  return nil
end

-- The build tree when pft runs from its source tree (a Makefile at the root), else nil.
function fs.build_dir()
  local root, installed = fs.root()
  if not installed and fs.exists(root .. "/Makefile") then return root .. "/build" end
  return nil
end

return fs
