"""Tables too large to copy: memory-mapped .npy files read in chunks, one-pass statistics,
fixed-size samples, and shuffled training batches streamed from the file.

A `.npy` file is opened memory-mapped (`open_npy`). One of at most `IN_MEMORY_BYTES` is then
read whole as before (small data keeps every behaviour it had); a larger one stays mapped, and
its training part is a `RowSubset`: the rows' positions in the file, read a chunk at a time.
Everything that needs all training rows takes them through `chunks` (statistics, the scaler,
PCA, codes), and training takes them through `batches`, which shuffles within windows of
`WINDOW_BYTES` rows. Pages read through the mapping are handed back to the kernel after each
chunk (`release`), so a file larger than memory trains, and the process's resident memory stays
at a few windows whatever the file's size. Validation and test rows are copied (float32, at
most `HELD_OUT_ROWS` each): they are what early stopping and the metrics read over and over.

Shards (a folder of .npy or Parquet files) are not read: one memory-mapped file already streams
from disk, and a folder would only add a file-order layer to the same chunks. Numpy only here.
"""
from __future__ import annotations

import math
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

__all__ = ["IN_MEMORY_BYTES", "HELD_OUT_ROWS", "CHUNK_BYTES", "WINDOW_BYTES", "FIGURE_ROWS", "RowSubset", "open_npy", "chunks",
           "release", "is_streamed", "gather", "sample_rows", "Summary", "summarize", "column_moments", "map_rows",
           "batches", "steps_per_epoch"]

IN_MEMORY_BYTES = 64 * 2**20  # a .npy file up to this size is read whole; larger ones stay memory-mapped
CHUNK_BYTES = 4 * 2**20  # rows per read of a mapped file: a few milliseconds of disk, a bounded copy
WINDOW_BYTES = 8 * 2**20  # training rows shuffled together: the batches of one window mix its chunks
# Validation and test rows of a mapped file, at most, each (the rest of their share trains): they
# are held in memory, scored every epoch (validation) and at the end; half a million rows give
# an MSE to a fraction of a percent, and 15% of a 3 GB file would be 920 MB of copies.
HELD_OUT_ROWS = 500_000
FIGURE_ROWS = 1000  # rows each figure draws at most, sampled by the seed: enough for a scatter's shape


def open_npy(path: Path) -> np.ndarray:
    """The file's array memory-mapped read-only (nothing read yet); a small file read whole."""
    x = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(x, np.memmap) or x.nbytes > IN_MEMORY_BYTES or x.dtype.kind not in "biuf":
        return x
    return np.array(x)  # small: as it always was, an array in memory


def is_streamed(x) -> bool:
    """Rows read in chunks rather than held in memory: a memory-mapped array or a `RowSubset`."""
    return isinstance(x, (np.memmap, RowSubset))


def release(x) -> None:
    """Hand the pages read through a memory-mapped array back to the kernel (they stay cached),
    so they stop counting in this process's memory; nothing for arrays in memory."""
    root = x
    while root is not None and not isinstance(getattr(root, "_mmap", None), mmap.mmap):
        root = getattr(root, "base", None)
    if root is not None and hasattr(mmap, "MADV_DONTNEED"):
        try:
            root._mmap.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # closed, or not supported here: the pages stay until unmapped
            pass


def _chunk_rows(n_features: int, budget: int = CHUNK_BYTES) -> int:
    return max(1, budget // max(1, 4 * n_features))


class RowSubset:
    """Rows `index` (increasing) of a memory-mapped `source`, optionally mapped by an affine
    `(offset, scale)` (the scaler): an array-like read on demand. `len`, `shape`, slices and
    integer arrays of positions work as on an array and return float32 arrays; `chunks` walks
    them all. `np.asarray` reads them all: only for small subsets."""

    def __init__(self, source: np.ndarray, index: np.ndarray, affine: tuple[np.ndarray, np.ndarray] | None = None):
        self.source, self.index, self.affine = source, np.asarray(index, dtype=np.int64), affine
        self.dtype = np.dtype(np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.index), int(self.source.shape[1]))

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nbytes(self) -> int:
        return len(self.index) * self.shape[1] * 4

    def __len__(self) -> int:
        return len(self.index)

    def scaled(self, offset: np.ndarray, scale: np.ndarray) -> "RowSubset":
        """The same rows as (x - offset) / scale, computed per chunk as they are read."""
        return RowSubset(self.source, self.index, (np.asarray(offset), np.asarray(scale)))

    def _read(self, positions: np.ndarray) -> np.ndarray:
        rows = np.asarray(self.source[positions], dtype=np.float32)
        if self.affine is not None:
            rows -= self.affine[0].astype(np.float32)
            rows /= self.affine[1].astype(np.float32)
        return rows

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # rows, columns
            return self[key[0]][(slice(None), *key[1:])]
        positions = self.index[key]
        if np.ndim(positions) == 0:
            return self._read(np.asarray([positions]))[0]
        order = np.argsort(positions, kind="stable")  # read in file order, hand back in the order asked
        ordered = positions[order]
        out = np.empty((len(positions), self.shape[1]), np.float32)
        span = _chunk_rows(self.shape[1])  # file rows per read: the pages of one read, then released
        start = 0
        while start < len(ordered):
            stop = int(np.searchsorted(ordered, ordered[start] + span, side="left"))
            out[order[start:stop]] = self._read(ordered[start:stop])
            release(self.source)
            start = stop
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def astype(self, dtype, copy: bool = True):
        return self if np.dtype(dtype) == self.dtype else np.asarray(self, dtype=dtype)


def chunks(x, rows: int | None = None) -> Iterator[np.ndarray]:
    """x's rows in order, a chunk at a time: views of an array in memory, float32 copies of
    mapped rows (whose pages are released after each)."""
    step = rows or _chunk_rows(x.shape[1] if x.ndim > 1 else 1)
    if not is_streamed(x):
        for start in range(0, len(x), step):
            yield x[start:start + step]
        return
    for start in range(0, len(x), step):
        part = x[start:start + step]
        yield np.array(part, dtype=np.float32) if isinstance(part, np.memmap) else part
        release(x.source if isinstance(x, RowSubset) else x)


def map_rows(x, fn: Callable[[np.ndarray], np.ndarray], rows: int | None = None) -> np.ndarray:
    """fn applied chunk by chunk, the results stacked: the codes of every row without a copy of them."""
    if not is_streamed(x):
        return fn(x)
    return np.concatenate([fn(part) for part in chunks(x, rows)])


def gather(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Rows `index` of x as a float32 array, read in file order and a chunk at a time."""
    return RowSubset(x, index)[:]


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """At most `size` row positions of n, chosen by the seed and in increasing order; all n if fewer."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


@dataclass(frozen=True)
class Summary:
    """One pass over a table: what the loader checks and the data kind's detection reads."""

    low: float
    high: float
    whole: bool  # every value a whole number
    bad: int  # NaN or infinite cells
    first_bad: tuple[int, int] | None  # (row, column) of the first, 0-based


def summarize(x) -> Summary:
    """Min, max, whole numbers and bad cells of every row, in one chunked pass."""
    low, high, whole, bad, first = math.inf, -math.inf, True, 0, None
    offset = 0
    for part in chunks(x):
        size, finite = len(part), np.isfinite(part)
        if not finite.all():
            count = int(finite.size - finite.sum())
            if first is None:
                row, col = np.argwhere(~finite)[0]
                first = (int(row) + offset, int(col))
            bad += count
            part = part[finite.all(axis=1)]
        if part.size:
            low, high = min(low, float(part.min())), max(high, float(part.max()))
            whole = whole and bool(np.all(np.mod(part, 1) == 0))
        offset += size
    return Summary(low, high, whole, bad, first)


def column_moments(x) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(mean, variance with ddof 0, max, rows) per column in one chunked pass (float64 sums
    combined by Chan's rule, so a million rows lose no precision)."""
    n, mean, m2, top = 0, None, None, None
    for part in chunks(x):
        part = np.asarray(part, dtype=np.float64)
        k = len(part)
        if k == 0:
            continue
        m = part.mean(axis=0)
        s = ((part - m) ** 2).sum(axis=0)
        if mean is None:
            n, mean, m2, top = k, m, s, part.max(axis=0)
            continue
        delta = m - mean
        total = n + k
        mean = mean + delta * (k / total)
        m2 = m2 + s + delta**2 * (n * k / total)
        top = np.maximum(top, part.max(axis=0))
        n = total
    if mean is None:
        width = x.shape[1]
        return np.zeros(width), np.zeros(width), np.zeros(width), 0
    return mean, m2 / n, top, n


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    return max(1, math.ceil(n_rows / batch_size))


def batches(x: RowSubset, batch_size: int, seed: int, targets: Callable[[np.ndarray], object]) -> Iterator[tuple]:
    """(rows, targets(rows)) batches of a streamed subset for ever, `steps_per_epoch` per epoch.

    Each epoch reads the rows' chunks in a seeded random order, a window of about WINDOW_BYTES
    at a time, and shuffles the rows within the window: every row once per epoch, every batch
    full but the epoch's last, and memory bounded by the window, not the rows."""
    rng = np.random.default_rng(seed)
    n, width = len(x), x.shape[1]
    step = _chunk_rows(width, min(CHUNK_BYTES, WINDOW_BYTES))
    per_window = max(1, WINDOW_BYTES // (step * 4 * width))
    starts = np.arange(0, n, step)
    while True:
        order = rng.permutation(len(starts))
        carry = np.empty((0, width), np.float32)
        for first in range(0, len(order), per_window):
            window = [x[starts[i]:starts[i] + step] for i in order[first:first + per_window]]
            rows = np.concatenate([carry, *window])
            rows = rows[rng.permutation(len(rows))]
            full = len(rows) - len(rows) % batch_size
            for start in range(0, full, batch_size):
                part = rows[start:start + batch_size]
                yield part, targets(part)
            carry = rows[full:]
        if len(carry):
            yield carry, targets(carry)
