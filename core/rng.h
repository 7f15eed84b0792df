/* rng.h - a counter-based random generator: the value for (seed, counter) is a pure function of both,
 * so a dropout mask or an initialisation does not depend on thread count or the order work is split.
 * The mix is the splitmix64 finaliser applied to seed and counter; good enough statistically for
 * dropout and initialisation, and cheap enough to call per element. */
#ifndef PFT_RNG_H
#define PFT_RNG_H

#include <stdint.h>

static inline uint64_t pft_rng_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t pft_rng_u64(uint64_t seed, uint64_t counter) {
    return pft_rng_mix(pft_rng_mix(seed + 0x9e3779b97f4a7c15ULL) ^ (counter * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL));
}

/* uniform in [0, 1) with 53 random bits */
static inline double pft_rng_uniform(uint64_t seed, uint64_t counter) {
    return (double)(pft_rng_u64(seed, counter) >> 11) * (1.0 / 9007199254740992.0);
}

/* uniform in [0, 1) as float with 24 random bits: the dropout test `u < p` */
static inline float pft_rng_uniform_f(uint64_t seed, uint64_t counter) {
    return (float)(pft_rng_u64(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

#endif
