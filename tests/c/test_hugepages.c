/* test_hugepages.c - pft_hugepages_plan: when a program runs itself again with glibc's huge-page tunable
 * (and the heap's thresholds), and the value it sets (the binary's behaviour on this machine: tests/lua/test_host.lua). */
#include "check.h"
#include "hugepages.h"

static const char *const MADVISE = "always [madvise] never\n";
static const char *const ALWAYS = "[always] madvise never\n";
static const char *const NEVER = "always madvise [never]\n";

#define SECOND "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1099511627776"

static void test_when(void) {
    char out[256];
    CHECK(pft_hugepages_plan(NULL, NULL, MADVISE, NULL, out, sizeof out) == 1, "madvise, nothing set: run again");
    CHECK(strcmp(out, SECOND) == 0, "value '%s'", out);
    CHECK(pft_hugepages_plan("", NULL, ALWAYS, NULL, out, sizeof out) == 1, "always, empty tunables: run again");
    CHECK(strcmp(out, SECOND) == 0, "value '%s'", out);
    CHECK(pft_hugepages_plan(NULL, NULL, NEVER, NULL, out, sizeof out) == 0, "never: nothing to ask for");
    CHECK(pft_hugepages_plan(NULL, NULL, NULL, NULL, out, sizeof out) == 0, "mode unreadable: left alone");
    CHECK(pft_hugepages_plan(NULL, NULL, "madvise\n", NULL, out, sizeof out) == 0, "mode not understood: left alone");
    CHECK(pft_hugepages_plan(NULL, "0", MADVISE, NULL, out, sizeof out) == 0, "PFT_HUGEPAGES=0: off");
    CHECK(pft_hugepages_plan(NULL, "1", MADVISE, NULL, out, sizeof out) == 1, "PFT_HUGEPAGES=1: on");
    CHECK(pft_hugepages_plan(NULL, NULL, MADVISE, "/usr/libexec/valgrind/vgpreload_core-amd64-linux.so", out, sizeof out) == 0,
          "under valgrind: left alone");
    CHECK(pft_hugepages_plan(NULL, NULL, MADVISE, "/usr/lib/libjemalloc.so", out, sizeof out) == 1,
          "another preloaded library: run again");
}

static void test_tunables_kept(void) {
    char out[256];
    CHECK(pft_hugepages_plan("glibc.malloc.arena_max=2", NULL, MADVISE, NULL, out, sizeof out) == 1, "other tunables: run again");
    CHECK(strcmp(out, "glibc.malloc.arena_max=2:" SECOND) == 0, "appended: '%s'", out);
    CHECK(pft_hugepages_plan("glibc.malloc.mmap_threshold=1048576", NULL, MADVISE, NULL, out, sizeof out) == 1,
          "the user's threshold: run again");
    CHECK(strcmp(out, "glibc.malloc.mmap_threshold=1048576:glibc.malloc.hugetlb=1:glibc.malloc.trim_threshold=1099511627776") == 0,
          "the user's threshold stays, not named twice: '%s'", out);
    CHECK(pft_hugepages_plan("glibc.malloc.trim_threshold=0:x=1", NULL, MADVISE, NULL, out, sizeof out) == 1 &&
              strcmp(out, "glibc.malloc.trim_threshold=0:x=1:glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432") == 0,
          "the user's trim threshold stays: '%s'", out);
    CHECK(pft_hugepages_plan("glibc.malloc.hugetlb=0", NULL, MADVISE, NULL, out, sizeof out) == 0, "the user's own setting wins");
    CHECK(pft_hugepages_plan("a=1:glibc.malloc.hugetlb=1", NULL, MADVISE, NULL, out, sizeof out) == 0,
          "already set (the second run): no loop");
    char tiny[8], short_out[40];
    CHECK(pft_hugepages_plan(NULL, NULL, MADVISE, NULL, short_out, sizeof short_out) == 0, "room for a part only: left alone");
    CHECK(pft_hugepages_plan(NULL, NULL, MADVISE, NULL, tiny, sizeof tiny) == 0, "no room for the value: left alone");
}

int main(void) {
    TEST_BEGIN("hugepages");
    test_when();
    test_tunables_kept();
    return TEST_END();
}
