/* fuzz_data.c - the dataset readers of lua/pft/data.lua (TSV, CSV, JSONL; token classification rows as
 * JSONL lists or space-separated tags) and the encoded store built from what they read (core/lua_data.c:
 * encode_dataset, gather, the on-disk cache). The reading is Lua; this driver embeds LuaJIT and hands each
 * input to tests/fuzz/fuzz_data.lua, which says what the input bytes mean and what it checks. */
#include "fuzz.h"

static lua_State *L;
static int fn;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    L = fuzz_lua_harness("fuzz_data", &fn);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_lua_run(L, fn, data, size);
    return 0;
}
