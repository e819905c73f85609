"""Id distributions and the vectorised draws the generator is built on.

Notation: ``N`` draws, ``V`` a vocabulary.

- :class:`_Zipf`: power-law ranks through an interpolated inverse CDF.
- splitmix64 hashes of ``(salt, id)`` give deterministic weights without tables (:func:`_hash_unit`).
- :func:`_hex8`: Criteo-style 8-char hex tokens.

>>> import numpy as np
>>> z = _Zipf(100, 1.1)
>>> r = z.sample(_u32(np.random.default_rng(0), 10_000))
>>> bool(r.min() >= 0 and r.max() < 100), bool((r == 0).mean() > (r == 50).mean())
(True, True)
>>> _hex8(np.array([0xDEADBEEF], dtype=np.uint32)).to_pylist()
['deadbeef']
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from dist_ctr.schema.hashing import hash64, splitmix64

TABLE_MAX = 1 << 20  # vocabularies up to this size get precomputed weight tables
_BUCKETS = 1 << 16  # inverse-CDF buckets of the Zipf sampler
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _salt(*parts: Any) -> np.uint64:
    """A 64-bit salt from a tuple of names / numbers (stable across processes)."""
    return np.uint64(hash64(pa.array(["|".join(str(p) for p in parts)]))[0])


def _hash_unit(ids: np.ndarray, salt: np.uint64) -> np.ndarray:
    """Deterministic pseudo-random values in ``[-1, 1)`` (variance 1/3) for integer ``ids``; float32 ``(N,)``."""
    with np.errstate(over="ignore"):
        h = splitmix64(ids.astype(np.uint64) + salt)
    return (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-23) - np.float32(1.0)


def _u32(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniform random uint32 (raw generator output, the cheapest draw)."""
    return rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]


def _unit(bits: np.ndarray) -> np.ndarray:
    """uint32 -> float32 uniform in ``[0, 1)``."""
    return (bits >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _hex8(tokens: np.ndarray) -> pa.Array:
    """uint32 tokens -> Arrow string array of 8 lowercase hex chars each (Criteo's categorical format)."""
    n = tokens.size
    t = tokens.astype(np.uint32)
    chars = np.empty((n, 8), dtype=np.uint8)
    for j in range(8):  # loop over hex digits, not rows
        chars[:, j] = _HEX[(t >> np.uint32(28 - 4 * j)) & np.uint32(0xF)]
    offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int32)
    data = chars.reshape(-1)  # (N * 8,) bytes
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


class _Zipf:
    """Power-law ranks in ``[0, V)``: ``P(rank = k)`` proportional to about ``(k + 1) ** -s``.

    Sampled by linear interpolation in a 65,536-bucket table of the continuous inverse CDF (a gather and a
    multiply-add per draw, no ``pow``).
    """

    def __init__(self, vocab: int, s: float) -> None:
        self.vocab = int(vocab)
        self.s = float(s)
        grid = np.linspace(0.0, 1.0, _BUCKETS + 1)
        # Keep x in [1, V + 0.5] so that floor(x) - 1 is a valid rank without clipping.
        xs = np.clip(self._inv_cdf(grid), 1.0, self.vocab + 0.5)
        dt = np.float64 if self.vocab > (1 << 22) else np.float32
        self.lo = xs[:-1].astype(dt)
        self.wd = np.maximum(xs[1:] - xs[:-1], 0.0).astype(dt)
        # Bucket widths pre-scaled by 2**-16 (the weight of the low 16 bits). Exact: a nonzero width is at least the
        # float spacing near 1 (~1e-16), so the scaled one is still a normal float, and (f * 2**-16) * wd and
        # f * (wd * 2**-16) are the same real number, rounded once: the ranks are bit-identical either way.
        self.wd_scaled = self.wd * dt(2.0**-16)
        self.out_dtype = np.int32 if self.vocab < 2**31 - 1 else np.int64

    def _inv_cdf(self, u: np.ndarray) -> np.ndarray:
        top = self.vocab + 1.0
        if abs(self.s - 1.0) < 1e-9:
            return top**u
        e = 1.0 - self.s
        return (1.0 + u * (top**e - 1.0)) ** (1.0 / e)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        top = self.vocab + 1.0
        if abs(self.s - 1.0) < 1e-9:
            return np.log(x) / math.log(top)
        e = 1.0 - self.s
        return (x**e - 1.0) / (top**e - 1.0)

    def pmf(self) -> np.ndarray:
        """``(V,)`` probabilities of each rank (of the continuous law the sampler interpolates)."""
        k = np.arange(self.vocab + 1, dtype=np.float64) + 1.0
        return np.diff(self.cdf(k))

    def sample(self, bits: np.ndarray) -> np.ndarray:
        """uint32 random bits ``(N,)`` -> int32 (int64 beyond 2**31) ranks ``(N,)``.

        The high 16 bits of each draw pick the bucket, the low 16 bits the position inside it.
        """
        halves = np.ascontiguousarray(bits, dtype=np.uint32).view(np.uint16)  # (2N,): low, high, low, high ...
        k = halves[1::2].astype(np.intp)  # bucket; converted once, not by each gather
        fr = halves[0::2].astype(self.lo.dtype)
        fr *= self.wd_scaled.take(k)
        fr += self.lo.take(k)
        r = fr.astype(self.out_dtype)
        r -= 1
        return r


def _coprime_mult(rng: np.random.Generator, vocab: int) -> int:
    if vocab <= 2:
        return 1
    while True:
        a = int(rng.integers(1, vocab))
        if math.gcd(a, vocab) == 1:
            return a
