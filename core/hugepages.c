/* hugepages.c - see hugepages.h: the tunable that puts glibc's heap on transparent huge pages, set by
 * running the program again. */
#include "hugepages.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TUNABLE "glibc.malloc.hugetlb"

int pft_hugepages_plan(const char *tunables, const char *pft_hugepages, const char *thp_mode, const char *ld_preload,
                       char *out, unsigned long n) {
    if (pft_hugepages && strcmp(pft_hugepages, "0") == 0) return 0;
    if (ld_preload && strstr(ld_preload, "vgpreload")) return 0; /* under valgrind: an exec would leave it */
    if (tunables && strstr(tunables, TUNABLE)) return 0; /* given: by the user, or this is the second run */
    if (!thp_mode || !(strstr(thp_mode, "[always]") || strstr(thp_mode, "[madvise]"))) return 0;
    const int len = tunables && *tunables ? snprintf(out, n, "%s:" TUNABLE "=1", tunables) : snprintf(out, n, TUNABLE "=1");
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
