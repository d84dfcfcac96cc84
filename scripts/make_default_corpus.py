"""Build the default training corpus ``data/kjv.txt`` from Debian's KJV Bible.

The King James Version text (public domain) ships in Debian's ``bible-kjv-text``
package as a compressed data file (``/usr/lib/bible.data``) that is read with
the ``bible`` program from the ``bible-kjv`` package (the Bible Retrieval System
by Chip Chapin). This script dumps every verse with ``bible`` and writes it as
plain UTF-8 prose::

    Genesis

    In the beginning God created the heaven and the earth.
    ...

One heading line per book (the book name), a blank line, one line per verse
without chapter:verse references, one blank line between chapters and two
blank lines before each new book. Newlines are LF and trailing whitespace is
stripped; the verse text is otherwise verbatim.

Usage::

    python3 scripts/make_default_corpus.py data/kjv.txt

If ``bible`` is not on ``PATH`` the script runs ``apt-get install -y bible-kjv``
(requires root). It prints one JSON object with the output path, size in
bytes, number of books and verses, and the SHA-256 of the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FULL_RANGE = "gen1:1-rev22:21"
EXPECTED_BOOKS = 66
EXPECTED_VERSES = 31102
FIRST_VERSE = "In the beginning God created the heaven and the earth."
LAST_VERSE = "The grace of our Lord Jesus Christ be with you all. Amen."

# "-f" (plain) output: "Ge1:1 In the beginning ...", "1Sm3:4 ...", "SSol1:1 ...".
_PLAIN_RE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
# Pretty output headings: "Genesis 1", "1 Samuel 3", "Song of Solomon 8".
_HEADING_RE = re.compile(r"^(\S.*?) (\d+)$")

Verse = tuple[str, int, int, str]


def ensure_bible() -> str:
    """Return the path of the ``bible`` program, installing it if needed.

    Returns:
        Absolute path of the ``bible`` executable.

    Raises:
        RuntimeError: If ``bible`` is missing and cannot be installed.
    """
    exe = shutil.which("bible")
    if exe:
        return exe
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "bible-kjv"]
    if subprocess.run(cmd, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=False)
        subprocess.run(cmd, env=env, check=True)
    exe = shutil.which("bible")
    if not exe:
        raise RuntimeError("could not find or install the 'bible' program")
    return exe


def _run_bible(exe: str, *args: str) -> str:
    """Run ``bible`` with ``args`` and return its stdout as text."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["LC_ALL"] = "C"
    proc = subprocess.run(
        [exe, *args],
        cwd="/",  # bible looks for bible.data in the cwd first; avoid strays
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        check=True,
    )
    return proc.stdout.decode("utf-8")


def read_verses(exe: str) -> list[Verse]:
    """Dump every verse of the KJV with ``bible``.

    The plain (``-f``) output gives one verse per line with an abbreviated
    reference; the pretty-printed output (with a very wide line limit) gives
    the full book names as chapter headings, which are matched to the
    abbreviations by order of appearance.

    Args:
        exe: Path of the ``bible`` program.

    Returns:
        ``(book_name, chapter, verse, text)`` tuples in canonical order.

    Raises:
        ValueError: If the program output is not in the expected format.
    """
    plain = _run_bible(exe, "-f", FULL_RANGE).splitlines()
    pretty = _run_bible(exe, "-l1000000", FULL_RANGE).splitlines()

    names: list[str] = []
    for line in pretty:
        m = _HEADING_RE.match(line)
        if m and (not names or names[-1] != m.group(1)):
            names.append(m.group(1))

    abbrevs: list[str] = []
    parsed: list[tuple[str, int, int, str]] = []
    for line in plain:
        m = _PLAIN_RE.match(line)
        if not m:
            raise ValueError(f"unexpected line from bible -f: {line[:80]!r}")
        abbr, chap, verse, text = m.groups()
        if not abbrevs or abbrevs[-1] != abbr:
            abbrevs.append(abbr)
        parsed.append((abbr, int(chap), int(verse), text.rstrip()))

    if len(names) != len(abbrevs):
        raise ValueError(f"{len(names)} book headings vs {len(abbrevs)} abbreviations")
    full = dict(zip(abbrevs, names, strict=True))
    return [(full[a], c, v, t) for a, c, v, t in parsed]


def format_corpus(verses: list[Verse]) -> str:
    """Format verses as prose: book headings, one verse per line.

    Args:
        verses: ``(book_name, chapter, verse, text)`` tuples in order.

    Returns:
        The corpus text, LF newlines, ending with a single newline.
    """
    lines: list[str] = []
    prev_book: str | None = None
    prev_chap = 0
    for book, chap, _verse, text in verses:
        if book != prev_book:
            if prev_book is not None:
                lines += ["", ""]
            lines += [book, ""]
            prev_book, prev_chap = book, chap
        elif chap != prev_chap:
            lines.append("")
            prev_chap = chap
        lines.append(text)
    return "\n".join(line.rstrip() for line in lines) + "\n"


def check(verses: list[Verse]) -> None:
    """Sanity-check the dumped verses.

    Args:
        verses: ``(book_name, chapter, verse, text)`` tuples in order.

    Raises:
        ValueError: If counts or the first/last verse are not as expected.
    """
    books = len({v[0] for v in verses})
    if books != EXPECTED_BOOKS or len(verses) != EXPECTED_VERSES:
        raise ValueError(f"got {books} books / {len(verses)} verses")
    if verses[0][3] != FIRST_VERSE or verses[-1][3] != LAST_VERSE:
        raise ValueError("first or last verse does not match")


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


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Process exit status.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output file, e.g. data/kjv.txt")
    args = ap.parse_args(argv)

    verses = read_verses(ensure_bible())
    check(verses)
    data = format_corpus(verses).encode("utf-8")
    write_atomic(args.out, data)
    print(
        json.dumps(
            {
                "path": str(args.out),
                "bytes": len(data),
                "books": len({v[0] for v in verses}),
                "verses": len(verses),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
