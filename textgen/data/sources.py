"""Finding corpus files and reading them as UTF-8 text in bounded chunks.

A source is read twice by the indexer (scan, then encode), each time in `CHUNK_BYTES` pieces, so
peak memory depends on the chunk size, never on the corpus size.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from textgen.core.errors import TextgenError

CHUNK_BYTES = 1 << 20  # 1 MiB: amortizes numpy calls; per-chunk buffers stay ~10 MB
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class SourceFile:
    """One corpus file as the index records it."""

    path: str
    size: int
    mtime_ns: int
    sha256: str = ""

    def same_stat(self, other: SourceFile) -> bool:
        """True when path, size and modification time all match."""
        return (self.path, self.size, self.mtime_ns) == (other.path, other.size, other.mtime_ns)


def find_sources(spec: str) -> list[SourceFile]:
    """Resolves `data.path` (a file, a directory or a glob) to files in a stable, sorted order.

    Raises:
        TextgenError: nothing found at `spec`.
    """
    if _GLOB_CHARS & set(spec):
        paths = [p for p in sorted(glob.glob(spec, recursive=True)) if os.path.isfile(p)]
        if not paths:
            raise TextgenError("no text files match the glob", spec)
    elif os.path.isdir(spec):
        paths = sorted(
            os.path.join(root, name)
            for root, dirs, names in os.walk(spec)
            for name in names
            if not name.startswith(".") and not _hidden(os.path.relpath(root, spec))
        )
        if not paths:
            raise TextgenError("no text files in the directory", spec)
    elif os.path.isfile(spec):
        paths = [spec]
    else:
        raise TextgenError("corpus path not found", spec)
    return [stat_source(p) for p in paths]


def _hidden(relative_dir: str) -> bool:
    return any(part.startswith(".") and part != "." for part in Path(relative_dir).parts)


def stat_source(path: str) -> SourceFile:
    """Returns the path, size and mtime of one file (no hash)."""
    st = os.stat(path)
    return SourceFile(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)


def hash_file(path: str) -> str:
    """Returns the SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class ReplacementCounter:
    """A codecs error handler that substitutes U+FFFD and counts how often it did."""

    name = "textgen-count-replace"

    def __init__(self) -> None:
        self.count = 0
        codecs.register_error(self.name, self)

    def __call__(self, error: UnicodeDecodeError) -> tuple[str, int]:
        self.count += 1
        return "\ufffd", error.end


def read_text_chunks(
    path: str, *, encoding_errors: str, counter: ReplacementCounter | None = None, hasher=None
) -> Iterator[tuple[str, int]]:
    """Yields (text, bytes read so far) of one UTF-8 file in chunks; never splits a character.

    Args:
        path: The file.
        encoding_errors: `strict` (invalid UTF-8 is an error naming the byte offset) or `replace`.
        counter: Counts replacements under `replace`.
        hasher: A hashlib object fed the raw bytes, if given.

    Raises:
        TextgenError: invalid UTF-8 under `strict`, a NUL byte (binary file), or an unreadable file.
    """
    errors = "strict" if encoding_errors == "strict" else (counter or ReplacementCounter()).name
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    consumed = 0
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(CHUNK_BYTES)
                nul = chunk.find(b"\x00")
                if nul >= 0:
                    raise TextgenError(
                        f"binary file, not text (NUL byte at offset {consumed + nul})", path
                    )
                if hasher is not None:
                    hasher.update(chunk)
                pending = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as e:
                    offset = consumed - pending + e.start
                    raise TextgenError(
                        f"invalid UTF-8 at byte offset {offset} "
                        "(set data.encoding_errors=replace to substitute U+FFFD)",
                        path,
                    ) from None
                consumed += len(chunk)
                if text or chunk:
                    yield text, consumed
                if not chunk:
                    return
    except OSError as e:
        raise TextgenError(f"cannot read corpus file: {e.strerror or e}", path) from None
