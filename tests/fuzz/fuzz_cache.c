/* fuzz_cache.c - the encoded-dataset cache reader, core.load_encoded (core/lua_data.c), on arbitrary
 * files, and what a loaded pft.Encoded then does (lengths, gather, save and load again).
 *
 * Input: byte 0 is a control byte, the rest the cache file. Bit 0: the harness writes the right FNV-1a
 * checksum of the body into the header (else a mutated body stops at the checksum test); bit 1: the
 * expectations passed to load_encoded are read from the file's own header (else fixed values, so that
 * the stale paths run); bits 2-4: pad_to for gather (0 = the longest row, else that many tokens more).
 * Format (lua_data.c): an 80-byte header "PFTENC\0\0", u32 version, u32 0, u64 vocab_hash, i32
 * max_length, i32 pad_id, u64 count, u64 ntok, u64 source_size, i64 source_mtime, u64 text_hash,
 * u64 checksum; then u64 offsets[count + 1], i32 ids[ntok], u8 type_ids[ntok].
 *
 * Checks: load_encoded returns a pft.Encoded or nil and a "missing:"/"stale:"/"corrupt:" reason; a loaded
 * one has count rows whose lengths add up to its token count and are at most max_length, gathers every
 * row into a batch, and saves to a file that loads back with the same lengths. */
#include "fuzz.h"

#define HEADER 80

static lua_State *L;

static const char harness[] =
    "local core, path, copy, expect, pad_extra = require 'pft.core', ...\n"
    "local function check(c, m, ...) if not c then fuzz_fail(m:format(...)) end end\n"
    "local enc, why = core.load_encoded(path, expect)\n"
    "if not enc then\n"
    "  check(type(why) == 'string' and (why:find('^missing: ') or why:find('^stale: ') or why:find('^corrupt: ')),\n"
    "        'load_encoded: nil without a reason (%s)', tostring(why))\n"
    "  return\n"
    "end\n"
    "local n, lengths, sum, longest = enc:count(), enc:lengths(), 0, 0\n"
    "check(n == expect.count and #lengths == n, '%d rows, %d lengths, count %d', n, #lengths, expect.count)\n"
    "for i = 1, n do\n"
    "  local ml = enc:max_length()\n"
    "  check(lengths[i] >= 0 and (ml < 0 or lengths[i] <= ml), 'row %d: %d tokens, max_length %d', i, lengths[i], ml)\n"
    "  sum, longest = sum + lengths[i], math.max(longest, lengths[i])\n"
    "end\n"
    "check(sum == enc:tokens(), 'rows hold %d tokens, the store %d', sum, enc:tokens())\n"
    "if n > 0 and n <= 4096 and longest <= 4096 then\n"
    "  local rows = {}\n"
    "  for i = 1, n do rows[i] = i end\n"
    "  local ok, b = pcall(enc.gather, enc, rows, pad_extra > 0 and longest + pad_extra or 0)\n"
    "  check(ok, 'gather of every row: %s', tostring(b))\n"
    "end\n"
    "local saved, err = enc:save(copy, expect)\n"
    "check(saved, 'save: %s', tostring(err))\n"
    "local enc2, why2 = core.load_encoded(copy, expect)\n"
    "check(enc2, 'a saved store does not load: %s', tostring(why2))\n"
    "local l2 = enc2:lengths()\n"
    "for i = 1, n do check(l2[i] == lengths[i], 'row %d: %d tokens after save, %d before', i, l2[i], lengths[i]) end\n"
    "os.remove(copy)\n";

static int chunk_ref;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    __lsan_disable(); /* the state and pft.core's context live across inputs (fuzz.h: fuzz_lua_harness) */
    L = fuzz_lua_new();
    lua_pushcfunction(L, fuzz_lua_fail);
    lua_setglobal(L, "fuzz_fail");
    fuzz_lua_require(L, "pft.core");
    if (luaL_loadbuffer(L, harness, sizeof harness - 1, "=fuzz_cache")) {
        fprintf(stderr, "fuzz_cache: %s\n", lua_tostring(L, -1));
        exit(2);
    }
    chunk_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    fuzz_lua_collect(L);
    fuzz_lua_main = L;
    atexit(fuzz_lua_close);
    __lsan_enable();
    return 0;
}

static uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static int32_t rd32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void push_hex(uint64_t h) {
    char s[17];
    snprintf(s, sizeof s, "%016llx", (unsigned long long)h);
    lua_pushstring(L, s);
}

/* A u64 of the header as a Lua number the reader converts back exactly (at most 2^53: the harness must
 * not pass a number that does not fit the C type it becomes) */
static double exact(uint64_t v) { return v <= (1ull << 53) ? (double)v : 0.0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t ctl = data[0];
    size_t n = size - 1;
    uint8_t *file = malloc(n ? n : 1);
    FUZZ_CHECK(file, "malloc");
    memcpy(file, data + 1, n);
    if ((ctl & 1) && n >= HEADER) { /* the body's checksum, as the reader computes it (the arrays are contiguous) */
        uint64_t h = 1469598103934665603ull;
        for (size_t i = HEADER; i < n; i++) h = (h ^ file[i]) * 1099511628211ull;
        memcpy(file + 72, &h, 8);
    }
    char path[PATH_MAX], copy[PATH_MAX];
    fuzz_path(path, sizeof path, "in.enc");
    fuzz_path(copy, sizeof copy, "copy.enc");
    fuzz_write(path, file, n);

    lua_rawgeti(L, LUA_REGISTRYINDEX, chunk_ref);
    lua_pushstring(L, path);
    lua_pushstring(L, copy);
    lua_createtable(L, 0, 6);
    int from_header = (ctl & 2) && n >= HEADER;
    push_hex(from_header ? rd64(file + 16) : 0x1234);
    lua_setfield(L, -2, "vocab_hash");
    push_hex(from_header ? rd64(file + 64) : 0x5678);
    lua_setfield(L, -2, "text_hash");
    lua_pushnumber(L, from_header ? rd32(file + 24) : 128);
    lua_setfield(L, -2, "max_length");
    lua_pushnumber(L, from_header ? exact(rd64(file + 32)) : 1);
    lua_setfield(L, -2, "count");
    lua_pushnumber(L, from_header ? exact(rd64(file + 48)) : 100);
    lua_setfield(L, -2, "source_size");
    int64_t mtime = from_header ? (int64_t)rd64(file + 56) : 0;
    lua_pushnumber(L, mtime >= -(1ll << 53) && mtime <= (1ll << 53) ? (double)mtime : 0.0);
    lua_setfield(L, -2, "source_mtime");
    lua_pushinteger(L, (ctl >> 2) & 7);
    fuzz_lua_pcall(L, 4, 0);
    fuzz_lua_collect(L);
    free(file);
    return 0;
}
