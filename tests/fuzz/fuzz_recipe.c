/* fuzz_recipe.c - the recipe loader (lua/pft/recipe.lua: the sandbox, the instruction budget and memory
 * ceiling, base chains, schema validation, R.dump) and the command-line override parser
 * (R.parse_override, then applied by R.load). The loader is Lua; this driver embeds LuaJIT and hands each
 * input to tests/fuzz/fuzz_recipe.lua, which says what the input bytes mean and what it checks. */
#include "fuzz.h"

static lua_State *L;
static int fn;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    L = fuzz_lua_harness("fuzz_recipe", &fn);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_lua_run(L, fn, data, size);
    return 0;
}
