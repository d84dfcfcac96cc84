"""The index dir on disk: stale temp dirs removed, a foreign dir never replaced, renamed in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from textgen.core.errors import TextgenError
from textgen.data.indexdir import (
    check_index_dir,
    make_temp_dir,
    remove_stale_temp_dirs,
    replace_dir,
)


def make_index(directory: Path, marker: str) -> Path:
    """A directory that looks like an index (meta.json and a split)."""
    directory.mkdir(parents=True)
    (directory / "meta.json").write_text("{}", encoding="utf-8")
    (directory / "train.npy").write_text(marker, encoding="utf-8")
    return directory


def test_temp_and_old_dirs_of_killed_builds_are_removed_and_nothing_else(tmp_path):
    index = make_index(tmp_path / "idx", "current")
    stale = [tmp_path / ".idx.tmp-123", tmp_path / ".idx.old-456", tmp_path / ".idx.tmp-9"]
    for directory in stale[:2]:
        directory.mkdir()
        (directory / "train.npy").write_bytes(b"\0" * 64)
    stale[2].write_text("a temp file, not a dir")
    others = [tmp_path / ".other.tmp-123", tmp_path / "idx.tmp-1", tmp_path / "corpus.txt"]
    others[0].mkdir()
    others[1].mkdir()
    others[2].write_text("text")

    remove_stale_temp_dirs(index)

    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in others)  # another index's, and names that only look alike
    assert (index / "train.npy").read_text() == "current"


def test_removing_stale_dirs_under_a_missing_parent_does_nothing(tmp_path):
    remove_stale_temp_dirs(tmp_path / "nowhere" / "idx")
    assert list(tmp_path.iterdir()) == []


def test_a_directory_holding_something_else_is_never_replaced(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "kjv.txt").write_text("In the beginning")
    with pytest.raises(TextgenError) as e:
        make_temp_dir(data)
    assert e.value.line() == (
        f"index_dir is a non-empty directory that holds no index; refusing to replace it ({data})"
    )
    assert (data / "kjv.txt").read_text() == "In the beginning"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temp dir was made


@pytest.mark.parametrize("existing", ["none", "empty", "index"])
def test_a_temp_dir_is_made_beside_an_absent_empty_or_index_dir(tmp_path, existing):
    index = tmp_path / "idx"
    if existing == "empty":
        index.mkdir()
    elif existing == "index":
        make_index(index, "old")
    tmp = make_temp_dir(index)
    assert tmp == tmp_path / f".idx.tmp-{os.getpid()}"
    assert tmp.is_dir() and list(tmp.iterdir()) == []


def test_a_leftover_temp_dir_of_this_pid_is_emptied_first(tmp_path):
    leftover = tmp_path / f".idx.tmp-{os.getpid()}"
    leftover.mkdir()
    (leftover / "half.npy").write_bytes(b"\0")
    assert list(make_temp_dir(tmp_path / "idx").iterdir()) == []


def test_the_new_index_is_renamed_into_place_replacing_the_old(tmp_path):
    index = make_index(tmp_path / "idx", "old")
    tmp = make_temp_dir(index)
    (tmp / "meta.json").write_text("{}")
    (tmp / "train.npy").write_text("new")
    replace_dir(tmp, index)
    assert (index / "train.npy").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp, no old copy


def test_the_first_index_is_renamed_into_place(tmp_path):
    index = tmp_path / "idx"
    tmp = make_temp_dir(index)
    (tmp / "meta.json").write_text("{}")
    replace_dir(tmp, index)
    assert (index / "meta.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_check_index_dir_makes_the_parent_and_refuses_a_file(tmp_path):
    index = tmp_path / "a" / "b" / "idx"
    check_index_dir(index)
    assert index.parent.is_dir() and not index.exists()
    index.write_text("not a dir")
    with pytest.raises(TextgenError, match=r"^index_dir exists and is not a directory \("):
        check_index_dir(index)


def test_check_index_dir_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    index = tmp_path / "file" / "idx"
    with pytest.raises(TextgenError) as e:
        check_index_dir(index)
    assert e.value.line().startswith("cannot write the index dir: ")
    assert e.value.where == str(index) and "\n" not in str(e.value)
