"""`writing` and `write_atomic`: a failed write is one line and leaves nothing half-written."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from textgen.core.errors import TextgenError
from textgen.core.filewrite import is_no_space, write_atomic, writing


def leftovers(directory: Path) -> list[str]:
    """Names of the temporary files `write_atomic` makes (`.NAME.tmp-PID`) still in `directory`."""
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_inside_the_block_is_one_line_after_the_cleanup(tmp_path, code):
    target = tmp_path / "weights.bin"
    partial = tmp_path / ".weights.bin.part"
    with (
        pytest.raises(TextgenError) as e,
        writing("the weights", target, cleanup=lambda: partial.unlink(missing_ok=True)),
    ):
        partial.write_bytes(b"\0" * 100)
        raise OSError(code, "No space left on device")
    assert e.value.line() == f"no space left on device while writing the weights ({target})"
    assert "\n" not in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no chained traceback
    assert not partial.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_real_full_device_is_the_same_one_line():
    # /dev/full fails every write with ENOSPC: the file system's own error, no stand-in.
    with (
        pytest.raises(TextgenError, match=r"^no space left on device while writing a log"),
        writing("a log", "/dev/full"),
        open("/dev/full", "wb", buffering=0) as f,
    ):
        f.write(b"x" * 4096)


def test_a_message_that_only_says_the_disk_is_full_counts_as_full():
    # TensorFlow's ResourceExhaustedError carries no errno, only the words.
    assert is_no_space(RuntimeError("write failed: No space left on device"))
    assert is_no_space(RuntimeError("Disk quota exceeded"))
    assert not is_no_space(RuntimeError("shape mismatch"))
    assert not is_no_space(OSError(errno.EACCES, "Permission denied"))


def test_another_os_error_names_its_reason_and_the_path(tmp_path):
    target = tmp_path / "no-such-dir" / "notes.txt"
    cleaned = []
    with (
        pytest.raises(TextgenError) as e,
        writing("the notes", target, cleanup=lambda: cleaned.append(True)),
    ):
        target.write_text("hello")  # the parent does not exist: a real FileNotFoundError
    assert e.value.line() == f"cannot write the notes: No such file or directory ({target})"
    assert cleaned == [True]


def test_an_error_that_is_not_about_writing_passes_through_after_the_cleanup(tmp_path):
    cleaned = []
    with (
        pytest.raises(ZeroDivisionError),
        writing("x", tmp_path / "x", cleanup=lambda: cleaned.append(True)),
    ):
        _ = 1 / 0
    assert cleaned == [True]


def test_ctrl_c_runs_the_cleanup_and_still_stops(tmp_path):
    cleaned = []
    with (
        pytest.raises(KeyboardInterrupt),
        writing("x", tmp_path / "x", cleanup=lambda: cleaned.append(True)),
    ):
        raise KeyboardInterrupt
    assert cleaned == [True]


def test_a_successful_block_runs_no_cleanup(tmp_path):
    cleaned = []
    with writing("x", tmp_path / "x", cleanup=lambda: cleaned.append(True)):
        (tmp_path / "x").write_text("done")
    assert cleaned == [] and (tmp_path / "x").read_text() == "done"


def test_write_atomic_writes_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "state.txt"
    write_atomic(path, "first\n")
    assert path.read_text(encoding="utf-8") == "first\n"
    write_atomic(path, "second — ünïcode\n")
    assert path.read_text(encoding="utf-8") == "second — ünïcode\n"
    assert leftovers(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["state.txt"]


def test_write_atomic_replaces_the_file_rather_than_rewriting_it(tmp_path):
    path = tmp_path / "state.txt"
    path.write_text("old content, complete\n", encoding="utf-8")
    with open(path, encoding="utf-8") as reader:  # a reader that opened the old file
        write_atomic(path, "new\n")
        assert reader.read() == "old content, complete\n"  # never sees a mix or a truncation
    assert path.read_text(encoding="utf-8") == "new\n"


def test_write_atomic_that_fails_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "state.txt"
    path.write_text("old\n", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate: the temp file was opened
        write_atomic(path, "half \ud800 written")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert leftovers(tmp_path) == []


def test_write_atomic_into_a_missing_dir_is_one_line_naming_the_path(tmp_path):
    path = tmp_path / "gone" / "config.yaml"
    with pytest.raises(TextgenError) as e:
        write_atomic(path, "a: 1\n", what="the config")
    assert e.value.line() == f"cannot write the config: No such file or directory ({path})"
