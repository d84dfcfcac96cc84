"""An index split (a 1-D int32 `.npy` file) read with `pread`, so no page stays mapped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from textgen.core.errors import TextgenError


class TokenFile:
    """An int32 `.npy` vector read by `pread`: no pages stay mapped into the process.

    Args:
        path: A 1-D int32 `.npy` file (an index split).
    """

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

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, where: slice) -> np.ndarray:
        """ids[a:b] (a slice with step 1), read from the file."""
        if not isinstance(where, slice) or where.step not in (None, 1):
            raise TypeError("a TokenFile is read by slices with step 1, e.g. split[10:20]")
        start, stop, _ = where.indices(self.length)
        return self.read(np.array([start]), max(stop - start, 0))[0]  # (stop - start,)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """All ids of the split in memory (for small splits and tests)."""
        ids = self[:]
        return ids if dtype is None else ids.astype(dtype)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def read(self, starts: np.ndarray, span: int) -> np.ndarray:
        """Returns ids[s : s + span] for each start s."""
        out = np.empty((len(starts), span), dtype=np.int32)  # (windows, span)
        if out.size == 0:
            return out  # memoryview cannot cast an empty array
        view = memoryview(out).cast("B")
        row_bytes = span * 4
        for i, start in enumerate(starts.tolist()):
            got = os.preadv(
                self._fd, [view[i * row_bytes : (i + 1) * row_bytes]], self.data_offset + 4 * start
            )
            if got != row_bytes:
                raise TextgenError("index split is shorter than its header says", str(self.path))
        return out
