/* lua_fs.c - the few filesystem calls the Lua layer needs and LuaJIT lacks (run and checkpoint
 * directories, model and recipe listings, the source file of a dataset cache): core.mkdir,
 * core.mkdir_excl, core.list_dir, core.remove_dir, core.file_stat, and the activation cache's budget
 * (core.free_space), and core.pid for temporaries of one's own. Each returns its result, or nil and a
 * message naming the path. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "lua_pft.h"

/* core.mkdir(path): creates path and missing parents (mode 0777 & umask); an existing directory is fine.
 * Returns true, or nil and a message. */
static int l_mkdir(lua_State *L) {
    size_t n;
    const char *path = luaL_checklstring(L, 1, &n);
    char *p = lua_newuserdata(L, n + 1);
    memcpy(p, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char c = p[i];
        p[i] = '\0';
        struct stat sb;
        if (mkdir(p, 0777) != 0 && !(errno == EEXIST && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))) {
            lua_pushnil(L);
            lua_pushfstring(L, "%s: cannot create directory: %s", p, strerror(errno));
            return 2;
        }
        p[i] = c;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.mkdir_excl(path): creates path (its parent must exist) only if nothing is there: the run directory
 * of a new run is never shared. Returns true, or nil, a message and "exists" when path already exists. */
static int l_mkdir_excl(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (mkdir(path, 0777) != 0) {
        int e = errno;
        lua_pushnil(L);
        lua_pushfstring(L, "%s: cannot create directory: %s", path, strerror(e));
        if (e == EEXIST) {
            lua_pushliteral(L, "exists");
            return 3;
        }
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* core.list_dir(path) -> sorted array of entry names (no "." or ".."), or nil and a message */
static int l_list_dir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_newtable(L); /* names, collected in C first so that no Lua error can leak d */
    int n = 0;
    size_t cap = 64, used = 0;
    char **names = malloc(cap * sizeof *names);
    struct dirent *ent;
    while (names && (ent = readdir(d))) {
        if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..")) continue;
        if (used == cap) {
            char **g = realloc(names, 2 * cap * sizeof *names);
            if (!g) break;
            names = g, cap *= 2;
        }
        if (!(names[used] = strdup(ent->d_name))) break;
        used++;
    }
    closedir(d);
    if (names) qsort(names, used, sizeof *names, cmp_str);
    for (size_t i = 0; i < used; i++) {
        lua_pushstring(L, names[i]); /* could raise only on out-of-memory */
        lua_rawseti(L, -2, ++n);
    }
    for (size_t i = 0; i < used; i++) free(names[i]);
    free(names);
    return 1;
}

/* core.remove_dir(path): removes the plain files in path, then path (checkpoint directories are flat).
 * Returns true, or nil and a message. */
static int l_remove_dir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    char buf[4096];
    struct dirent *e;
    int err = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if ((size_t)snprintf(buf, sizeof buf, "%s/%s", path, e->d_name) >= sizeof buf || unlink(buf) != 0) err = errno ? errno : ENAMETOOLONG;
    }
    closedir(d);
    if (err || rmdir(path) != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: cannot remove: %s", path, strerror(err ? err : errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.file_stat(path) -> size, mtime (seconds) | nil, message */
static int l_file_stat(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st)) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushnumber(L, (lua_Number)st.st_size);
    lua_pushnumber(L, (lua_Number)st.st_mtime);
    return 2;
}

/* core.free_space(path) -> bytes an unprivileged user may still write on path's file system | nil, message */
static int l_free_space(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct statvfs sv;
    if (statvfs(path, &sv)) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushnumber(L, (lua_Number)sv.f_bavail * (lua_Number)sv.f_frsize);
    return 1;
}

/* core.pid(): this process's id, which names its temporary files (two writers of one file never share one). */
static int l_pid(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

void pftl_register_fs(lua_State *L, int module_idx) {
    static const luaL_Reg fns[] = {{"mkdir", l_mkdir},           {"mkdir_excl", l_mkdir_excl}, {"list_dir", l_list_dir},
                                   {"remove_dir", l_remove_dir}, {"file_stat", l_file_stat},   {"free_space", l_free_space},
                                   {"pid", l_pid},               {NULL, NULL}};
    pftl_set_funcs(L, module_idx, fns);
}
