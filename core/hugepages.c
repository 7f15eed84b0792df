/* hugepages.c - see hugepages.h: the tunable that puts glibc's heap on transparent huge pages, set by
 * running the program again. */
#include "hugepages.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TUNABLE "glibc.malloc.hugetlb"

/* What the second run gets (hugepages.h): the heap on huge pages, and kept between steps. glibc by default
 * moves its mmap threshold up to the largest block freed and gives the top of the heap back past twice that:
 * SST-2's batches vary in length, so every step gave tens of MB back and faulted them in again, zeroing 2 MB
 * pages (a step 5-6% slower). Fixed here: blocks under 32 MB (glibc's largest mmap threshold) come from the
 * heap, whose freed memory glibc reuses itself, and the heap is never given back while the program runs
 * (1 TB: its next step needs it again). ctx.c reads the threshold back: the buffer cache keeps only larger
 * blocks. */
static const char *const SECOND_RUN[] = {TUNABLE "=1", "glibc.malloc.mmap_threshold=33554432",
                                         "glibc.malloc.trim_threshold=1099511627776"};

int pft_hugepages_plan(const char *tunables, const char *pft_hugepages, const char *thp_mode, const char *ld_preload,
                       char *out, unsigned long n) {
    if (pft_hugepages && strcmp(pft_hugepages, "0") == 0) return 0;
    if (ld_preload && strstr(ld_preload, "vgpreload")) return 0; /* under valgrind: an exec would leave it */
    if (tunables && strstr(tunables, TUNABLE)) return 0; /* given: by the user, or this is the second run */
    if (!thp_mode || !(strstr(thp_mode, "[always]") || strstr(thp_mode, "[madvise]"))) return 0;
    int len = snprintf(out, n, "%s", tunables ? tunables : "");
    for (size_t i = 0; i < sizeof SECOND_RUN / sizeof *SECOND_RUN && len >= 0 && (unsigned long)len < n; i++) {
        const char *name = SECOND_RUN[i];
        const size_t name_len = strcspn(name, "=");
        char named[64];
        snprintf(named, sizeof named, "%.*s=", (int)name_len, name);
        if (tunables && strstr(tunables, named)) continue; /* the user's value stays */
        len += snprintf(out + len, n - (unsigned long)len, "%s%s", len > 0 ? ":" : "", name);
    }
    return len > 0 && (unsigned long)len < n;
}

void pft_hugepages_reexec(char **argv) {
#if defined(__linux__) && defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
    char mode[256] = "", value[4096];
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    const char *mode_line = f && fgets(mode, sizeof mode, f) ? mode : NULL;
    if (f) fclose(f);
    if (!pft_hugepages_plan(getenv("GLIBC_TUNABLES"), getenv("PFT_HUGEPAGES"), mode_line, getenv("LD_PRELOAD"), value,
                            sizeof value))
        return;
    if (setenv("GLIBC_TUNABLES", value, 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* no exec (no /proc): go on with the heap as it is; the variable stays set, which only says what a child
     * process will get */
#else
    (void)argv;
#endif
}
