"""The indexer: exact round trips, splits, staleness, and nothing half-written left behind."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_text, write_corpus

from textgen.core.config import DataConfig, load_config
from textgen.core.errors import TextgenError
from textgen.data import sources
from textgen.data.corpus import index_corpus, load_index

TEXT = "Première ligne: café, naïve.\r\nSecond line — 東京 😀 e\u0301\n\tTabbed third line.\n" * 20


def data_cfg(path: Path | str, index_dir: Path | str, *extra: str) -> DataConfig:
    """The data section for `path` -> `index_dir`, val_fraction 0.1 unless overridden."""
    words = [f"data.path={path}", f"data.index_dir={index_dir}", "data.val_fraction=0.1"]
    return load_config(None, [*words, *extra]).data


def decoded(index) -> str:
    """The text of train ++ val."""
    return index.tokenizer.decode(np.concatenate([index.train, index.val]))


def stray_entries(parent: Path) -> list[str]:
    """Hidden leftovers of a build (temporary or old index dirs) in `parent`."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def file_state(directory: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file in an index dir: a rewrite changes them."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def bump_mtime(path: Path, seconds: float = 10) -> None:
    st = path.stat()
    ns = st.st_mtime_ns + int(seconds * 1e9)
    os.utime(path, ns=(ns, ns))


# Round trips ---------------------------------------------------------------------------------


def test_single_file_round_trip_and_split(tmp_path):
    corpus = write_corpus(tmp_path, TEXT)
    index, built = index_corpus(data_cfg(corpus, tmp_path / "idx"))
    assert built
    assert decoded(index) == TEXT
    n = len(TEXT)
    assert len(index.train) + len(index.val) == n
    assert len(index.val) == round(n * 0.1)  # val is the last val_fraction
    assert index.tokenizer.decode(index.val) == TEXT[-len(index.val) :]
    assert index.tokenizer.decode(index.train) == TEXT[: len(index.train)]
    counts = index.meta["counts"]
    assert counts["chars"] == counts["tokens"] == n
    assert counts["replaced_chars"] == 0
    assert index.vocab_size == len(set(TEXT)) + 1


def test_index_files_and_meta(tmp_path):
    corpus = write_corpus(tmp_path, TEXT)
    index, _ = index_corpus(data_cfg(corpus, tmp_path / "idx"))
    names = {p.name for p in (tmp_path / "idx").iterdir()}
    assert names == {"train.npy", "val.npy", "meta.json", "tokenizer.json"}
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text(encoding="utf-8"))
    assert meta == index.meta
    assert meta["tokenizer"]["kind"] == "char"
    [source] = meta["sources"]
    assert source["path"] == str(corpus)
    assert source["size"] == corpus.stat().st_size
    assert source["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert stray_entries(tmp_path) == []


def test_splits_are_int32_npy_files_read_by_slices(tmp_path):
    corpus = write_corpus(tmp_path, TEXT)
    index, _ = index_corpus(data_cfg(corpus, tmp_path / "idx"))
    for name, split in (("train", index.train), ("val", index.val)):
        # Plain numpy opens the files as read-only memmaps: they are ordinary .npy files.
        mapped = np.load(tmp_path / "idx" / f"{name}.npy", mmap_mode="r")
        assert mapped.dtype == np.int32 and mapped.ndim == 1
        assert not mapped.flags.writeable
        assert len(split) == len(mapped)
        assert np.array_equal(split[3:40], mapped[3:40])  # slices are read from the file
        assert np.array_equal(np.asarray(split), mapped)
        with pytest.raises(TypeError):
            split[0] = 1  # the index is read-only


def test_directory_sorted_nested_hidden_skipped(tmp_path):
    root = tmp_path / "books"
    write_corpus(root, "first file, no newline at the end", "01.txt")
    write_corpus(root, "nested\nfile ✓\n", "02/inner.txt")
    write_corpus(root, "third\r\n", "03.txt")
    write_corpus(root, "HIDDEN FILE", ".hidden.txt")
    write_corpus(root, "HIDDEN DIR", ".git/objects.txt")
    write_corpus(root, "HIDDEN NESTED", "02/.swap")
    index, _ = index_corpus(data_cfg(root, tmp_path / "idx"))
    expected = "first file, no newline at the end" + "nested\nfile ✓\n" + "third\r\n"
    assert decoded(index) == expected
    assert [Path(s["path"]).relative_to(root).as_posix() for s in index.meta["sources"]] == [
        "01.txt",
        "02/inner.txt",
        "03.txt",
    ]


def test_glob(tmp_path):
    root = tmp_path / "mixed"
    write_corpus(root, "bravo\n", "b.txt")
    write_corpus(root, "alpha\n", "a.txt")
    write_corpus(root, "NOT MATCHED\n", "notes.md")
    write_corpus(root, "deep\n", "sub/c.txt")
    index, _ = index_corpus(data_cfg(root / "*.txt", tmp_path / "idx", "data.val_fraction=0.3"))
    assert decoded(index) == "alpha\nbravo\n"
    index, _ = index_corpus(data_cfg(root / "**" / "*.txt", tmp_path / "idx2"))
    assert decoded(index) == "alpha\nbravo\ndeep\n"


def test_sentencepiece_index_round_trip(tmp_path):
    root = tmp_path / "sp"
    text_a = synthetic_text(lines=1500, seed=3)
    text_b = (
        "Windows line\r\nends here\r\n" + synthetic_text(lines=1500, seed=4) + "no final newline"
    )
    write_corpus(root, text_a, "a.txt")
    write_corpus(root, text_b, "b.txt")
    cfg = data_cfg(root, tmp_path / "idx", "data.tokenizer=sentencepiece", "data.sp_vocab_size=400")
    index, built = index_corpus(cfg)
    assert built
    assert index.meta["tokenizer"] == {"kind": "sentencepiece", "vocab_size": 400}
    assert (tmp_path / "idx" / "tokenizer.model").is_file()
    assert decoded(index) == text_a + text_b
    assert index.meta["counts"]["chars"] == len(text_a + text_b)
    assert index.meta["counts"]["tokens"] < len(text_a + text_b)  # pieces, not chars
    again, built = index_corpus(cfg)
    assert not built
    assert decoded(again) == text_a + text_b


def test_sentencepiece_vocab_too_large_leaves_nothing(tmp_path):
    corpus = write_corpus(tmp_path, "tiny corpus\nof two lines\n" * 3)
    cfg = data_cfg(corpus, tmp_path / "idx", "data.tokenizer=sentencepiece")
    with pytest.raises(TextgenError, match=r"data\.sp_vocab_size"):
        index_corpus(cfg)
    assert not (tmp_path / "idx").exists()
    assert stray_entries(tmp_path) == []


def test_chunk_boundaries_never_split_a_character(tmp_path, monkeypatch):
    # 7-byte chunks cut through 2-, 3- and 4-byte UTF-8 sequences everywhere.
    monkeypatch.setattr(sources, "CHUNK_BYTES", 7)
    text = "aé東😀\r\n" * 50 + "end"
    corpus = write_corpus(tmp_path, text)
    index, _ = index_corpus(data_cfg(corpus, tmp_path / "idx"))
    assert decoded(index) == text
    assert index.meta["sources"][0]["sha256"] == hashlib.sha256(text.encode()).hexdigest()


def test_progress_reaches_the_total(tmp_path):
    corpus = write_corpus(tmp_path, TEXT)
    calls: list[tuple[int, int]] = []
    index_corpus(data_cfg(corpus, tmp_path / "idx"), progress=lambda d, t: calls.append((d, t)))
    assert calls
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert calls[-1][0] == calls[-1][1] > 0


# Encoding errors -----------------------------------------------------------------------------


def test_replace_substitutes_and_counts(tmp_path):
    raw = b"good start \xff\xfe middle \xc3 and a cut-off euro \xe2\x82 end\n" + b"ok line\n" * 30
    corpus = write_corpus(tmp_path, raw)
    index, _ = index_corpus(data_cfg(corpus, tmp_path / "idx", "data.encoding_errors=replace"))
    expected = raw.decode("utf-8", "replace")
    assert decoded(index) == expected
    assert index.meta["counts"]["replaced_chars"] == expected.count("\ufffd") >= 4


def test_strict_names_the_byte_offset_and_file(tmp_path):
    corpus = write_corpus(tmp_path, b"0123456789\xff" + b"more text\n" * 10, "bad file.txt")
    with pytest.raises(TextgenError) as e:
        index_corpus(data_cfg(corpus, tmp_path / "idx"))
    assert "offset 10" in str(e.value)
    assert str(corpus) in str(e.value)
    assert "data.encoding_errors=replace" in str(e.value)  # tells the user the way out
    assert not (tmp_path / "idx").exists()


def test_strict_offset_in_a_later_chunk_and_at_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_BYTES", 8)
    corpus = write_corpus(tmp_path, "é".encode() * 20 + b"\x80" + b"tail")
    with pytest.raises(TextgenError, match=r"offset 40\b"):
        index_corpus(data_cfg(corpus, tmp_path / "idx"))
    truncated = write_corpus(tmp_path, b"abcdefghijk\xe2\x82", "truncated.txt")
    with pytest.raises(TextgenError, match=r"offset 11\b"):
        index_corpus(data_cfg(truncated, tmp_path / "idx"))


def test_binary_file_is_rejected(tmp_path):
    corpus = write_corpus(tmp_path, b"looks like text\x00\x01\x02")
    with pytest.raises(TextgenError, match="binary file") as e:
        index_corpus(data_cfg(corpus, tmp_path / "idx", "data.encoding_errors=replace"))
    assert str(corpus) in str(e.value)


# Staleness -----------------------------------------------------------------------------------


def test_second_run_is_a_no_op(tmp_path):
    corpus = write_corpus(tmp_path, TEXT)
    cfg = data_cfg(corpus, tmp_path / "idx")
    index_corpus(cfg)
    before = file_state(tmp_path / "idx")
    index, built = index_corpus(cfg)
    assert not built
    assert file_state(tmp_path / "idx") == before
    assert decoded(index) == TEXT


def test_touched_but_unchanged_source_is_a_no_op(tmp_path):
    corpus = write_corpus(tmp_path, TEXT)
    cfg = data_cfg(corpus, tmp_path / "idx")
    index_corpus(cfg)
    before = file_state(tmp_path / "idx")
    bump_mtime(corpus)
    _, built = index_corpus(cfg)
    assert not built
    assert file_state(tmp_path / "idx") == before


def test_force_rebuilds(tmp_path):
    corpus = write_corpus(tmp_path, TEXT)
    cfg = data_cfg(corpus, tmp_path / "idx")
    index_corpus(cfg)
    index, built = index_corpus(cfg, force=True)
    assert built
    assert decoded(index) == TEXT
    assert stray_entries(tmp_path) == []


@pytest.mark.parametrize("same_size", [True, False])
def test_changed_source_rebuilds(tmp_path, same_size):
    corpus = write_corpus(tmp_path, TEXT)
    cfg = data_cfg(corpus, tmp_path / "idx")
    index_corpus(cfg)
    new_text = TEXT.replace("Second", "Deuxie") if same_size else TEXT + "one more line\n"
    assert len(new_text.encode()) == len(TEXT.encode()) or not same_size
    write_corpus(tmp_path, new_text)
    bump_mtime(corpus)
    index, built = index_corpus(cfg)
    assert built
    assert decoded(index) == new_text
    assert stray_entries(tmp_path) == []


def test_adding_or_removing_a_source_rebuilds(tmp_path):
    root = tmp_path / "dir"
    write_corpus(root, "alpha text\n" * 5, "a.txt")
    write_corpus(root, "bravo text\n" * 5, "b.txt")
    cfg = data_cfg(root, tmp_path / "idx")
    index_corpus(cfg)
    write_corpus(root, "charlie text\n" * 5, "c.txt")
    index, built = index_corpus(cfg)
    assert built
    assert decoded(index) == "alpha text\n" * 5 + "bravo text\n" * 5 + "charlie text\n" * 5
    (root / "a.txt").unlink()
    index, built = index_corpus(cfg)
    assert built
    assert decoded(index) == "bravo text\n" * 5 + "charlie text\n" * 5
    _, built = index_corpus(cfg)
    assert not built


@pytest.mark.parametrize(
    "change",
    [
        "data.val_fraction=0.2",
        "data.tokenizer=sentencepiece",
        "data.encoding_errors=replace",
    ],
)
def test_changed_settings_rebuild(tmp_path, change):
    corpus = write_corpus(tmp_path, synthetic_text(lines=800, seed=5))
    extra = ["data.sp_vocab_size=400"]
    index_corpus(data_cfg(corpus, tmp_path / "idx", *extra))
    cfg = data_cfg(corpus, tmp_path / "idx", *extra, change)
    index, built = index_corpus(cfg)
    assert built
    assert decoded(index) == corpus.read_text(encoding="utf-8")
    key, value = change.removeprefix("data.").split("=")
    assert str(index.meta["settings"][key]) == value
    _, built = index_corpus(cfg)
    assert not built


def test_window_too_long_for_a_current_index_is_still_an_error(tmp_path):
    corpus = write_corpus(tmp_path, TEXT)
    cfg = data_cfg(corpus, tmp_path / "idx")
    index, _ = index_corpus(cfg)
    with pytest.raises(TextgenError, match="val split"):
        index_corpus(cfg, min_split_tokens=len(index.val) + 1)
    assert load_index(tmp_path / "idx").meta == index.meta  # the good index is kept


# Failures leave nothing half-written ---------------------------------------------------------


def test_failure_mid_way_leaves_no_index_and_no_temp_dir(tmp_path):
    root = tmp_path / "dir"
    write_corpus(root, "a perfectly good first file\n" * 10, "01.txt")
    write_corpus(root, b"second file is \xff broken\n", "02.txt")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(TextgenError, match=r"02\.txt"):
        index_corpus(data_cfg(root, out / "idx"))
    assert list(out.iterdir()) == []


def test_good_index_survives_a_failed_rebuild(tmp_path):
    root = tmp_path / "dir"
    write_corpus(root, "a perfectly good first file\n" * 10, "01.txt")
    cfg = data_cfg(root, tmp_path / "idx")
    index_corpus(cfg)
    before = file_state(tmp_path / "idx")
    write_corpus(root, b"\xffbroken\n", "02.txt")
    with pytest.raises(TextgenError, match="invalid UTF-8"):
        index_corpus(cfg)
    assert file_state(tmp_path / "idx") == before
    assert decoded(load_index(tmp_path / "idx")) == "a perfectly good first file\n" * 10
    assert stray_entries(tmp_path) == []


def test_split_too_short_leaves_nothing(tmp_path):
    corpus = write_corpus(tmp_path, "short text\n" * 10)
    with pytest.raises(TextgenError, match="fewer than one window") as e:
        index_corpus(data_cfg(corpus, tmp_path / "idx"), min_split_tokens=50)
    assert "windows.maxlen" in str(e.value)
    assert not (tmp_path / "idx").exists()
    assert stray_entries(tmp_path) == []


def test_empty_corpus(tmp_path):
    corpus = write_corpus(tmp_path, "")
    with pytest.raises(TextgenError, match="empty"):
        index_corpus(data_cfg(corpus, tmp_path / "idx"))
    assert not (tmp_path / "idx").exists()
    assert stray_entries(tmp_path) == []


@pytest.mark.parametrize("kind", ["missing", "empty_glob", "empty_dir", "hidden_only_dir"])
def test_nothing_to_index(tmp_path, kind):
    target = {
        "missing": tmp_path / "nope.txt",
        "empty_glob": tmp_path / "*.nothing",
        "empty_dir": tmp_path / "empty",
        "hidden_only_dir": tmp_path / "hidden",
    }[kind]
    (tmp_path / "empty").mkdir()
    write_corpus(tmp_path / "hidden", "secret", ".dotfile")
    with pytest.raises(TextgenError) as e:
        index_corpus(data_cfg(target, tmp_path / "idx"))
    assert str(target) in str(e.value)
    assert not (tmp_path / "idx").exists()


def test_index_dir_that_is_a_file(tmp_path):
    corpus = write_corpus(tmp_path, TEXT)
    blocker = write_corpus(tmp_path, "a regular file", "blocker")
    with pytest.raises(TextgenError, match="not a directory"):
        index_corpus(data_cfg(corpus, blocker))
    with pytest.raises(TextgenError, match="cannot write the index dir"):
        index_corpus(data_cfg(corpus, blocker / "idx"))
    assert blocker.read_text() == "a regular file"
    assert stray_entries(tmp_path) == []


def test_non_index_directory_is_never_replaced(tmp_path):
    # data.index_dir pointing at a directory of the user's own files must not delete them.
    corpus = write_corpus(tmp_path, TEXT)
    precious = write_corpus(tmp_path / "mine", "keep me\n", "notes.txt")
    with pytest.raises(TextgenError, match="holds no index"):
        index_corpus(data_cfg(corpus, tmp_path / "mine"))
    assert precious.read_text() == "keep me\n"
    # An existing empty directory is fine.
    (tmp_path / "empty").mkdir()
    index, built = index_corpus(data_cfg(corpus, tmp_path / "empty"))
    assert built and decoded(index) == TEXT


def test_index_dir_inside_the_corpus_dir_is_not_indexed(tmp_path):
    root = tmp_path / "corpus"
    write_corpus(root, TEXT, "text.txt")
    cfg = data_cfg(root, root / "index")
    index, built = index_corpus(cfg)
    assert built and decoded(index) == TEXT
    index, built = index_corpus(cfg)  # train.npy is not a new (binary) source
    assert not built and decoded(index) == TEXT


# load_index ----------------------------------------------------------------------------------


def test_load_index_errors(tmp_path):
    with pytest.raises(TextgenError, match="no index here"):
        load_index(tmp_path / "none")
    corpus = write_corpus(tmp_path, TEXT)
    index_corpus(data_cfg(corpus, tmp_path / "idx"))
    meta_path = tmp_path / "idx" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 0
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(TextgenError, match="outdated"):
        load_index(tmp_path / "idx")
    # An outdated index is stale: index_corpus rebuilds it.
    index, built = index_corpus(data_cfg(corpus, tmp_path / "idx"))
    assert built and decoded(index) == TEXT
    (tmp_path / "idx" / "val.npy").write_bytes(b"garbage")
    with pytest.raises(TextgenError, match="corrupt"):
        load_index(tmp_path / "idx")
