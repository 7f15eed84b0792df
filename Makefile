# pft - build, test, install. Knobs: make CC=clang OPENBLAS=... PREFIX=...
CC       ?= cc
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

.PHONY: all test test-c test-lua asan clean install setup
all: build/libpftcore.a

build/core/%.o: core/%.c $(wildcard core/*.h) | build/core
	$(CC) $(ALL_CFLAGS) -c $< -o $@

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
