/* lua_host.c - what the trainer asks of the process it runs in: is a stream a terminal, a monotonic
 * clock, and Ctrl-C as a request to stop cleanly.
 *
 *     core.isatty(1); core.clock(); core.watch_interrupts(true); core.interrupted()
 *
 * Interrupts: the host binary (core/pft_main.c) owns the SIGINT flag and publishes its address in the
 * registry under INTERRUPT_KEY as a light userdata pointing at two sig_atomic_t: [0] the number of
 * SIGINTs received while watched, [1] whether a trainer watches (armed). In plain luajit (pft/core.so)
 * the key is absent: core.watch_interrupts returns false and core.interrupted() is always false. */
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "lua_pft.h"

#define INTERRUPT_KEY "pft.host.interrupt" /* set by core/pft_main.c */

static int l_isatty(lua_State *L) {
    int64_t fd = pftl_check_int64(L, 1);
    lua_pushboolean(L, fd >= 0 && fd <= 1024 && isatty((int)fd));
    return 1;
}

/* core.clock() -> seconds on a monotonic clock (progress, tokens/s, wall time) */
static int l_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

static volatile sig_atomic_t *interrupt_flags(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, INTERRUPT_KEY);
    volatile sig_atomic_t *f = lua_islightuserdata(L, -1) ? lua_touserdata(L, -1) : NULL;
    lua_pop(L, 1);
    return f;
}

/* core.interrupted() -> true once a SIGINT arrived while watched (always false outside the host) */
static int l_interrupted(lua_State *L) {
    volatile sig_atomic_t *f = interrupt_flags(L);
    lua_pushboolean(L, f && f[0] > 0);
    return 1;
}

/* core.watch_interrupts(on) -> whether the host supports it. While on, a first SIGINT only sets the flag
 * (a second exits at once, status 130); while off, SIGINT ends the process as usual. Resets the count. */
static int l_watch_interrupts(lua_State *L) {
    volatile sig_atomic_t *f = interrupt_flags(L);
    if (f) {
        f[0] = 0;
        f[1] = lua_toboolean(L, 1);
    }
    lua_pushboolean(L, f != NULL);
    return 1;
}

void pftl_register_host(lua_State *L, int module_idx) {
    static const luaL_Reg fns[] = {{"isatty", l_isatty},           {"clock", l_clock},
                                   {"interrupted", l_interrupted}, {"watch_interrupts", l_watch_interrupts},
                                   {NULL, NULL}};
    pftl_set_funcs(L, module_idx, fns);
}
