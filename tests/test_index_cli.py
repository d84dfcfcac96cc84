"""`python -m textgen.index` and `python -m textgen index`, run as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    REPO_ROOT,
    assert_one_line_error,
    cli_env,
    run_cli,
    synthetic_text,
    write_corpus,
)

TINY = REPO_ROOT / "configs" / "tiny.yaml"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path, synthetic_text(lines=200, seed=2))


def test_index_then_up_to_date(tmp_path, corpus):
    args = [TINY, f"data.path={corpus}", f"data.index_dir={tmp_path / 'idx'}"]
    first = run_cli("textgen.index", *args)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""  # no progress bar when stderr is not a terminal, no TF chatter
    [line] = first.stdout.splitlines()
    assert re.fullmatch(
        r"indexed [\d.]+ MB from 1 file\(s\) into .*idx: [\d,]+ train \+ [\d,]+ val tokens, "
        r"vocab \d+, [\d.]+ s \([\d.]+ MB/s\)",
        line,
    ), line
    assert (tmp_path / "idx" / "meta.json").is_file()

    second = run_cli("textgen", "index", *args)  # the console script's way in
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    assert second.stdout.count("\n") == 1

    forced = run_cli("textgen.index", *args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith("indexed ")


def test_relative_paths_are_relative_to_the_working_dir(tmp_path, corpus):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.read_text(encoding="utf-8"), encoding="utf-8")
    proc = run_cli(
        "textgen.index",
        "tiny.yaml",
        f"data.path={corpus.name}",
        "data.index_dir=out/idx",
        "data.encoding_errors=replace",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "idx" / "train.npy").is_file()


def test_replaced_bytes_are_reported(tmp_path):
    corpus = write_corpus(tmp_path, synthetic_text(lines=200).encode() + b"bad \xff\xfe bytes\n")
    proc = run_cli(
        "textgen.index",
        TINY,
        f"data.path={corpus}",
        f"data.index_dir={tmp_path / 'idx'}",
        "data.encoding_errors=replace",
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 invalid bytes replaced" in proc.stdout


def test_index_does_not_import_tensorflow(tmp_path, corpus):
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "textgen.index",
            str(TINY),
            f"data.path={corpus}",
            f"data.index_dir={tmp_path / 'idx'}",
        ],
        cwd=REPO_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "textgen.corpus" in imported  # the check saw the real imports
    heavy = sorted(m for m in imported if m.split(".")[0] in {"tensorflow", "keras"})
    assert heavy == [], f"textgen.index imports {heavy[:5]}"


def test_textgen_without_a_command_exits_2_with_usage():
    proc = run_cli("textgen")
    assert proc.returncode == 2
    assert "usage: textgen COMMAND" in proc.stderr
    assert "index" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_index_help():
    proc = run_cli("textgen.index", "--help")
    assert proc.returncode == 0
    assert "key=value" in proc.stdout
    assert "--force" in proc.stdout


# Bad inputs: each one exits 2 with one line and leaves no index dir behind ----------------------

BAD_INPUTS = {
    # case: (overrides or files as built in `bad_case`, fragments expected in the error line)
    "missing path": ("corpus path not found", "nope.txt"),
    "empty glob": ("no text files match the glob",),
    "directory with no files": ("no text files in the directory",),
    "empty corpus": ("the corpus is empty",),
    "invalid utf-8": ("invalid UTF-8 at byte offset 10", "bad.txt"),
    "binary file in a directory": ("binary file", "blob.bin"),
    "split shorter than a window": ("fewer than one window", "windows.maxlen"),
    "val_fraction 0": ("data.val_fraction must be in (0, 1)",),
    "val_fraction 1": ("data.val_fraction must be in (0, 1)",),
    "unknown tokenizer": ("data.tokenizer must be one of", "'bpe'"),
    "sentencepiece vocab too large": ("data.sp_vocab_size",),
    "index_dir under a file": ("cannot write the index dir",),
    "index_dir is a file": ("not a directory",),
    "yaml syntax error": ("YAML syntax error", "line 3"),
    "unknown key": ("unknown key 'model.unit'", "did you mean 'model.units'"),
    "mistyped value": ("train.epochs must be an integer", "command line"),
    "override without =": ("override 'train.epochs' is not of the form",),
    "missing config": ("config file not found",),
    "unknown option": ("unrecognized arguments: --bogus",),
}


def bad_case(case: str, tmp: Path, corpus: Path) -> list[str]:
    """Makes the files of one bad-input case; returns the command-line words after the module."""
    idx = tmp / "idx"
    config, path, extra = str(TINY), str(corpus), []
    if case == "missing path":
        path = str(tmp / "nope.txt")
    elif case == "empty glob":
        path = str(tmp / "*.nothing")
    elif case == "directory with no files":
        (tmp / "empty").mkdir()
        write_corpus(tmp / "empty", "hidden", ".only-hidden")
        path = str(tmp / "empty")
    elif case == "empty corpus":
        path = str(write_corpus(tmp, "", "empty.txt"))
    elif case == "invalid utf-8":
        path = str(write_corpus(tmp, b"0123456789\xff" + b"x" * 1000, "bad.txt"))
    elif case == "binary file in a directory":
        write_corpus(tmp / "dir", synthetic_text(lines=100), "a.txt")
        write_corpus(tmp / "dir", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "blob.bin")
        path = str(tmp / "dir")
    elif case == "split shorter than a window":
        extra = ["windows.maxlen=5000"]
    elif case == "val_fraction 0":
        extra = ["data.val_fraction=0"]
    elif case == "val_fraction 1":
        extra = ["data.val_fraction=1"]
    elif case == "unknown tokenizer":
        extra = ["data.tokenizer=bpe"]
    elif case == "sentencepiece vocab too large":
        extra = ["data.tokenizer=sentencepiece", "data.sp_vocab_size=100000"]
    elif case == "index_dir under a file":
        idx = write_corpus(tmp, "a file", "plainfile") / "idx"
    elif case == "index_dir is a file":
        idx = write_corpus(tmp, "a file", "plainfile")
    elif case == "yaml syntax error":
        config = str(tmp / "broken.yaml")
        Path(config).write_text("data:\n  val_fraction: 0.1\n  path: a: b\n", encoding="utf-8")
    elif case == "unknown key":
        extra = ["model.unit=3"]
    elif case == "mistyped value":
        extra = ["train.epochs=two"]
    elif case == "override without =":
        extra = ["train.epochs"]
    elif case == "missing config":
        config = str(tmp / "missing.yaml")
    elif case == "unknown option":
        extra = ["--bogus"]
    return [config, f"data.path={path}", f"data.index_dir={idx}", *extra]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(tmp_path, case):
    corpus = write_corpus(tmp_path, synthetic_text(lines=50, seed=7))
    before = {p.name for p in tmp_path.iterdir()}
    args = bad_case(case, tmp_path, corpus)
    made = {p.name for p in tmp_path.iterdir()} - before
    proc = run_cli("textgen.index", *args)
    assert_one_line_error(proc, *BAD_INPUTS[case], empty_stdout=True)
    # Nothing new beside what the case itself made: no index dir, no temporary dir.
    assert {p.name for p in tmp_path.iterdir()} - before == made
    assert not (tmp_path / "idx").exists()
