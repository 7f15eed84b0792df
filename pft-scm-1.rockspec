-- LuaRocks spec for pft. Build and install into a tree:   luarocks make --tree /tmp/pfttree pft-scm-1.rockspec
-- Run the Lua tests (after a build in this directory):      luarocks test pft-scm-1.rockspec
rockspec_format = "3.0"
package = "pft"
version = "scm-1"
source = {
   url = "git+file:///pft", -- not published yet: build from a checkout with `luarocks make`
}
description = {
   summary = "Progressive fine-tuning of BERT-family models: a C core with a LuaJIT front end",
   detailed = [[
pft trains freeze schedules (head only, top-k, gradual unfreezing, BitFit, full) over pretrained
BERT-family checkpoints. Tensors, kernels, autograd and optimizers are in C (OpenBLAS); recipes,
schedules and the trainer are Lua. Installs the `pft` Lua modules, the `pft.core` C module and the
`pft` host binary (LuaJIT embedded).]],
   license = "MIT",
}
-- LuaJIT reports itself as Lua 5.1; the C module uses only the Lua 5.1 API.
dependencies = {
   "lua >= 5.1, < 5.2",
   "lua-cjson", -- pft's Lua modules read and write JSON with it (Debian: lua-cjson)
}
external_dependencies = {
   OPENBLAS = { library = "openblas" },
   UTF8PROC = { header = "utf8proc.h", library = "utf8proc" },
   CJSON = { header = "cjson/cJSON.h", library = "cjson" },
}
build = {
   type = "make",
   build_target = "all",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LIBFLAG = "$(LIBFLAG)",
      LUA = "$(LUA)",
      LUA_INCDIR = "$(LUA_INCDIR)",
   },
   install_target = "install",
   install_variables = {
      PREFIX = "$(PREFIX)",
      LUADIR = "$(LUADIR)",
      LIBDIR = "$(LIBDIR)",
      BINDIR = "$(BINDIR)",
   },
}
test = {
   type = "command",
   command = "build/pft tests/lua/run.lua",
}
