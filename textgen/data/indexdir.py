"""An index dir on disk: checked, locked, built in a temporary sibling and renamed into place.

The temporary dir is `PARENT/.NAME.tmp-PID`; an old index being replaced is moved to
`PARENT/.NAME.old-PID` for a moment. Both are removed by the next build or read if a killed
process left them: none is in use while this process holds the index dir's lock.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from textgen.core.errors import TextgenError
from textgen.core.filewrite import is_no_space, remove_files


def check_index_dir(index_dir: Path) -> None:
    """Creates the index dir's parent (where its lock lives); refuses a file in the way."""
    try:
        index_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(e, index_dir) from None
    if index_dir.exists() and not index_dir.is_dir():
        raise TextgenError("index_dir exists and is not a directory", str(index_dir))


def _write_error(error: OSError, index_dir: Path) -> TextgenError:
    """The one-line error of a failed write under the index dir (a full disk says so)."""
    if is_no_space(error, index_dir):
        return TextgenError("no space left on device while writing the index", str(index_dir))
    return TextgenError(f"cannot write the index dir: {error.strerror or error}", str(index_dir))


def make_temp_dir(index_dir: Path) -> Path:
    """Creates `PARENT/.NAME.tmp-PID` to build into.

    Raises:
        TextgenError: index_dir holds files but no index (it is never replaced), or the dir
            cannot be made.
    """
    try:
        if (
            index_dir.is_dir()
            and not (index_dir / "meta.json").is_file()
            and any(index_dir.iterdir())
        ):
            # Replacing it would delete the user's files (e.g. data.index_dir=data).
            raise TextgenError(
                "index_dir is a non-empty directory that holds no index; refusing to replace it",
                str(index_dir),
            )
        tmp = index_dir.parent / f".{index_dir.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        return tmp
    except OSError as e:
        raise _write_error(e, index_dir) from None


def replace_dir(tmp: Path, target: Path) -> None:
    """Renames tmp to target, replacing an old index only after the new one is complete."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_temp_dirs(index_dir: Path) -> None:
    """Removes temp and old dirs that killed builds left: none is in use while the lock is held."""
    if index_dir.parent.is_dir():
        remove_files([*index_dir.parent.glob(f".{index_dir.name}.tmp-*"),
                      *index_dir.parent.glob(f".{index_dir.name}.old-*")])  # fmt: skip
