"""Assemble a large test corpus from the Python standard library's sources.

Concatenates the raw bytes of every ``.py`` file under the standard library
directory (``sysconfig.get_paths()["stdlib"]``, excluding ``site-packages``,
``dist-packages`` and ``__pycache__``) in sorted relative-path order,
repeating the whole list as many times as needed, until the target size is
reached; the output is truncated exactly at the target size.

Raw bytes may include genuine non-UTF-8 bytes (a few stdlib test files contain
them). With ``--utf8-only`` every file that does not decode as strict UTF-8 is
skipped, and the final truncation backs off to a character boundary (so the
file may be up to 3 bytes short of the target), making the output valid UTF-8.

The output is written to a temporary file in the destination directory and
renamed into place. One JSON object is printed::

    {"path", "bytes", "files", "passes", "utf8_valid", "sha256"}

where ``files`` is the number of distinct source files that contributed
bytes and ``passes`` the number of (possibly partial) passes over the list.

Usage::

    python3 scripts/make_corpus.py OUT --mb 100 [--utf8-only]
"""

from __future__ import annotations

import argparse
import codecs
import hashlib
import json
import os
import sys
import sysconfig
import tempfile
from pathlib import Path

EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})


def stdlib_sources(root: Path | None = None, utf8_only: bool = False) -> list[Path]:
    """List the standard library's ``.py`` files in sorted order.

    Args:
        root: Directory to scan; defaults to the running interpreter's stdlib.
        utf8_only: Drop files whose bytes are not valid UTF-8.

    Returns:
        Non-empty files, sorted by their POSIX path relative to ``root``.
    """
    base = Path(root or sysconfig.get_paths()["stdlib"])
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS]
        for name in filenames:
            if not name.endswith(".py"):
                continue
            path = Path(dirpath, name)
            if not path.is_file() or path.stat().st_size == 0:
                continue
            if utf8_only and not is_utf8(path.read_bytes()):
                continue
            found.append((path.relative_to(base).as_posix(), path))
    found.sort()
    return [p for _, p in found]


def is_utf8(data: bytes) -> bool:
    """Return whether ``data`` is valid (strict) UTF-8.

    Args:
        data: Bytes to check.

    Returns:
        True if ``data`` decodes as UTF-8.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def utf8_boundary(data: bytes, end: int) -> int:
    """Return the largest cut point ``<= end`` not inside a UTF-8 character.

    Args:
        data: UTF-8 bytes.
        end: Desired cut position, ``0 <= end <= len(data)``.

    Returns:
        ``end`` moved back past any continuation bytes (``0b10xxxxxx``).
    """
    while 0 < end < len(data) and (data[end] & 0xC0) == 0x80:
        end -= 1
    return end


def build(out: Path, target: int, utf8_only: bool = False) -> dict[str, object]:
    """Write the corpus to ``out`` and return its statistics.

    Args:
        out: Destination path.
        target: Target size in bytes.
        utf8_only: Skip non-UTF-8 files and keep the output valid UTF-8.

    Returns:
        Dict with ``path``, ``bytes``, ``files``, ``passes``, ``utf8_valid``
        and ``sha256``.

    Raises:
        RuntimeError: If no source files are found.
    """
    sources = stdlib_sources(utf8_only=utf8_only)
    if not sources:
        raise RuntimeError("no standard library .py files found")
    out.parent.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8_valid = True
    written = passes = 0
    truncated = False
    used: set[Path] = set()
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            while written < target:
                passes += 1
                for path in sources:
                    data = path.read_bytes()
                    room = target - written
                    truncated = len(data) >= room
                    if truncated:
                        cut = utf8_boundary(data, room) if utf8_only else room
                        data = data[:cut]
                    if data:
                        fh.write(data)
                        sha.update(data)
                        used.add(path)
                        written += len(data)
                        if utf8_valid:
                            try:
                                decoder.decode(data)
                            except UnicodeDecodeError:
                                utf8_valid = False
                    if truncated:
                        break
                if truncated:
                    break
        if utf8_valid:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                utf8_valid = False
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {
        "path": str(out),
        "bytes": written,
        "files": len(used),
        "passes": passes,
        "utf8_valid": utf8_valid,
        "sha256": sha.hexdigest(),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Process exit status.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output file")
    ap.add_argument("--mb", type=float, default=100.0, help="target size in MiB (2**20 bytes)")
    ap.add_argument(
        "--utf8-only",
        action="store_true",
        help="skip files that are not valid UTF-8; never split a character",
    )
    args = ap.parse_args(argv)
    if args.mb <= 0:
        ap.error("--mb must be positive")
    stats = build(args.out, int(args.mb * 1024 * 1024), args.utf8_only)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
