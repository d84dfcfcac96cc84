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
    assert "textgen.data.corpus" in imported  # the check saw the real imports
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


def args(tmp: Path, corpus: Path, *extra: str, config=TINY, path=None, idx=None) -> list[str]:
    """Command-line words after the module: a config, data.path, data.index_dir and `extra`."""
    path, idx = path or corpus, idx or tmp / "idx"
    return [str(config), f"data.path={path}", f"data.index_dir={idx}", *extra]


def hidden_files_only(tmp: Path) -> Path:
    write_corpus(tmp / "empty", "hidden", ".only-hidden")
    return tmp / "empty"


def text_and_binary(tmp: Path) -> Path:
    write_corpus(tmp / "dir", synthetic_text(lines=100), "a.txt")
    write_corpus(tmp / "dir", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "blob.bin")
    return tmp / "dir"


def broken_yaml(tmp: Path) -> Path:
    config = tmp / "broken.yaml"
    config.write_text("data:\n  val_fraction: 0.1\n  path: a: b\n", encoding="utf-8")
    return config


# Each case: (tmp, corpus) -> the command line (making the case's files), then the fragments the
# one error line must hold.
BAD_INPUTS = [
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, path=tmp / "nope.txt"),
        ("corpus path not found", "nope.txt"),
        id="missing path",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, path=tmp / "*.nothing"),
        ("no text files match the glob",),
        id="empty glob",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, path=hidden_files_only(tmp)),
        ("no text files in the directory",),
        id="directory with no files",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, path=write_corpus(tmp, "", "empty.txt")),
        ("the corpus is empty",),
        id="empty corpus",
    ),
    pytest.param(
        lambda tmp, corpus: args(
            tmp, corpus, path=write_corpus(tmp, b"0123456789\xff" + b"x" * 1000, "bad.txt")
        ),
        ("invalid UTF-8 at byte offset 10", "bad.txt"),
        id="invalid utf-8",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, path=text_and_binary(tmp)),
        ("binary file", "blob.bin"),
        id="binary file in a directory",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, "windows.maxlen=5000"),
        ("fewer than one window", "windows.maxlen"),
        id="split shorter than a window",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, "data.val_fraction=0"),
        ("data.val_fraction must be in (0, 1)",),
        id="val_fraction 0",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, "data.val_fraction=1"),
        ("data.val_fraction must be in (0, 1)",),
        id="val_fraction 1",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, "data.tokenizer=bpe"),
        ("data.tokenizer must be one of", "'bpe'"),
        id="unknown tokenizer",
    ),
    pytest.param(
        lambda tmp, corpus: args(
            tmp, corpus, "data.tokenizer=sentencepiece", "data.sp_vocab_size=100000"
        ),
        ("data.sp_vocab_size",),
        id="sentencepiece vocab too large",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, idx=write_corpus(tmp, "a file", "plainfile") / "idx"),
        ("cannot write the index dir",),
        id="index_dir under a file",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, idx=write_corpus(tmp, "a file", "plainfile")),
        ("not a directory",),
        id="index_dir is a file",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, config=broken_yaml(tmp)),
        ("YAML syntax error", "line 3"),
        id="yaml syntax error",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, "model.unit=3"),
        ("unknown key 'model.unit'", "did you mean 'model.units'"),
        id="unknown key",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, "train.epochs=two"),
        ("train.epochs must be an integer", "command line"),
        id="mistyped value",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, "train.epochs"),
        ("override 'train.epochs' is not of the form",),
        id="override without =",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, config=tmp / "missing.yaml"),
        ("config file not found",),
        id="missing config",
    ),
    pytest.param(
        lambda tmp, corpus: args(tmp, corpus, "--bogus"),
        ("unrecognized arguments: --bogus",),
        id="unknown option",
    ),
]


@pytest.mark.parametrize("make_args, fragments", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(tmp_path, make_args, fragments):
    """Each bad input exits 2 with one error line and leaves no index dir behind."""
    corpus = write_corpus(tmp_path, synthetic_text(lines=50, seed=7))
    before = {p.name for p in tmp_path.iterdir()}
    words = make_args(tmp_path, corpus)
    made = {p.name for p in tmp_path.iterdir()} - before
    proc = run_cli("textgen.index", *words)
    line = assert_one_line_error(proc, *fragments, empty_stdout=True)
    assert re.fullmatch(r"textgen: error: .+ \(.+\)", line), line  # <what> (<where>)
    # Nothing new beside what the case itself made: no index dir, no temporary dir.
    assert {p.name for p in tmp_path.iterdir()} - before == made
    assert not (tmp_path / "idx").exists()
