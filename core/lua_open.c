/* lua_open.c - `require "pft.core"`: the module table, filled by each binding file (map in lua_pft.h). */
#include "lua_pft.h"

int luaopen_pft_core(lua_State *L) {
    pftl_state_open(L);
    lua_newtable(L);
    int M = lua_gettop(L);
    pftl_register_ctx(L, M);
    pftl_register_tensor(L, M);
    pftl_register_optim(L, M);
    pftl_register_nn(L, M);
    pftl_register_text(L, M);
    pftl_register_io(L, M);
    pftl_register_data(L, M);
    pftl_register_fs(L, M);
    pftl_register_host(L, M);
    pftl_register_states(L, M);
    lua_settop(L, M);
    return 1;
}
