"""Tests for the pure helpers of scripts/make_corpora.py (no network, no apt, no pip)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import struct
import sys
import zlib
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_corpora.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_corpora", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


mc = _load_script()


# ----------------------------------------------------------------- text helpers


def test_normalize_text_newlines_whitespace_and_blank_ends() -> None:
    raw = "\n\r\n  Title  \r\nline one\t \r\n\r\n\rlast  \n\n\n"
    assert mc.normalize_text(raw) == "  Title\nline one\n\n\nlast\n"
    assert mc.normalize_text(" \n\t\n") == ""


def test_join_documents_two_blank_lines_and_drops_empty() -> None:
    joined = mc.join_documents(["A\nb  \n", "\n\n", "\nC\n\n"])
    assert joined == "A\nb\n\n\nC\n"
    assert mc.join_documents(["x", "y"], blank_lines=1) == "x\n\ny\n"


def test_cut_at_line_boundary_on_a_file(tmp_path: Path) -> None:
    src = tmp_path / "text.txt"
    src.write_bytes("first line\nsecond £ line\nthird\n".encode())
    data = src.read_bytes()
    assert mc.cut_at_line_boundary(data, len(data)) == data  # fits: unchanged
    assert mc.cut_at_line_boundary(data, 10_000) == data
    cut = mc.cut_at_line_boundary(data, len(data) - 1)
    assert cut == "first line\nsecond £ line\n".encode()
    # Just short of the second newline: only the first line fits.
    assert mc.cut_at_line_boundary(data, len(cut) - 1) == b"first line\n"
    assert mc.cut_at_line_boundary(data, 11) == b"first line\n"
    out = tmp_path / "sub" / "prefix.txt"
    mc.write_atomic(out, cut)
    assert out.read_bytes() == cut
    assert out.read_text(encoding="utf-8").endswith("\n")
    assert [p.name for p in out.parent.iterdir()] == ["prefix.txt"]  # no temp file left


def test_cut_at_line_boundary_refuses_when_no_line_fits() -> None:
    with pytest.raises(ValueError, match="no line ends"):
        mc.cut_at_line_boundary(b"a long first line\nx\n", 5)
    with pytest.raises(ValueError, match="positive"):
        mc.cut_at_line_boundary(b"a\n", 0)


def test_surname_table_to_list(tmp_path: Path) -> None:
    table = tmp_path / "dist.all.last"
    table.write_text(
        "SMITH          1.006  1.006      1\n"
        "JOHNSON        0.810  1.816      2\n"
        "\n"
        "smith          0.001  1.817      3\n"  # duplicate after lower-casing
        "O'BRIEN        0.001  1.818      4\n"  # not [a-z]+
        "WILLIAMS       0.699  2.515      5\n"
        "JONES          0.621  3.136      6\n"
    )
    names = mc.first_column(table.read_text())
    assert names == ["SMITH", "JOHNSON", "smith", "O'BRIEN", "WILLIAMS", "JONES"]
    assert mc.select_entries(names, 3) == ["smith", "johnson", "williams"]
    assert mc.select_entries(names, 4) == ["smith", "johnson", "williams", "jones"]
    with pytest.raises(ValueError, match="only 4 entries"):
        mc.select_entries(names, 5)


def test_text_stats() -> None:
    data = "ab£\nb\n".encode()
    stats = mc.text_stats(data)
    assert stats == {
        "bytes": 7,
        "chars": 6,
        "lines": 2,
        "distinct_chars": 4,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_jargon_lexicon_cut() -> None:
    text = (
        "                The Jargon File\n\nintro\n   0\n\n   (TM)\n"
        "  0\n\n   (TM)  \n\n   :(TM): //\n\n   An entry.\n\n\n"
        "Appendix\u00a0A.\u00a0Hacker Folklore\n\nfolklore\n"
    )
    assert mc.jargon_lexicon(text) == "  0\n\n   (TM)\n\n   :(TM): //\n\n   An entry.\n"
    with pytest.raises(ValueError, match="boundaries"):
        mc.jargon_lexicon("  0\nno appendix\n")


# ----------------------------------------------------------------- R data files


def _i(*values: int) -> bytes:
    return struct.pack(f">{len(values)}i", *values)


class _RWriter:
    """Just enough of R's XDR serialize() to build test fixtures."""

    def __init__(self) -> None:
        self.symbols: list[str] = []

    def charsxp(self, s: str | None) -> bytes:
        if s is None:
            return _i(9, -1)
        raw = s.encode()
        levels = 64 if raw.isascii() else 8  # ASCII_MASK / UTF8_MASK
        return _i((levels << 12) | 9, len(raw)) + raw

    def symbol(self, name: str) -> bytes:
        if name in self.symbols:  # later uses are back-references
            return _i(((self.symbols.index(name) + 1) << 8) | 255)
        self.symbols.append(name)
        return _i(1) + self.charsxp(name)

    def names_attr(self, names: list[str]) -> bytes:
        return _i(2 | 1 << 10) + self.symbol("names") + self.strsxp(names) + _i(254)

    def strsxp(self, values: list[str | None], names: list[str] | None = None) -> bytes:
        flags = 16 | (1 << 9 if names is not None else 0)
        body = _i(flags, len(values)) + b"".join(self.charsxp(v) for v in values)
        return body + (self.names_attr(names) if names is not None else b"")

    def vecsxp(self, items: list[bytes], names: list[str]) -> bytes:
        return _i(19 | 1 << 9, len(items)) + b"".join(items) + self.names_attr(names)

    def serialize(self, body: bytes) -> bytes:
        return b"X\n" + _i(3, 0x040201, 0x030500, 5) + b"UTF-8" + body


def test_r_unserialize_character_vector() -> None:
    w = _RWriter()
    data = w.serialize(w.strsxp(["Chapter 1", "", "£5 a year", None], names=list("abcd")))
    value = mc.r_unserialize(data)
    assert value.value == ["Chapter 1", "", "£5 a year", None]
    assert value.attrs == {"names": ["a", "b", "c", "d"]}
    assert mc.r_unserialize(w.serialize(w.strsxp(["x"]))) == ["x"]
    with pytest.raises(ValueError, match="XDR"):
        mc.r_unserialize(b"A\n" + data[2:])


def test_read_r_lazyload_from_files(tmp_path: Path) -> None:
    objects = {"emma": ["EMMA", "", "By Jane Austen"], "persuasion": ["Persuasion"]}
    rdb = b""
    offsets: list[bytes] = []
    for lines in objects.values():
        payload = _RWriter().serialize(_RWriter().strsxp(list(lines)))
        record = struct.pack(">I", len(payload)) + zlib.compress(payload)
        offsets.append(_i(13, 2, len(rdb), len(record)))  # INTSXP c(offset, length)
        rdb += record
    w = _RWriter()
    index = w.vecsxp(
        [
            w.vecsxp(offsets, list(objects)),
            w.vecsxp([], []),
            _i(10, 1, 1),  # LGLSXP TRUE: zlib-compressed records
        ],
        ["variables", "references", "compressed"],
    )
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(w.serialize(index)))
    (tmp_path / "Rdata.rdb").write_bytes(rdb)
    loaded = mc.read_r_lazyload(
        (tmp_path / "Rdata.rdx").read_bytes(), (tmp_path / "Rdata.rdb").read_bytes()
    )
    assert loaded == objects
