"""Writing files so that a failure is one line and leaves nothing half-written.

`writing(what, path)` turns a full disk (ENOSPC or a quota, as Python's `OSError`, TensorFlow's
`ResourceExhaustedError` or a library's message) into `no space left on device while writing
<what> (<path>)`, and any other `OSError` into `cannot write <what>: <reason> (<path>)`, after
running a cleanup that removes the temporary files of the failed write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from textgen.core.errors import TextgenError

_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXTS = ("No space left on device", "Disk quota exceeded")
_NEARLY_FULL_BYTES = 1 << 20  # an error without an errno on a disk this full is a full disk


def is_no_space(error: BaseException, path: str | Path | None = None) -> bool:
    """True when `error` says the disk (or the quota) is full.

    Args:
        error: Any exception raised while writing.
        path: Where it was writing: an `OSError` without an errno (numpy's "1000000 requested
            and 786400 written", h5py's) counts when that file system has < 1 MiB free.
    """
    if isinstance(error, OSError) and error.errno in _NO_SPACE_ERRNOS:
        return True
    if any(text in str(error) for text in _NO_SPACE_TEXTS):
        return True  # TensorFlow's ResourceExhaustedError and others that only say it
    if path is not None and isinstance(error, OSError) and error.errno is None:
        return free_bytes(path) < _NEARLY_FULL_BYTES
    return False


def free_bytes(path: str | Path) -> int:
    """Free bytes on the file system holding `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(candidate).free
    return 1 << 62


@contextlib.contextmanager
def writing(
    what: str, path: str | Path, *, cleanup: Callable[[], None] | None = None
) -> Iterator[None]:
    """Maps a failed write to one TextgenError, after `cleanup` removed what it left.

    Args:
        what: What is being written, e.g. `a checkpoint`.
        path: The file or dir written (named in the message).
        cleanup: Removes temporary files; called on any failure (Ctrl-C included).

    Raises:
        TextgenError: the disk is full, or another OSError (its reason is named).
    """
    try:
        yield
    except BaseException as e:
        if cleanup is not None:
            cleanup()
        if is_no_space(e, path):
            raise TextgenError(f"no space left on device while writing {what}", str(path)) from None
        if isinstance(e, OSError):
            reason = e.strerror or str(e).strip().splitlines()[0]
            raise TextgenError(f"cannot write {what}: {reason}", str(path)) from None
        raise


def write_atomic(path: Path, text: str, *, what: str | None = None) -> None:
    """Writes text to a temporary sibling, then renames it over `path`.

    Raises:
        TextgenError: the disk is full or the file cannot be written (nothing is left behind).
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with writing(what or path.name, path, cleanup=lambda: tmp.unlink(missing_ok=True)):
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)


def remove_files(paths: Iterator[Path] | list[Path]) -> None:
    """Removes files and dirs, ignoring those already gone."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
