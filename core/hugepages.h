/* hugepages.h - a program's heap on transparent huge pages (2 MB), kept between training steps, for a main()
 * to call first.
 *
 *     int main(int argc, char **argv) { pft_hugepages_reexec(argv); ... }
 *
 * Why: a training step streams ~100 MB-1 GB through memory (activations, weights, gradients, AdamW's state)
 * in 4 KB pages, so its loads miss the TLB at every page and its streams wait on page walks. Where the
 * kernel's THP mode is "madvise" (Debian's and Ubuntu's default), memory gets huge pages only where the
 * program asks for them (madvise MADV_HUGEPAGE). glibc asks for its whole heap with the tunable
 * glibc.malloc.hugetlb=1 (glibc 2.35+), but reads tunables only when a process starts: so this sets it and
 * runs the program again (execv of /proc/self/exe, same arguments), once.
 * A dense MiniLM step ran 5% faster, an SST-2 step 8-10% (docs/performance.md), peak RSS +2%.
 * The second run also fixes glibc's mmap threshold (32 MB) and trim threshold (never, in practice), where
 * the user's GLIBC_TUNABLES does not name them: the default moving threshold gave the top of the heap back
 * every step where batch sizes vary, and the next step faulted it in again (hugepages.c: SST-2 training
 * 5-8% faster, an evaluation's peak RSS 470 -> 315 MB).
 *
 * Does nothing (returns) where it cannot help or is not wanted: PFT_HUGEPAGES=0, running under valgrind
 * (its preloaded libraries in LD_PRELOAD: the exec would leave valgrind, or fail), the tunable already given
 * (by the user, or by the run before the exec), THP "never" or unknown, not Linux with glibc, or an exec
 * that fails (the program then goes on as it is). Under THP "always" it still runs again: madvised memory
 * also gets the kernel's effort to find huge pages at a fault (defrag "madvise", the default), and a dense
 * step ran 3.7% faster with "always" alone against 5% with the tunable. Process-wide by nature: for a program's main(),
 * never from library code. */
#ifndef PFT_HUGEPAGES_H
#define PFT_HUGEPAGES_H

/* argv: main's, NULL-terminated. Returns only when no exec happened. */
void pft_hugepages_reexec(char **argv);

/* The decision without the exec, for tests: 1 if a program started with these environment values of
 * GLIBC_TUNABLES, PFT_HUGEPAGES and LD_PRELOAD (NULL: unset) and this THP mode line (the text of
 * /sys/kernel/mm/transparent_hugepage/enabled, NULL: unreadable) would run again, writing the new
 * GLIBC_TUNABLES value into out (size n); 0 if not. */
int pft_hugepages_plan(const char *tunables, const char *pft_hugepages, const char *thp_mode, const char *ld_preload,
                       char *out, unsigned long n);

#endif
