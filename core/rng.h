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

#define PFT_RNG_STEP 0x9e3779b97f4a7c15ULL

/* pft_rng_u64 in two halves, for runs of consecutive counters: the seed's key once, then each counter
 * times PFT_RNG_STEP, which a loop advances by adding PFT_RNG_STEP (the same bits, one 64-bit multiply
 * fewer per draw) */
static inline uint64_t pft_rng_key(uint64_t seed) { return pft_rng_mix(seed + 0x9e3779b97f4a7c15ULL); }

static inline uint64_t pft_rng_u64_keyed(uint64_t key, uint64_t counter_times_step) {
    return pft_rng_mix(key ^ (counter_times_step + 0x632be59bd9b4e019ULL));
}

static inline uint64_t pft_rng_u64(uint64_t seed, uint64_t counter) {
    return pft_rng_u64_keyed(pft_rng_key(seed), counter * PFT_RNG_STEP);
}

/* uniform in [0, 1) with 53 random bits */
static inline double pft_rng_uniform(uint64_t seed, uint64_t counter) {
    return (double)(pft_rng_u64(seed, counter) >> 11) * (1.0 / 9007199254740992.0);
}

/* uniform in [0, 1) as float with 24 random bits: the dropout test `u < p` */
static inline float pft_rng_uniform_f(uint64_t seed, uint64_t counter) {
    return (float)(pft_rng_u64(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

/* The dropout test on the 24 bits themselves: pft_rng_uniform_f(seed, c) < p exactly when
 * (pft_rng_u64(seed, c) >> 40) < pft_rng_drop_threshold(p) (x 2^-24 < p, x an integer, is x < p 2^24, so x <
 * its ceiling), for p in [0, 1] */
static inline uint64_t pft_rng_drop_threshold(float p) {
    const double t = (double)p * 16777216.0;
    const uint64_t f = (uint64_t)t;
    return (double)f == t ? f : f + 1;
}

#endif
