"""`python -m textgen.sample`: streaming, UTF-8 output, config defaults, seeds, bad input."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cli_env
from run_fixtures import make_run, remove_checkpoints

from textgen import cli
from textgen.generation.generate import STREAM_CHUNK, Generator
from textgen.sample import main

PERIOD = "abcdé東😀xyz\n"
DEFAULTS = ("sample.prompt=abc", "sample.length=25", "sample.temperature=0.0")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run trained on a repeating pattern, whose config asks for greedy samples of 25."""
    path = tmp_path_factory.mktemp("sample") / "run"
    return make_run(path, PERIOD * 60, steps=150, overrides=DEFAULTS)


@pytest.fixture(scope="module")
def generator(run: Path) -> Generator:
    return Generator.from_run(run)


def pattern_after(last: str, length: int) -> str:
    start = PERIOD.index(last) + 1
    return (PERIOD * (length // len(PERIOD) + 2))[start : start + length]


def test_defaults_come_from_the_runs_config(run: Path, capsys) -> None:
    assert main([str(run)]) == 0
    assert capsys.readouterr().out == "abc" + pattern_after("c", 25) + "\n"


def test_same_seed_same_text_in_utf8_on_an_ascii_terminal(run: Path, generator) -> None:
    args = ["--prompt", "é東", "--temperature", "1.5", "--seed", "3", "--length", "40"]
    env = {**cli_env(), "PYTHONIOENCODING": "ascii", "LC_ALL": "C", "LANG": "C"}
    proc = subprocess.run(
        [sys.executable, "-m", "textgen.sample", str(run), *args],
        cwd=REPO_ROOT, env=env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    expected = generator.generate("é東", 40, temperature=1.5, seed=3)[0]
    assert proc.stdout.decode("utf-8") == "é東" + expected + "\n"


def test_streams_chunk_by_chunk(run: Path, monkeypatch) -> None:
    class Recorder(io.StringIO):
        encoding = "utf-8"

        def __init__(self) -> None:
            super().__init__()
            self.flushed: list[str] = []

        def flush(self) -> None:
            self.flushed.append(self.getvalue())

    out = Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    assert main([str(run), "--length", "300", "--temperature", "0.5", "--seed", "1"]) == 0
    grown = [len(text) for text in dict.fromkeys(out.flushed)]
    assert len(grown) >= 300 // STREAM_CHUNK and grown == sorted(grown)
    assert len(out.getvalue()) == len("abc") + 300 + 1


def test_several_samples_and_no_echo(run: Path, capsys) -> None:
    main([str(run), "--num-samples", "3", "--no-prompt-echo", "--temperature", "0"])
    out = capsys.readouterr().out
    expected = "".join(f"--- sample {i} ---\n{pattern_after('c', 25)}\n" for i in (1, 2, 3))
    assert out == expected


def test_allow_unknown_warns_in_one_line(run: Path, capsys) -> None:
    assert main([str(run), "--prompt", "aQ", "--allow-unknown", "--length", "5"]) == 0
    captured = capsys.readouterr()
    (warning,) = captured.err.splitlines()
    assert warning.startswith("textgen: warning: prompt characters outside") and "'Q'" in warning
    assert captured.out.startswith("aQ") and len(captured.out) == len("aQ") + 5 + 1


def test_xla_greedy_text_equals_the_graph_loops(run: Path, generator, capsys) -> None:
    args = ["--prompt", "ab", "--temperature", "0", "--length", "30"]
    assert main([str(run), *args, "--xla"]) == 0
    expected = generator.generate("ab", 30, temperature=0.0)[0]
    assert capsys.readouterr().out == "ab" + expected + "\n"


def test_adapt_primes_in_memory_only(run: Path, tmp_path: Path, capsys) -> None:
    model_bytes = (run / "model.keras").read_bytes()
    style = tmp_path / "style.txt"
    style.write_text("zyxé東😀dcba\n" * 20, encoding="utf-8")
    assert main([str(run), "--adapt", str(style), "--length", "12"]) == 0
    assert capsys.readouterr().out.startswith("abc")
    assert (run / "model.keras").read_bytes() == model_bytes


def test_adapt_file_errors_are_one_line(run: Path, tmp_path: Path, capsys) -> None:
    latin1, unknown = tmp_path / "latin1.txt", tmp_path / "unknown.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    unknown.write_text("abcQabcW", encoding="utf-8")
    for path, message in [
        (tmp_path / "missing.txt", "text file not found"),
        (latin1, "not UTF-8 (invalid byte at offset 3)"),
        (unknown, "characters outside the model's vocabulary: 'Q' (U+0051) 'W' (U+0057)"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.run(main, [str(run), "--adapt", str(path)])
        assert exit_info.value.code == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line == f"textgen: error: {message} ({path})"


def test_latest_checkpoint(run: Path, capsys) -> None:
    main([str(run), "--checkpoint", "latest"])
    assert capsys.readouterr().out == "abc" + pattern_after("c", 25) + "\n"


BAD = [
    (["--length", "0"], "--length must be >= 1, got 0 (command line)"),
    (["--length", "-4"], "--length must be >= 1"),
    (["--temperature", "-0.5"], "--temperature must be >= 0"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--top-p", "1.01"], "--top-p must be in (0, 1]"),
    (["--top-k", "-1"], "--top-k must be >= 0"),
    (["--num-samples", "0"], "--num-samples must be >= 1"),
    (["--length", "ten"], "argument --length: invalid int value"),
    (["--checkpoint", "nonsense"], "unknown checkpoint"),
    (["--prompt", "aQ"], "prompt characters outside the model's vocabulary: 'Q' (U+0051)"),
]


@pytest.mark.parametrize("extra, message", BAD)
def test_bad_input_is_one_line_exit_2(run: Path, capsys, extra: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, [str(run), *extra])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("textgen: error: ") and message in line


def test_bad_runs_are_one_line_exit_2(run: Path, tmp_path: Path, capsys) -> None:
    empty = remove_checkpoints(make_run(tmp_path / "untrained", "abab\n", steps=1))
    for argv, message in [
        ([str(tmp_path / "nope")], "run dir not found"),
        ([str(tmp_path)], "not a run dir (no config.yaml)"),
        ([str(empty)], "the run has no checkpoint yet"),
        ([str(empty), "--checkpoint", "latest"], "the run has no checkpoint yet"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.run(main, argv)
        assert exit_info.value.code == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("textgen: error: ") and message in line


def test_bad_input_fails_before_importing_tensorflow(run: Path, tmp_path: Path) -> None:
    code = f"""
import sys
from textgen import sample
from textgen.core.errors import TextgenError
for argv in ([{str(run)!r}, "--length", "0"], [{str(tmp_path / "nope")!r}],
             [{str(run)!r}, "--checkpoint", "x"], [{str(run)!r}, "--prompt", "Q"],
             [{str(run)!r}, "--top-p", "2"], [{str(run)!r}, "--adapt", "/nonexistent"]):
    try:
        sample.main(argv)
    except TextgenError:
        pass
    assert "tensorflow" not in sys.modules, argv
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=cli_env(),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.stdout == "ok\n", proc.stderr


def test_real_process_error_has_no_traceback(run: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "textgen.sample", str(run), "--top-k", "-2"],
        cwd=REPO_ROOT, env=cli_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "textgen: error: --top-k must be >= 0, got -2 (command line)"
    ]
