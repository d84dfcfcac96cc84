"""An index split (a 1-D int32 `.npy` file) read with `pread`, so no page stays mapped."""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from textgen.core.errors import TextgenError

# Ids per pread when a slice or np.asarray reads a long range: 4 MB, far below Linux's 2 GB
# cap on one read, and the most a strided slice reads beyond what it returns.
_CHUNK_IDS = 1 << 20


class TokenFile:
    """An int32 `.npy` vector read by `pread`: no pages stay mapped into the process.

    It behaves like a read-only 1-D numpy array for what numpy users reach for first:
    `dtype`, `shape`, `ndim`, `size`, `len()`, `np.asarray()`, iteration, and indexing by an int
    (a numpy int32) or a slice of any step (a new numpy array, read from the file then).
    Nothing is cached: each access reads the file again, in bounded chunks.

    Args:
        path: A 1-D int32 `.npy` file (an index split).
    """

    dtype = np.dtype(np.int32)
    ndim = 1

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = {1: np.lib.format.read_array_header_1_0}.get(
                major, np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
            self.data_offset = f.tell()
        if len(shape) != 1 or dtype != np.dtype("<i4") or fortran:
            raise TextgenError("index split is not a 1-D int32 array; re-index", str(path))
        self.length = int(shape[0])
        self._fd = os.open(self.path, os.O_RDONLY)

    @property
    def shape(self) -> tuple[int]:
        """(tokens,), as numpy's."""
        return (self.length,)

    @property
    def size(self) -> int:
        """Number of ids, as numpy's."""
        return self.length

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"TokenFile('{self.path}', shape={self.shape}, dtype=int32)"

    def __getitem__(self, where: int | slice) -> np.ndarray | np.int32:
        """split[i] (a numpy int32; negative counts from the end) or split[a:b:c] (an array)."""
        if isinstance(where, slice):
            return self._read_slice(*where.indices(self.length))
        try:
            i = operator.index(where)
        except TypeError:
            raise TypeError(
                f"a TokenFile is indexed by an int or a slice, not {type(where).__name__}"
            ) from None
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} is out of bounds for a split of {self.length} ids")
        return self._read_range(i % self.length, i % self.length + 1)[0]

    def __iter__(self) -> Iterator[np.int32]:
        for start in range(0, self.length, _CHUNK_IDS):
            yield from self._read_range(start, min(start + _CHUNK_IDS, self.length))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """All ids of the split, read into memory (a new array: `copy=False` cannot be met)."""
        if copy is False:
            raise ValueError("a TokenFile is on disk: np.asarray must read it into a new array")
        ids = self._read_range(0, self.length)  # (tokens,)
        return ids if dtype is None else ids.astype(dtype)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def read(self, starts: np.ndarray, span: int) -> np.ndarray:
        """Returns ids[s : s + span] for each start s."""
        out = np.empty((len(starts), span), dtype=np.int32)  # (windows, span)
        for i, start in enumerate(starts.tolist()):
            self._pread_into(out[i], start)
        return out

    def _read_range(self, start: int, stop: int) -> np.ndarray:
        """ids[start:stop] (0 <= start <= stop <= len), read in chunks of _CHUNK_IDS."""
        out = np.empty(max(stop - start, 0), dtype=np.int32)  # (stop - start,)
        for first in range(0, len(out), _CHUNK_IDS):
            self._pread_into(out[first : first + _CHUNK_IDS], start + first)
        return out

    def _read_slice(self, start: int, stop: int, step: int) -> np.ndarray:
        """ids[start:stop:step] (as from slice.indices): each chunk read once, then strided."""
        if step == 1:
            return self._read_range(start, stop)
        positions = np.arange(start, stop, step, dtype=np.int64)  # (n,) in slice order
        out = np.empty(len(positions), dtype=np.int32)  # (n,)
        if out.size == 0:
            return out
        order = np.argsort(positions, kind="stable")
        chunks = positions[order] // _CHUNK_IDS  # (n,) ascending
        bounds = np.flatnonzero(np.diff(chunks)) + 1
        for group in np.split(order, bounds):
            lo, hi = int(positions[group].min()), int(positions[group].max()) + 1
            out[group] = self._read_range(lo, hi)[positions[group] - lo]
        return out

    def _pread_into(self, row: np.ndarray, start: int) -> None:
        """Fills the contiguous int32 `row` with ids[start : start + len(row)]."""
        if row.size == 0:
            return  # memoryview cannot cast an empty array
        want = row.nbytes
        got = os.preadv(self._fd, [memoryview(row).cast("B")], self.data_offset + 4 * start)
        if got != want:
            raise TextgenError("index split is shorter than its header says", str(self.path))
