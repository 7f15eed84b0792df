# pft - build, test, install. Knobs: make CC=clang OPENBLAS=... PREFIX=...
CC       ?= cc
VERSION  ?= 0.1.0
PREFIX   ?= /usr/local
OPT      ?= -O2
LUAJIT_CFLAGS ?= $(shell pkg-config --cflags luajit)
LUAJIT_LIBS   ?= $(shell pkg-config --libs luajit)
OPENBLAS_CFLAGS ?= $(shell pkg-config --cflags openblas)
OPENBLAS_LIBS   ?= $(shell pkg-config --libs openblas)
CFLAGS   ?= $(OPT) -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -fPIC
ALL_CFLAGS = $(CFLAGS) -Icore $(OPENBLAS_CFLAGS) -I/usr/include/cjson
LIBS     = $(OPENBLAS_LIBS) -lutf8proc -lcjson -lm -lpthread

CORE_SRC = $(sort $(filter-out core/lua_%.c core/pft_main.c,$(wildcard core/*.c)))
CORE_OBJ = $(CORE_SRC:core/%.c=build/core/%.o)
TEST_SRC = $(sort $(wildcard tests/c/test_*.c))
TEST_BIN = $(TEST_SRC:tests/c/%.c=build/tests/%)

BIND_SRC = $(sort $(wildcard core/lua_*.c))
BIND_OBJ = $(BIND_SRC:core/%.c=build/core/%.o)

# install locations: LuaRocks passes its own (LUADIR, LIBDIR, BINDIR) through the rockspec
LUADIR   ?= $(PREFIX)/share/lua/5.1
LIBDIR   ?= $(PREFIX)/lib/lua/5.1
BINDIR   ?= $(PREFIX)/bin

.PHONY: all test test-c test-lua asan clean install setup
all: build/libpftcore.a build/lib/pft/core.so build/pft

build/core/%.o: core/%.c $(wildcard core/*.h) | build/core
	$(CC) $(ALL_CFLAGS) -c $< -o $@

build/core/lua_%.o: core/lua_%.c $(wildcard core/*.h) | build/core
	$(CC) $(ALL_CFLAGS) $(LUAJIT_CFLAGS) -c $< -o $@

build/core/pft_main.o: core/pft_main.c $(wildcard core/*.h) | build/core
	$(CC) $(ALL_CFLAGS) $(LUAJIT_CFLAGS) -DPFT_VERSION='"$(VERSION)"' -c $< -o $@

# the Lua C module `pft.core`: LuaJIT's symbols come from the process that loads it
build/lib/pft/core.so: $(BIND_OBJ) build/libpftcore.a
	mkdir -p build/lib/pft
	$(CC) -shared $(LDFLAGS) $(BIND_OBJ) build/libpftcore.a $(LIBS) -o $@

# the host binary: LuaJIT embedded, pft.core linked in; -E lets C modules it loads (lua-cjson) see LuaJIT
build/pft: build/core/pft_main.o $(BIND_OBJ) build/libpftcore.a
	$(CC) $(LDFLAGS) -Wl,-E $^ $(LUAJIT_LIBS) $(LIBS) -ldl -o $@

install: all
	mkdir -p $(DESTDIR)$(LUADIR)/pft $(DESTDIR)$(LIBDIR)/pft $(DESTDIR)$(BINDIR)
	cp lua/pft/*.lua $(DESTDIR)$(LUADIR)/pft/
	cp build/lib/pft/core.so $(DESTDIR)$(LIBDIR)/pft/core.so
	cp build/pft $(DESTDIR)$(BINDIR)/pft

build/libpftcore.a: $(CORE_OBJ)
	ar rcs $@ $^

build/tests/%: tests/c/%.c build/libpftcore.a $(wildcard tests/c/*.h) | build/tests
	$(CC) $(ALL_CFLAGS) -Itests/c $< build/libpftcore.a $(LIBS) -o $@

build/core build/tests:
	mkdir -p $@

test-c: $(TEST_BIN)
	@for t in $(TEST_BIN); do $$t || echo "FAILED: $$t"; done

clean:
	rm -rf build
