"""`python -m textgen.train`, run as a user runs it: bad inputs, Ctrl-C and resuming."""

from __future__ import annotations

import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import REPO_ROOT, assert_one_line_error, cli_env, run_cli, write_corpus

TINY = REPO_ROOT / "configs" / "tiny.yaml"
SENTENCE = "the quick brown fox jumps over the lazy dog.\n"


@pytest.fixture
def paths(tmp_path: Path) -> list[str]:
    """Overrides pointing configs/tiny.yaml at a small corpus, an index and a run dir."""
    corpus = write_corpus(tmp_path, SENTENCE * 400)
    return [
        f"data.path={corpus}",
        f"data.index_dir={tmp_path / 'index'}",
        f"train.out_dir={tmp_path / 'run'}",
    ]


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (["train.epoch=2"], ["unknown key 'train.epoch'", "train.epochs", "(command line)"]),
        (["train.batch_size=0"], ["train.batch_size must be >= 1", "(command line)"]),
        (["windows.target=all"], ["windows.target must be one of", "(command line)"]),
        (["trainepochs=2"], ["not of the form section.key=value"]),
    ],
)
def test_config_errors_exit_2_with_one_line(paths, overrides, fragments):
    proc = run_cli("textgen.train", TINY, *paths, *overrides)
    assert_one_line_error(proc, *fragments)
    assert proc.stdout == ""


def test_a_missing_config_file_exits_2(tmp_path):
    proc = run_cli("textgen.train", tmp_path / "nope.yaml")
    assert_one_line_error(proc, "config file not found", "nope.yaml")


def test_out_dir_that_is_a_file_exits_2(tmp_path, paths):
    out = tmp_path / "file"
    out.write_text("keep me", encoding="utf-8")
    proc = run_cli("textgen.train", TINY, *paths, f"train.out_dir={out}")
    assert_one_line_error(proc, "train.out_dir exists and is not a directory", str(out))
    assert out.read_text(encoding="utf-8") == "keep me"


def test_a_batch_larger_than_the_training_windows_exits_2(paths):
    proc = run_cli("textgen.train", TINY, *paths, "train.batch_size=5000")
    assert_one_line_error(proc, "train.batch_size 5000 is larger than the", "(train.batch_size)")


def _pump(stream, lines: queue.Queue, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)
        lines.put(line)
    lines.put(None)


@pytest.mark.parametrize(
    "entry", [["-m", "textgen.train"], ["-m", "textgen", "train"]], ids=["module", "console"]
)
def test_ctrl_c_saves_a_checkpoint_exits_130_and_the_printed_command_resumes(
    tmp_path, paths, entry
):
    # `-m textgen train` is what the `textgen` console script runs.
    command = [
        sys.executable,
        *entry,
        str(TINY),
        *paths,
        "train.epochs=1000",
        "train.max_steps=100000",
        "train.steps_per_call=1",
        "train.eval_every=3",
        "sample.epoch_temperatures=[]",
    ]
    proc = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=cli_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out: list[str] = []
    err: list[str] = []
    lines: queue.Queue = queue.Queue()
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, lines, out), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, queue.Queue(), err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        while True:  # wait for the first evaluation: training is under way
            line = lines.get(timeout=180)
            assert line is not None, "".join(out) + "".join(err)
            if line.startswith("eval step"):
                break
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for reader in readers:
        reader.join(timeout=10)
    stdout, stderr = "".join(out), "".join(err)

    assert code == 130, stderr
    assert "Traceback" not in stderr
    stopped = re.search(r"stopped \(interrupted\) at step (\d+)", stdout)
    assert stopped, stdout
    step = int(stopped.group(1))
    assert step >= 3
    assert (tmp_path / "run" / "checkpoints" / f"ckpt-{step}.index").is_file()
    # The index line reads as `textgen.index` prints it.
    summary = (
        r"^indexed [\d.]+ MB from 1 file\(s\) into .*: "
        r"[\d,]+ train \+ [\d,]+ val tokens, vocab \d+$"
    )
    assert re.search(summary, stdout, re.MULTILINE), stdout
    printed = re.search(r"interrupted: checkpoint saved. Resume with: (.+)", stderr)
    assert printed, stderr
    resume = shlex.split(printed.group(1))  # the command exactly as printed, run as printed
    assert resume[:3] == [sys.executable, "-m", "textgen.train"]
    again = subprocess.run(
        [*resume, f"train.max_steps={step + 2}"],
        cwd=REPO_ROOT, env=cli_env(), text=True, capture_output=True, timeout=180,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert re.search(rf"resuming from .*ckpt-{step}: step {step}\b", again.stdout), again.stdout
    assert re.search(r"^index is up to date: .* \([\d,]+ tokens\)$", again.stdout, re.MULTILINE)
    assert "changed since the last run: train.max_steps: 100000 -> " in again.stdout
    assert f"stopped (max_steps) at step {step + 2}," in again.stdout
    assert (tmp_path / "run" / "checkpoints" / f"ckpt-{step + 2}.index").is_file()
