"""Stable 64-bit hashing of raw categorical values, vectorised with NumPy.

The same value hashes to the same id on every process, machine and Python run (unlike Python's ``hash``,
which is salted per process). Two families, chosen by the value's type:

- integers: ``splitmix64(value as uint64)``;
- strings / bytes: 64-bit FNV-1a over the UTF-8 bytes, then ``splitmix64`` (FNV's low bits are weak and
  ids are taken modulo the vocabulary size).

Strings are hashed column-wise from an Arrow string array's offsets and data buffers: one NumPy pass per
byte position, never a Python loop per row.

>>> int(stable_hash(["68fd1e64"], 1000)[0]) == int(stable_hash(np.array(["68fd1e64"]), 1000)[0])
True
>>> int(stable_hash([12345], 2**62)[0]) == int(stable_hash(np.array([12345]), 2**62)[0])
True
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_SM_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_SM_M1 = np.uint64(0xBF58476D1CE4E5B9)
_SM_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Finaliser of SplitMix64 applied element-wise.

    Args:
        x (np.ndarray): any integer array; reinterpreted as uint64.

    Returns:
        np.ndarray: uint64, same shape.
    """
    z = np.asarray(x).astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += _SM_GAMMA
        z = (z ^ (z >> np.uint64(30))) * _SM_M1
        z = (z ^ (z >> np.uint64(27))) * _SM_M2
        z = z ^ (z >> np.uint64(31))
    return z


def _fnv1a_arrow(arr: pa.Array) -> np.ndarray:
    """FNV-1a over each string of a (large_)string / binary Arrow array. Nulls hash as the empty string."""
    if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type):
        off_dtype = np.int64
    else:
        off_dtype = np.int32
    if arr.null_count:
        arr = arr.fill_null("" if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) else b"")
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_dtype, count=n + 1 + arr.offset)[arr.offset :]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1].astype(np.int64)
    lengths = (offsets[1:] - offsets[:-1]).astype(np.int64)
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    max_len = int(lengths.max()) if n else 0  # host sync (numpy)
    with np.errstate(over="ignore"):
        for pos in range(max_len):  # loop over byte positions, not rows
            live = lengths > pos
            idx = starts[live] + pos
            hv = h[live] ^ data[idx].astype(np.uint64)
            h[live] = hv * _FNV_PRIME
    return h


def hash64(values: Any) -> np.ndarray:
    """Stable 64-bit hash of raw values.

    Args:
        values: an Arrow array / chunked array, a NumPy array, or a Python sequence of str / bytes / int.

    Returns:
        np.ndarray: uint64 of shape ``(N,)``.
    """
    if isinstance(values, pa.ChunkedArray):
        if values.num_chunks == 0:
            return np.zeros(0, np.uint64)
        return np.concatenate([hash64(c) for c in values.chunks])
    if isinstance(values, pa.Array):
        t = values.type
        if pa.types.is_integer(t):
            if values.null_count:
                raise ValueError("cannot hash null integer ids; fill them first")
            return splitmix64(values.to_numpy(zero_copy_only=False).astype(np.int64))
        if pa.types.is_dictionary(t):
            return hash64(values.dictionary_decode())
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return splitmix64(_fnv1a_arrow(values))
        raise TypeError(f"cannot hash values of Arrow type {t}")
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return splitmix64(arr.astype(np.int64))
    if arr.dtype.kind in "USO":
        return hash64(pa.array(arr.astype(str).tolist() if arr.dtype.kind != "O" else list(arr), type=pa.string()))
    if arr.dtype.kind == "b":
        return splitmix64(arr.astype(np.int64))
    raise TypeError(f"cannot hash values of dtype {arr.dtype}")


def stable_hash(values: Any, vocabulary_size: int) -> np.ndarray:
    """Stable hash of raw values modulo ``vocabulary_size``.

    Args:
        values: see :func:`hash64`.
        vocabulary_size (int): number of rows of the embedding table (>= 1).

    Returns:
        np.ndarray: int64 ids in ``[0, vocabulary_size)``, shape ``(N,)``.
    """
    if vocabulary_size < 1:
        raise ValueError(f"vocabulary_size must be >= 1, got {vocabulary_size}")
    return (hash64(values) % np.uint64(vocabulary_size)).astype(np.int64)


def hash_one(value: str | bytes | int, vocabulary_size: int) -> int:
    """Stable hash of one Python value (convenience for tests and serving)."""
    if isinstance(value, (str, bytes)):
        arr: Sequence[Any] = pa.array([value])
    else:
        arr = np.array([int(value)], dtype=np.int64)
    return int(stable_hash(arr, vocabulary_size)[0])
