/* fuzz.h - what the libFuzzer harnesses in tests/fuzz share: the repository root, a per-process scratch
 * directory (the readers under test take paths), and an embedded LuaJIT with lua/pft on its path and
 * pft.core preloaded, for the readers that live in Lua. Static functions: each harness is one translation
 * unit, built by `make fuzz-build` (docs/fuzzing.md).
 *
 * The oracle is the sanitizers (ASan + UBSan, aborting on the first report), libFuzzer's -timeout and
 * -rss_limit_mb, and the abort()s a harness adds for properties it checks (FUZZ_CHECK). A failure the
 * code reports (a NULL with an error in the context, a Lua error) is the expected answer to bad input.
 * Lua errors that the Lua runtime raises inside lua/pft ("attempt to index a nil value", "bad argument",
 * ...) are not what a reader should answer either; they are printed, and with PFT_FUZZ_STRICT=1 abort,
 * so that a fuzzing campaign can find them too. */
#ifndef PFT_FUZZ_H
#define PFT_FUZZ_H

#include <dirent.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sanitizer/lsan_interface.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_pft_core(lua_State *L);

#define FUZZ_FN static __attribute__((unused))

/* A violated property: abort() with the message, which libFuzzer reports as a crash with the input saved. */
#define FUZZ_CHECK(cond, ...)                                                                                \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);                  \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

/* The repository root: two levels above the binary (build-fuzz/fuzz/fuzz_x), else PFT_SOURCE_ROOT (the
 * Makefile's directory at build time). Checked by finding lua/pft/data.lua there. */
FUZZ_FN const char *fuzz_root(void) {
    static char root[PATH_MAX];
    if (root[0]) return root;
    char exe[PATH_MAX], probe[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        for (int up = 0; up < 3; up++) {
            char *slash = strrchr(exe, '/');
            if (slash) *slash = '\0';
        }
        snprintf(probe, sizeof probe, "%s/lua/pft/data.lua", exe);
        if (access(probe, R_OK) == 0) {
            snprintf(root, sizeof root, "%s", exe);
            return root;
        }
    }
#ifdef PFT_SOURCE_ROOT
    snprintf(root, sizeof root, "%s", PFT_SOURCE_ROOT);
#else
    snprintf(root, sizeof root, ".");
#endif
    return root;
}

static char fuzz_tmp[PATH_MAX];

FUZZ_FN void fuzz_rmtree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[PATH_MAX + 256];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) fuzz_rmtree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

FUZZ_FN void fuzz_tmp_cleanup(void) {
    if (fuzz_tmp[0]) fuzz_rmtree(fuzz_tmp);
}

/* This process's scratch directory, $TMPDIR/pft-fuzz-XXXXXX (made on first use, removed at a normal
 * exit; tests/fuzz/run.sh points TMPDIR at a directory it removes, for the exits that skip atexit). */
FUZZ_FN const char *fuzz_tmpdir(void) {
    if (fuzz_tmp[0]) return fuzz_tmp;
    const char *base = getenv("TMPDIR");
    snprintf(fuzz_tmp, sizeof fuzz_tmp, "%s/pft-fuzz-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(fuzz_tmp)) {
        perror("fuzz: mkdtemp");
        exit(2);
    }
    atexit(fuzz_tmp_cleanup);
    return fuzz_tmp;
}

/* dir/name in the scratch directory (a static buffer per call site is enough: callers copy or use it). */
FUZZ_FN void fuzz_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", fuzz_tmpdir(), name); }

/* Writes size bytes to path; a failure here is the harness's, not a finding: exit, not abort. */
FUZZ_FN void fuzz_write(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
        perror(path);
        exit(2);
    }
}

/* --- Lua -------------------------------------------------------------------------------------------- */

/* A Lua state with the standard libraries, lua/pft of the repository on package.path (absolute), LuaJIT's
 * default cpath (lua-cjson for the JSONL reader) and pft.core preloaded from the sanitized binding. */
FUZZ_FN lua_State *fuzz_lua_new(void) {
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "fuzz: cannot create a Lua state\n");
        exit(2);
    }
    luaL_openlibs(L);
    const char *root = fuzz_root();
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua", root, root);
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_pft_core);
    lua_setfield(L, -2, "pft.core");
    lua_pop(L, 2);
    return L;
}

/* require(name) -> registry reference to the module table; a failure is the harness's: exit. */
FUZZ_FN int fuzz_lua_require(lua_State *L, const char *name) {
    lua_getglobal(L, "require");
    lua_pushstring(L, name);
    if (lua_pcall(L, 1, 1, 0)) {
        fprintf(stderr, "fuzz: require '%s' failed: %s\n", name, lua_tostring(L, -1));
        exit(2);
    }
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Runs a chunk of harness Lua (setup code); a failure is the harness's: exit. */
FUZZ_FN void fuzz_lua_do(lua_State *L, const char *chunk) {
    if (luaL_dostring(L, chunk)) {
        fprintf(stderr, "fuzz: setup chunk failed: %s\n", lua_tostring(L, -1));
        exit(2);
    }
}

/* Messages the Lua runtime itself raises: inside lua/pft they mean the module failed on an input it
 * should have answered with its own message. Such an error is "<file>:<line>: <runtime message>" with
 * <file> ending in lua/pft/<name>.lua (LuaJIT may shorten the front to "..."): the position must come first,
 * so that input text quoted in a module's own message cannot look like one. */
FUZZ_FN int fuzz_lua_internal_error(const char *msg) {
    static const char *runtime[] = {"attempt to ", "bad argument #", "table index is ", "stack overflow",
                                    "invalid value (at index", "invalid order function", "string length overflow",
                                    "wrong number of arguments", "no integer representation", NULL};
    if (!msg) return 0;
    const char *colon = strchr(msg, ':'), *at = strstr(msg, "lua/pft/");
    if (!colon || !at || at > colon) return 0;
    /* before lua/pft/: nothing, or a path ("/..." or LuaJIT's "...") without blanks or quotes */
    if (at > msg && msg[0] != '/' && strncmp(msg, "...", 3) != 0) return 0;
    for (const char *q = msg; q < at; q++)
        if (*q == ' ' || *q == '\'' || *q == '"' || *q == '=' || *q == '\t') return 0;
    const char *p = at + 8, *name = p;
    while ((*p >= 'a' && *p <= 'z') || *p == '_') p++;
    if (p == name || strncmp(p, ".lua:", 5) != 0 || p + 4 != colon) return 0;
    p += 5;
    if (!(*p >= '0' && *p <= '9')) return 0;
    while (*p >= '0' && *p <= '9') p++;
    if (strncmp(p, ": ", 2) != 0) return 0;
    p += 2;
    for (int i = 0; runtime[i]; i++)
        if (strncmp(p, runtime[i], strlen(runtime[i])) == 0) return 1;
    return 0;
}

/* A Lua error an input caused (msg NULL: not a string): printed with PFT_FUZZ_VERBOSE=1; an internal
 * one is printed (the first 20) and, with PFT_FUZZ_STRICT=1, aborts. */
FUZZ_FN void fuzz_lua_note(const char *msg) {
    const char *verbose = getenv("PFT_FUZZ_VERBOSE");
    if (verbose && strcmp(verbose, "1") == 0) fprintf(stderr, "fuzz: Lua error: %s\n", msg ? msg : "(not a string)");
    if (fuzz_lua_internal_error(msg)) {
        static int printed;
        if (printed++ < 20) fprintf(stderr, "fuzz: internal Lua error: %s\n", msg);
        const char *strict = getenv("PFT_FUZZ_STRICT");
        FUZZ_CHECK(!(strict && strcmp(strict, "1") == 0), "internal Lua error (PFT_FUZZ_STRICT=1): %s", msg);
    }
}

/* fuzz_note(err) in the harness's Lua: the same for an error the Lua side caught itself */
FUZZ_FN int fuzz_lua_note_fn(lua_State *L) {
    fuzz_lua_note(lua_tostring(L, 1));
    return 0;
}

/* lua_pcall of the function below nargs arguments, results dropped; a Lua error is the normal answer to a
 * bad input (PFT_FUZZ_VERBOSE=1 prints each), an internal one (above) is printed (the first 20) and,
 * with PFT_FUZZ_STRICT=1, aborts. Returns 1 when the call succeeded. Collects garbage afterwards, so that
 * everything an input allocated through pft.core is freed before the next input (libFuzzer's leak check
 * counts mallocs and frees per input). */
FUZZ_FN int fuzz_lua_pcall(lua_State *L, int nargs, int nresults) {
    int ok = lua_pcall(L, nargs, nresults, 0) == 0;
    if (!ok) {
        fuzz_lua_note(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return ok;
}

FUZZ_FN void fuzz_lua_collect(lua_State *L) {
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    lua_gc(L, LUA_GCCOLLECT, 0); /* finalizers of the first pass free their boxes' C memory */
}

/* fuzz_fail(msg) in the harness's Lua: a property the Lua side checks failed; abort like FUZZ_CHECK. */
FUZZ_FN int fuzz_lua_fail(lua_State *L) {
    fprintf(stderr, "FUZZ_CHECK failed in Lua: %s\n", luaL_optstring(L, 1, "(no message)"));
    abort();
    return 0;
}

/* Lua line coverage for libFuzzer. libFuzzer sees the coverage of instrumented C only; to it the Lua
 * interpreter is one opaque library, so two inputs that take different paths through lua/pft look the
 * same and it would throw away every seed but the first. A line hook (a C function set with
 * debug.sethook, so that recipe.lua's own hooks save and restore it) counts (chunk, line) pairs into an
 * extra 8-bit counter array registered with libFuzzer as if it were one more instrumented module. */
#define FUZZ_LUA_COV (1 << 16)
static uint8_t fuzz_lua_cov[FUZZ_LUA_COV];
static uintptr_t fuzz_lua_pcs[2 * FUZZ_LUA_COV]; /* (pc, flags) pairs: a pretend PC per counter */
void __sanitizer_cov_8bit_counters_init(uint8_t *start, uint8_t *stop);
void __sanitizer_cov_pcs_init(const uintptr_t *pcs_beg, const uintptr_t *pcs_end);

__attribute__((constructor)) static void fuzz_lua_cov_register(void) {
    for (uintptr_t i = 0; i < FUZZ_LUA_COV; i++) fuzz_lua_pcs[2 * i] = 0x100000 + i;
    __sanitizer_cov_8bit_counters_init(fuzz_lua_cov, fuzz_lua_cov + FUZZ_LUA_COV);
    __sanitizer_cov_pcs_init(fuzz_lua_pcs, fuzz_lua_pcs + 2 * FUZZ_LUA_COV);
}

/* the hook: called as hook("line", line); level 1 is the function running that line */
FUZZ_FN int fuzz_lua_cov_hook(lua_State *L) {
    lua_Debug ar;
    if (!lua_getstack(L, 1, &ar) || !lua_getinfo(L, "S", &ar)) return 0;
    uintptr_t h = (uintptr_t)ar.source * 0x9e3779b97f4a7c15ull ^ (uintptr_t)lua_tointeger(L, 2) * 0xff51afd7ed558ccdull;
    uint8_t *c = &fuzz_lua_cov[(h >> 40) & (FUZZ_LUA_COV - 1)];
    if (*c < 255) ++*c;
    return 0;
}

static lua_State *fuzz_lua_main;

/* At exit, before LeakSanitizer's check: close the harness's state so that every finalizer frees its C
 * memory (LSan does not scan LuaJIT's heap, so memory that only Lua objects point to looks leaked). */
FUZZ_FN void fuzz_lua_close(void) {
    if (fuzz_lua_main) lua_close(fuzz_lua_main);
    fuzz_lua_main = NULL;
}

/* A harness written in Lua: tests/fuzz/<name>.lua, run once with (root, tmpdir) as its arguments,
 * returns function(input, tmpdir, root), called once per input under pcall. Whatever the harness keeps
 * across inputs (a tokenizer, lua-cjson's buffers) it must load in that first run, not during an input:
 * the setup runs with LeakSanitizer off (LSan does not scan LuaJIT's heap, so C memory that only Lua
 * objects point to would look leaked whenever libFuzzer checks an input for leaks), inputs with it on.
 * Returns the state; *fn gets the function's registry reference. The Lua side has the globals
 * fuzz_fail(msg) for the properties it checks and fuzz_pcall(f, ...), a pcall whose errors go through the
 * same internal-error check as the errors that reach C. */
FUZZ_FN lua_State *fuzz_lua_harness(const char *name, int *fn) {
    __lsan_disable();
    lua_State *L = fuzz_lua_new();
    lua_pushcfunction(L, fuzz_lua_fail);
    lua_setglobal(L, "fuzz_fail");
    lua_pushcfunction(L, fuzz_lua_note_fn);
    lua_setglobal(L, "fuzz_note");
    /* fuzz_pcall: pcall that notes the error; no module from the current directory (as the pft host) */
    fuzz_lua_do(L, "function fuzz_pcall(f, ...)\n"
                   "  local r = { pcall(f, ...) }\n"
                   "  if not r[1] then fuzz_note(r[2]) end\n"
                   "  return unpack(r, 1, table.maxn(r))\n"
                   "end\n"
                   "package.cpath = package.cpath:gsub('%./%?%.so;?', '')");
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/tests/fuzz/%s.lua", fuzz_root(), name);
    int st = luaL_loadfile(L, path);
    if (!st) {
        lua_pushstring(L, fuzz_root());
        lua_pushstring(L, fuzz_tmpdir());
        st = lua_pcall(L, 2, 1, 0);
    }
    if (st || !lua_isfunction(L, -1)) {
        fprintf(stderr, "fuzz: %s: %s\n", path, lua_isstring(L, -1) ? lua_tostring(L, -1) : "does not return a function");
        exit(2);
    }
    *fn = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "sethook");
    lua_pushcfunction(L, fuzz_lua_cov_hook);
    lua_pushliteral(L, "l");
    lua_call(L, 2, 0); /* from here on, lines count as coverage */
    fuzz_lua_collect(L);
    fuzz_lua_main = L;
    atexit(fuzz_lua_close);
    __lsan_enable();
    return L;
}

/* One input through a Lua harness: fn(input, tmpdir, root) under pcall, then a full collection. */
FUZZ_FN void fuzz_lua_run(lua_State *L, int fn, const uint8_t *data, size_t size) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn);
    lua_pushlstring(L, (const char *)data, size);
    lua_pushstring(L, fuzz_tmpdir());
    lua_pushstring(L, fuzz_root());
    fuzz_lua_pcall(L, 3, 0);
    fuzz_lua_collect(L);
}

#endif
