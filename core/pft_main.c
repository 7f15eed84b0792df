/* pft_main.c - the host binary: LuaJIT with `pft.core` linked in and lua/pft found next to the binary.
 *
 *     pft script.lua [args]     run a script (a name with a '/' or ending .lua); `arg` as luajit sets it,
 *                               the global `pft` = require "pft"
 *     pft -e 'print(pft.version)'
 *     pft train recipe.lua      anything else is a subcommand of lua/pft/cli.lua
 *
 * Module search: <exe dir>/../lua (the source tree: the binary is build/pft) and
 * <exe dir>/../share/lua/5.1, <exe dir>/../lib/lua/5.1 (an installed tree), then LuaJIT's defaults.
 * Exit codes (also printed by --help): 0 ok, 1 runtime error, 2 usage error (unknown option or
 * command, a script that cannot be opened), 3 syntax error in a script, 130 interrupted (Ctrl-C).
 *
 * SIGINT: the one piece of process state pft keeps. A signal handler can only touch a volatile
 * sig_atomic_t with static storage, so the flags live here, in the host, and their address is handed to
 * pft.core through the registry (lua_host.c: core.interrupted, core.watch_interrupts). Unwatched (no
 * trainer running), Ctrl-C ends the process as usual; watched, the first sets the flag that the trainer
 * polls once a step (it saves a checkpoint and exits 130), a second exits at once with 130. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "hugepages.h"

#ifndef PFT_VERSION
#define PFT_VERSION "0.0.0"
#endif

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2, EXIT_SYNTAX = 3 };

int luaopen_pft_core(lua_State *L);

/* [0] SIGINTs received while watched, [1] watched (set through core.watch_interrupts) */
static volatile sig_atomic_t interrupt_flags[2];

static void on_sigint(int sig) {
    if (!interrupt_flags[1]) { /* nobody watches: the default action, as if no handler were installed */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    if (interrupt_flags[0] > 0) _exit(130); /* the second Ctrl-C: stop now */
    interrupt_flags[0] = 1;
}

static void install_sigint(lua_State *L) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    lua_pushlightuserdata(L, (void *)interrupt_flags);
    lua_setfield(L, LUA_REGISTRYINDEX, "pft.host.interrupt"); /* read by core/lua_host.c */
}

static const char usage_text[] =
    "usage: pft [options] [script.lua | path/to/script [args...]]\n"
    "       pft <command> [args...]\n"
    "\n"
    "Runs a Lua script with the pft library loaded as the global `pft`, or a pft command. A script is\n"
    "named by a path with a '/' or a name ending in .lua (./train runs the file train; train is the command).\n"
    "\n"
    "options:\n"
    "  -e CHUNK       run the Lua string CHUNK (before the script, if any)\n"
    "  -h, --help     print this help and exit\n"
    "  -v, --version  print the pft and LuaJIT versions and exit\n"
    "  --             stop handling options\n"
    "\n"
    "environment:\n"
    "  PFT_TRACEBACK=1  print a Lua traceback with runtime errors\n"
    "\n"
    "exit status:\n"
    "  0  success\n"
    "  1  runtime error (printed as file:line: message)\n"
    "  2  usage error: unknown option or command, script cannot be opened\n"
    "  3  syntax error in a script or chunk\n"
    "  130  interrupted by Ctrl-C (pft train saves a checkpoint first)\n";

/* Removes the "./..." templates from package[field] (package on the stack top): LuaJIT's defaults put
 * the current directory first, so a cjson.so lying in the directory pft runs in would be loaded. */
static void drop_cwd_entries(lua_State *L, const char *field) {
    lua_getfield(L, -1, field);
    const char *p = lua_tostring(L, -1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int first = 1;
    while (p && *p) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 0 && !(n >= 2 && p[0] == '.' && p[1] == '/')) {
            if (!first) luaL_addchar(&b, ';');
            luaL_addlstring(&b, p, n);
            first = 0;
        }
        p = end ? end + 1 : p + n;
    }
    luaL_pushresult(&b);
    lua_setfield(L, -3, field);
    lua_pop(L, 1);
}

/* Sets package.path / package.cpath so that require finds lua/pft in the build or the install tree. */
static void set_paths(lua_State *L) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return; /* no /proc: LuaJIT's default paths only */
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L,
                    "%s/../lua/?.lua;%s/../lua/?/init.lua;"
                    "%s/../share/lua/5.1/?.lua;%s/../share/lua/5.1/?/init.lua;%s",
                    exe, exe, exe, exe, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_getfield(L, -1, "cpath");
    lua_pushfstring(L, "%s/../lib/lua/5.1/?.so;%s", exe, lua_tostring(L, -1));
    lua_setfield(L, -3, "cpath");
    lua_pop(L, 1);
    drop_cwd_entries(L, "path");
    drop_cwd_entries(L, "cpath");
    /* pft.core is linked in: package.preload["pft.core"] */
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_pft_core);
    lua_setfield(L, -2, "pft.core");
    lua_pop(L, 2);
}

/* The message handler: keeps Lua's "file:line: message"; adds a traceback when PFT_TRACEBACK=1. */
static int on_error(lua_State *L) {
    if (!lua_isstring(L, 1)) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1)) {
            lua_replace(L, 1);
        } else {
            lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
            lua_replace(L, 1);
        }
    }
    const char *tb = getenv("PFT_TRACEBACK");
    if (tb && strcmp(tb, "1") == 0) {
        lua_getglobal(L, "debug");
        lua_getfield(L, -1, "traceback");
        lua_pushvalue(L, 1);
        lua_pushinteger(L, 2);
        lua_call(L, 2, 1);
    }
    return 1;
}

/* Calls the function under nargs arguments on the stack; prints an error; returns an exit code. */
static int run_protected(lua_State *L, int nargs) {
    int fn = lua_gettop(L) - nargs;
    lua_pushcfunction(L, on_error);
    lua_insert(L, fn);
    int rc = lua_pcall(L, nargs, 0, fn);
    lua_remove(L, fn);
    if (rc == 0) return EXIT_OK;
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return EXIT_RUNTIME;
}

/* Loads the chunk's status into an exit code and prints the reason for a failure. */
static int load_status(lua_State *L, int status, const char *name) {
    if (status == 0) return EXIT_OK;
    if (status == LUA_ERRFILE) {
        fprintf(stderr, "pft: cannot open %s\n", name);
        lua_pop(L, 1);
        return EXIT_USAGE;
    }
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return status == LUA_ERRSYNTAX ? EXIT_SYNTAX : EXIT_RUNTIME;
}

/* arg = {[-k..-1] = interpreter and options, [0] = script, [1..] = its arguments}, as luajit does */
static void set_arg(lua_State *L, char **argv, int argc, int script) {
    lua_createtable(L, argc - script, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

/* pft = require "pft", as a global for scripts */
static int load_pft(lua_State *L) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "pft");
    int rc = run_protected(L, 1); /* result dropped; require caches it */
    if (rc) return rc;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_getfield(L, -1, "pft");
    lua_setglobal(L, "pft");
    lua_pop(L, 2);
    return EXIT_OK;
}

/* pft <command> args...: require("pft.cli").main(args) returns the exit code */
static int run_command(lua_State *L, char **argv, int argc, int first) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "pft.cli");
    lua_pushcfunction(L, on_error);
    lua_insert(L, -3);
    if (lua_pcall(L, 1, 1, -3)) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        return EXIT_RUNTIME;
    }
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc - first, 0);
    for (int i = first; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - first + 1);
    }
    if (lua_pcall(L, 1, 1, -4)) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        return EXIT_RUNTIME;
    }
    int code = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : EXIT_OK;
    lua_pop(L, 3);
    return code;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* A script is named by a path with a '/' or a name ending in .lua; anything else is a command. */
static int is_script_name(const char *s) { return strchr(s, '/') != NULL || ends_with(s, ".lua"); }

static int pft_main(lua_State *L, int argc, char **argv) {
    int i = 1, nchunks = 0;
    const char *chunks[64];
    for (; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--")) {
            i++;
            break;
        } else if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        } else if (!strcmp(o, "-v") || !strcmp(o, "--version")) {
            printf("pft %s (%s)\n", PFT_VERSION, LUAJIT_VERSION);
            return EXIT_OK;
        } else if (!strcmp(o, "-e")) {
            if (i + 1 >= argc || nchunks == 64) {
                fprintf(stderr, "pft: -e needs a chunk of Lua\n");
                return EXIT_USAGE;
            }
            chunks[nchunks++] = argv[++i];
        } else {
            fprintf(stderr, "pft: unknown option '%s' (see pft --help)\n%s", o, usage_text);
            return EXIT_USAGE;
        }
    }
    if (i >= argc && nchunks == 0) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    set_paths(L);
    int rc;
    /* A command unless it is named like a script (a '/' or ".lua"): what files lie in the current
     * directory must not decide, or a file called `train` there would run instead of the command. */
    if (i < argc && nchunks == 0 && !is_script_name(argv[i])) return run_command(L, argv, argc, i);

    set_arg(L, argv, argc, i < argc ? i : argc - 1);
    if ((rc = load_pft(L))) return rc;
    for (int k = 0; k < nchunks; k++) {
        if ((rc = load_status(L, luaL_loadbuffer(L, chunks[k], strlen(chunks[k]), "=(command line)"), "-e chunk"))) return rc;
        if ((rc = run_protected(L, 0))) return rc;
    }
    if (i >= argc) return EXIT_OK;
    if ((rc = load_status(L, luaL_loadfile(L, argv[i]), argv[i]))) return rc;
    int nargs = argc - i - 1;
    luaL_checkstack(L, nargs + 2, "too many arguments");
    for (int k = i + 1; k < argc; k++) lua_pushstring(L, argv[k]); /* also as ... */
    return run_protected(L, nargs);
}

struct main_args {
    int argc;
    char **argv;
    int rc;
};

/* Runs under lua_cpcall, so that even a memory error in the setup is reported instead of panicking. */
static int pmain(lua_State *L) {
    struct main_args *a = lua_touserdata(L, 1);
    luaL_openlibs(L);
    install_sigint(L);
    a->rc = pft_main(L, a->argc, a->argv);
    return 0;
}

int main(int argc, char **argv) {
    pft_hugepages_reexec(argv); /* first: the heap on huge pages (hugepages.h) */
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "pft: cannot create a Lua state (out of memory)\n");
        return EXIT_RUNTIME;
    }
    struct main_args a = {argc, argv, EXIT_OK};
    if (lua_cpcall(L, pmain, &a)) {
        fprintf(stderr, "pft: %s\n", lua_tostring(L, -1));
        a.rc = EXIT_RUNTIME;
    }
    lua_close(L);
    return a.rc;
}
