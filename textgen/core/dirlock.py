"""One writer per run dir and per index dir: an OS lock (`fcntl.flock`) on a lock file.

The kernel drops a flock when its process dies, however it dies, so a `kill -9` never leaves a
stale lock behind (only, at worst, an unlocked file). The exclusive holder writes its PID into the
file, so the one refused can name it. The last holder out removes the file; a process that got a
lock on a file removed or replaced meanwhile (its inode is no longer the path's) tries again.

- The run dir's lock is `RUN/.lock`, taken by `train` (the chief only) before it writes anything
  there; a second `train` is refused at once. `sample` and `evaluate` never take it.
- An index dir is replaced by a rename, so its lock lives beside it: `PARENT/.NAME.lock`.
  Building takes it exclusively, reading takes it shared, and both wait for the other: two
  processes that need the same fresh index build it once.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from textgen.core.errors import TextgenError

_POLL_S = 0.2  # how often a waiting process tries the lock again


class DirLock:
    """An exclusive or shared flock on `lock_file`, held by this process until `release`.

    Args:
        lock_file: The file to lock (created if missing, never removed).
        what: What it guards, for messages, e.g. `run dir`.
        where: The path that messages name.
    """

    def __init__(self, lock_file: str | Path, *, what: str, where: str | Path) -> None:
        self.lock_file, self.what, self.where = Path(lock_file), what, str(where)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(
        self,
        *,
        shared: bool = False,
        wait: bool = False,
        on_wait: Callable[[int | None], None] | None = None,
    ) -> DirLock:
        """Takes the lock, or says which process holds it.

        Args:
            shared: A shared (reader) lock instead of an exclusive one.
            wait: Wait for the holder to finish instead of refusing.
            on_wait: Called once with the holder's PID (None if unknown) when waiting starts.

        Returns:
            self, holding the lock.

        Raises:
            TextgenError: `<what> is in use by process PID (<where>)` when not waiting, or the
                lock file cannot be created.
        """
        if self._fd is not None:
            return self
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        told = False
        while True:
            fd = self._open()
            while not _try_flock(fd, mode):
                holder = read_holder(self.lock_file)
                if not wait:
                    os.close(fd)
                    by = f"process {holder}" if holder else "another process"
                    raise TextgenError(f"{self.what} is in use by {by}", self.where)
                if not told and on_wait is not None:
                    on_wait(holder)
                told = True
                time.sleep(_POLL_S)
            if _is_the_file_at(fd, self.lock_file):
                break
            os.close(fd)  # removed or replaced by the last holder while we waited: lock anew
        if not shared:  # the holder's PID, for the message of whoever is refused
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Lets go of the lock; the last holder removes the lock file."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:  # exclusive (at once if this was one): nobody else holds it, so remove the file
            if _try_flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB) and _is_the_file_at(
                fd, self.lock_file
            ):
                self.lock_file.unlink()
        except OSError:
            pass  # the file stays: harmless, the next holder reuses it
        finally:
            os.close(fd)

    def __enter__(self) -> DirLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()

    def _open(self) -> int:
        try:
            self.lock_file.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise TextgenError(
                f"cannot lock the {self.what}: {e.strerror or e}", self.where
            ) from None


def _try_flock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode)
    except BlockingIOError:
        return False
    return True


def _is_the_file_at(fd: int, path: Path) -> bool:
    """True when the open file `fd` is still the file at `path` (not removed or replaced)."""
    try:
        on_disk, opened = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def read_holder(lock_file: str | Path) -> int | None:
    """The PID written into a lock file by its last exclusive holder, or None."""
    try:
        text = Path(lock_file).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def run_dir_lock(run_dir: str | Path) -> DirLock:
    """The lock of a run dir (`RUN/.lock`); the dir must exist to take it."""
    return DirLock(Path(run_dir) / ".lock", what="run dir", where=run_dir)


def index_dir_lock(index_dir: str | Path) -> DirLock:
    """The lock of an index dir, beside it (`PARENT/.NAME.lock`): the dir itself is renamed."""
    index_dir = Path(index_dir)
    return DirLock(index_dir.parent / f".{index_dir.name}.lock", what="index dir", where=index_dir)
