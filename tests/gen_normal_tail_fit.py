#!/usr/bin/env python3
"""Fits core/kernels_cpu.h's pft_normal_tail polynomial and prints its coefficients (highest degree first)
with the errors of its float evaluation.

The tail of the normal distribution, 0.5 erfc(a) with a = |v| / sqrt 2, is 0.5 e^(-v^2/2) erfcx(a) where
erfcx(t) = e^(t^2) erfc(t) is smooth and slowly varying on [0, 4]; Q(u), u = a - 2, is its degree-14 least
squares fit (relative error, 600 Chebyshev nodes). The coefficients are rounded to float, and the fit is then
evaluated as the C code does (float Horner), against mpmath.

Usage: python3 tests/gen_normal_tail_fit.py   (needs numpy and mpmath: pip install numpy mpmath)
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 30
DEG, NODES = 14, 600


def erfcx(t):
    return mp.exp(t * t) * mp.erfc(t)


def fit():
    nodes = [2 + 2 * mp.cos(mp.pi * (k + 0.5) / NODES) for k in range(NODES)]
    a = np.array([[float((x - 2) ** j) / float(erfcx(x)) for j in range(DEG + 1)] for x in nodes])
    coef, *_ = np.linalg.lstsq(a, np.ones(NODES), rcond=None)
    return [np.float32(c) for c in coef]  # lowest degree first


def q_float(coef, t):
    u = np.float32(t) - np.float32(2)
    q = coef[DEG]
    for j in range(DEG - 1, -1, -1):
        q = np.float32(q * u + coef[j])
    return q


def main():
    coef = fit()
    for c in reversed(coef):
        print("%.9e" % float(c))
    worst = max(abs(float(q_float(coef, t)) - float(erfcx(mp.mpf(float(t))))) / float(erfcx(mp.mpf(float(t))))
                for t in np.linspace(0, 4, 4001, dtype=np.float32))
    print("# float evaluation of Q on [0, 4]: worst relative error %.3g" % worst)


if __name__ == "__main__":
    main()
