"""Writing a 1-D int32 `.npy` file as a stream: a fixed-size header, ids appended on a thread.

The header is written first with a placeholder shape and rewritten once the length is known
(it is padded to a fixed `HEADER_BYTES`, so its size never changes); `split_tail` then moves the
last ids into a second file, which is how the indexer makes `val.npy` without a second pass.
"""

from __future__ import annotations

import queue
import shutil
import threading
from pathlib import Path

import numpy as np

HEADER_BYTES = 128  # fixed .npy header size, so the shape can be rewritten once known


def npy_header(length: int) -> bytes:
    """A version 1.0 .npy header for an int32 vector, padded to a fixed HEADER_BYTES."""
    fields = f"{{'descr': '<i4', 'fortran_order': False, 'shape': ({length},), }}"
    preamble = b"\x93NUMPY\x01\x00"
    pad = HEADER_BYTES - len(preamble) - 2 - len(fields) - 1
    return (
        preamble + (HEADER_BYTES - 10).to_bytes(2, "little") + (fields + " " * pad + "\n").encode()
    )


def split_tail(train_path: Path, val_path: Path, train_tokens: int, val_tokens: int) -> None:
    """Moves the last `val_tokens` ids of train.npy into val.npy and fixes both headers."""
    cut = HEADER_BYTES + 4 * train_tokens
    with open(train_path, "r+b") as train, open(val_path, "wb") as val:
        val.write(npy_header(val_tokens))
        train.seek(cut)
        shutil.copyfileobj(train, val, 4 << 20)
        train.truncate(cut)
        train.seek(0)
        train.write(npy_header(train_tokens))


class BackgroundWriter:
    """Writes arrays to a file on a second thread (numpy releases the GIL while writing).

    Arrays are copied into a fixed ring of reused buffers, so the writer thread never frees
    memory the main thread allocated: RSS stays flat however many chunks pass through.
    """

    def __init__(self, file, *, buffers: int = 3) -> None:
        self._file = file
        self._free: queue.Queue = queue.Queue()
        for _ in range(buffers):
            self._free.put(np.empty(0, np.int32))
        self._pending: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BackgroundWriter:
        self._thread.start()
        return self

    def put(self, array: np.ndarray) -> None:
        """Queues a copy of `array` for writing; re-raises a failure of an earlier write."""
        if self._error is not None:
            raise self._error
        buffer = self._free.get()  # blocks while all buffers wait to be written
        if len(buffer) < len(array):
            buffer = np.empty(max(len(array), 2 * len(buffer)), np.int32)
        np.copyto(buffer[: len(array)], array)
        self._pending.put((buffer, len(array)))

    def __exit__(self, *exc) -> None:
        self._pending.put(None)
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error

    def _run(self) -> None:
        while (item := self._pending.get()) is not None:
            buffer, length = item
            if self._error is None:
                try:  # file.write, not tofile: a full disk is an OSError with its errno
                    self._file.write(memoryview(buffer[:length]).cast("B"))
                except BaseException as e:  # surfaced to the producer by put/__exit__
                    self._error = e
            self._free.put(buffer)
