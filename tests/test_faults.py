"""Faults injected for real: damaged checkpoints, torn logs, kill -9, two writers, a full disk.

Each test damages real files on disk or runs real processes; nothing is mocked. One run of 40
steps (ckpt-20, -30, -40) is trained once per module and copied; a 60-step run of the same config,
uninterrupted, gives the weights every recovered run must end with (deterministic ops).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, assert_one_line_error, cli_env, run_cli, write_corpus

from textgen.core.config import load_config
from textgen.core.dirlock import DirLock
from textgen.core.errors import TextgenError
from textgen.data.corpus import index_corpus
from textgen.evaluation.evaluate import evaluate
from textgen.run.rundir import DamagedCheckpointWarning, RunDir
from textgen.run.runlog import record_order
from textgen.training.trainer import train

TINY = REPO_ROOT / "configs" / "tiny.yaml"
SENTENCE = "the quick brown fox jumps over the lazy dog.\n"
COMMON = [  # 3 epochs of 20 steps, bitwise-reproducible; samples.txt: see test_runlog.py
    "train.deterministic=true",
    "train.epochs=3",
    "sample.epoch_temperatures=[]",
]


class Recorder:
    """An `on_event` handler that keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def __call__(self, kind: str, **data) -> None:
        self.events.append((kind, data))

    def of(self, kind: str) -> list[dict]:
        return [data for k, data in self.events if k == kind]


def overrides(root: Path, out: Path, *more: str) -> list[str]:
    return [f"data.path={root / 'corpus.txt'}", f"data.index_dir={root / 'index'}",
            f"train.out_dir={out}", *COMMON, *more]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """(root with run40/: 40 steps of a 60-step run, the weights of the whole run uninterrupted).

    Built once for all xdist workers of a session (their base temp dirs share a parent), under
    a lock.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this session's
    root = shared / "faults-trained"
    with DirLock(root.with_name("faults-trained.lock"), what="fixture", where=root).acquire(
        wait=True
    ):
        if not (root / "weights").is_file():
            shutil.rmtree(root, ignore_errors=True)
            write_corpus(root, SENTENCE * 400)
            train(load_config(TINY, overrides(root, root / "run40", "train.max_steps=40")))
            reference = Recorder()
            train(load_config(TINY, overrides(root, root / "run60")), on_event=reference)
            (root / "weights").write_text(reference.of("stop")[0]["weights"], encoding="utf-8")
    return root, (root / "weights").read_text(encoding="utf-8")


def copy_run(trained: tuple[Path, str], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained[0] / "run40", out)
    return out


def ckpt_files(run: Path, number: int) -> list[Path]:
    return sorted((run / "checkpoints").glob(f"ckpt-{number}.*"))


def damage(run: Path, number: int, how: str) -> None:
    """Damages checkpoint `number` of a run on disk."""
    [data] = (run / "checkpoints").glob(f"ckpt-{number}.data-*")
    index = run / "checkpoints" / f"ckpt-{number}.index"
    if how == "index removed":
        index.unlink()
    elif how == "index garbage":
        index.write_bytes(b"hello world")
    elif how == "data flipped":
        raw = bytearray(data.read_bytes())
        for i in range(0, len(raw), 97):
            raw[i] ^= 0xFF
        data.write_bytes(bytes(raw))
    else:  # data truncated
        with open(data, "r+b") as f:
            f.truncate(data.stat().st_size // 2)


def metrics_orders(run: Path) -> list[tuple[int, bool]]:
    """(step, final) of every metrics.jsonl line, each parsed as JSON (a torn line fails)."""
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [record_order(json.loads(line)) for line in lines]


def assert_strictly_increasing(orders: list[tuple[int, bool]]) -> None:
    assert orders == sorted(set(orders)), orders


def snapshot(run: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime) of every file of a run: any write changes it."""
    return {str(p.relative_to(run)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file()}  # fmt: skip


# --- damaged checkpoints ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["index removed", "data flipped", "data truncated"])
def test_a_damaged_latest_checkpoint_resumes_from_the_newest_that_restores(trained, tmp_path, how):
    run = copy_run(trained, tmp_path)
    damage(run, 40, how)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:  # a retry and a torn line
        f.write(json.dumps({"step": 30, "final": False}) + "\n" + '{"step": 50, "lo')
    (run / "checkpoints" / "ckpt-50_temp").mkdir()  # a checkpoint write that was killed
    (run / ".tmp-model.keras").write_bytes(b"PK half a zip")
    events = Recorder()
    result = train(load_config(TINY, overrides(trained[0], run)), on_event=events)

    [warning] = [w["message"] for w in events.of("warning")]
    assert re.fullmatch(r"checkpoint .*ckpt-40 is damaged \(.+\); resuming from .*ckpt-30", warning)
    assert events.of("resume")[0]["step"] == 30
    assert result.step == 60
    assert events.of("stop")[0]["weights"] == trained[1]  # as if nothing had happened
    assert metrics_orders(run) == [(10, False), (20, False), (30, False), (40, False),
                                   (50, False), (60, False), (60, True)]  # fmt: skip
    assert not list(run.glob(".tmp-*")) and not list(run.glob("checkpoints/*_temp*"))


def test_intact_older_checkpoints_are_kept_and_the_state_file_is_not_trusted(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    damage(run, 40, "data flipped")
    damaged = {p: p.read_bytes() for p in ckpt_files(run, 40)}
    (run / "checkpoints" / "checkpoint").write_bytes(b"\x9b\xff binary \x00 garbage")
    events = Recorder()
    result = train(load_config(TINY, overrides(trained[0], run, "train.max_steps=30")),
                   on_event=events)  # fmt: skip
    assert (result.step, result.stop_reason) == (30, "max_steps")
    assert "ckpt-40 is damaged" in events.of("warning")[0]["message"]
    assert ckpt_files(run, 20) and ckpt_files(run, 30)  # nothing intact is deleted
    assert {p: p.read_bytes() for p in ckpt_files(run, 40)} == damaged  # nor overwritten

    (run / "checkpoints" / "checkpoint").write_text("hello world\n", encoding="utf-8")
    damage(run, 40, "index removed")
    result = train(load_config(TINY, overrides(trained[0], run, "train.max_steps=50")))
    assert result.step == 50
    state = (run / "checkpoints" / "checkpoint").read_text(encoding="utf-8")
    assert state.startswith('model_checkpoint_path: "ckpt-50"\n')  # rewritten from the files
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == [
        "ckpt-30.index", "ckpt-40.index", "ckpt-50.index"]  # fmt: skip


def test_when_no_checkpoint_restores_training_refuses_and_touches_nothing(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    for number in (20, 30, 40):
        damage(run, number, "index garbage")
    before = snapshot(run)
    with pytest.raises(TextgenError) as e:
        train(load_config(TINY, overrides(trained[0], run)))
    assert re.fullmatch(
        r"none of the run's 3 checkpoints restores \(the newest, ckpt-40: .+\); "
        r"set train.fresh=true to start over \(.+checkpoints\)",
        e.value.line(),
    )
    assert snapshot(run) == before


def test_sampling_passes_over_a_damaged_latest_checkpoint_but_not_a_named_one(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    damage(run, 40, "data flipped")
    (run / "model.keras").unlink()  # `best` falls back to the checkpoints too
    for name in ("best", "latest"):
        with pytest.warns(DamagedCheckpointWarning) as warned:
            RunDir(run).load_model(name)
        [message] = [str(w.message) for w in warned]
        assert re.fullmatch(r"checkpoint \S+ckpt-40 is damaged \(.+\); using \S+ckpt-30", message)
    named = run_cli("textgen.sample", run, "--checkpoint", run / "checkpoints" / "ckpt-40")
    assert_one_line_error(named, "cannot restore checkpoint", "ckpt-40", empty_stdout=True)


def test_a_tokenizer_from_another_run_is_refused_when_sampling(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    tokenizer = json.loads((run / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["chars"] = tokenizer["chars"][:-1]
    (run / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    proc = run_cli("textgen.sample", run, "--length", "20", "--prompt", "the")
    assert_one_line_error(proc, "tokenizer has", "but its model was trained on", str(run))


def test_a_broken_run_config_is_one_line_with_line_and_column(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    (run / "config.yaml").write_text("train:\n  epochs: [1, 2\nmodel: {\n", encoding="utf-8")
    line = assert_one_line_error(run_cli("textgen.sample", run), "YAML syntax error", "config.yaml")
    assert re.search(r", line \d+, column \d+\)$", line), line
    with pytest.raises(TextgenError, match=r"YAML syntax error.*, line \d+, column \d+\)$"):
        evaluate(run)


# --- the corpus and the index -----------------------------------------------------------------


def test_a_changed_corpus_is_said_and_a_new_vocabulary_leaves_the_old_index(tmp_path):
    corpus = write_corpus(tmp_path, SENTENCE * 200)
    words = overrides(tmp_path, tmp_path / "run")
    train(load_config(TINY, [*words, "train.max_steps=5"]))
    write_corpus(tmp_path, SENTENCE * 200 + SENTENCE[::-1] * 20)  # same characters, more text
    events = Recorder()
    train(load_config(TINY, [*words, "train.max_steps=7"]), on_event=events)
    notes = events.of("resume")[0]["notes"]
    assert any(re.fullmatch(r"corpus: 1 file\(s\), [\d,]+ tokens -> 1 file\(s\), [\d,]+ tokens "
                            r"\(changed: corpus\.txt\); the window order differs from here on", n)
               for n in notes), notes  # fmt: skip

    index = tmp_path / "index"
    before = {p.name: p.read_bytes() for p in index.iterdir()}
    corpus.write_text(SENTENCE * 200 + "Zebra!\n", encoding="utf-8")
    with pytest.raises(TextgenError, match="vocabulary changed"):
        train(load_config(TINY, [*words, "train.max_steps=9"]))
    assert {p.name: p.read_bytes() for p in index.iterdir()} == before  # checked, then refused
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_temp_dirs_of_killed_index_builds_are_removed(tmp_path):
    corpus = write_corpus(tmp_path, SENTENCE * 50)
    cfg = load_config(TINY, [f"data.path={corpus}", f"data.index_dir={tmp_path / 'idx'}"])
    index_corpus(cfg.data)
    for name in (".idx.tmp-999999", ".idx.old-999998"):  # a build killed mid-way
        write_corpus(tmp_path / name, b"\0" * 4096, "train.npy")
    _, built = index_corpus(cfg.data)
    assert not built
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "idx"]


# --- two processes, kill -9 -------------------------------------------------------------------


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def test_a_second_train_is_refused_readers_are_not_and_kill_9_leaves_no_lock(trained, tmp_path):
    run = tmp_path / "run"
    words = [*overrides(trained[0], run), "train.epochs=1000", "train.steps_per_call=1",
             "train.eval_every=5", "train.checkpoint_every=5"]  # fmt: skip
    first = subprocess.Popen([sys.executable, "-m", "textgen.train", str(TINY), *words,
                              "train.max_steps=100000"], cwd=REPO_ROOT, env=cli_env(), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(first.stdout, lines), daemon=True).start()
    try:
        line = ""
        while not line.startswith("eval step 10 "):  # training is under way, ckpt-5 saved
            line = lines.get(timeout=180)
            assert line is not None, "the first train ended early"
        second = run_cli("textgen.train", TINY, *words, "train.max_steps=100000")
        assert_one_line_error(second, f"run dir is in use by process {first.pid} ({run})")
        RunDir(run).load_model("latest")  # a reader needs no lock
        assert first.poll() is None  # it was training all along
    finally:
        first.kill()  # SIGKILL: mid-step, mid-write or mid-append, wherever it was
        first.wait()
    newest = max(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("*.index"))
    events = Recorder()
    result = train(load_config(TINY, [*words, f"train.max_steps={newest + 3}"]), on_event=events)
    assert events.of("resume") and result.step == newest + 3
    assert_strictly_increasing(metrics_orders(run))
    assert not (run / ".lock").exists()  # the last holder removed it


# --- a full disk --------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only: CI runs as root), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs the tests as root)")
    path.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, leave_bytes: int) -> Path:
    """Writes a file that leaves about `leave_bytes` free on `directory`'s file system."""
    filler = directory / "filler"
    filler.write_bytes(b"\0" * max(shutil.disk_usage(directory).free - leave_bytes, 0))
    return filler


def test_a_full_disk_under_the_run_is_one_line_and_loses_nothing(trained, tmp_path):
    with small_tmpfs(tmp_path / "disk", "12m") as disk:
        run = disk / "run"
        words = [*overrides(trained[0], run), "model.units=256"]
        train(load_config(TINY, [*words, "train.max_steps=10"]))
        filler = fill(disk, leave_bytes=2_500_000)  # model.keras fits, a 3.4 MB checkpoint not
        proc = run_cli("textgen.train", TINY, *words, "train.max_steps=20", timeout=180)
        assert_one_line_error(proc, "no space left on device while writing checkpoint ckpt-20")
        assert not list(run.glob(".tmp-*")) and not list(run.glob("checkpoints/*_temp*"))
        assert [p.name for p in (run / "checkpoints").glob("*.index")] == ["ckpt-10.index"]

        filler.unlink()
        events = Recorder()
        result = train(load_config(TINY, [*words, "train.max_steps=20"]), on_event=events)
        assert events.of("resume")[0]["step"] == 10 and result.step == 20
        assert metrics_orders(run) == [(10, False), (20, False), (20, True)]


def test_a_full_disk_under_the_index_is_one_line_and_leaves_nothing(tmp_path):
    corpus = write_corpus(tmp_path, SENTENCE * 10_000)  # 450 kB: 1.8 MB of int32 ids
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        proc = run_cli("textgen.index", TINY, f"data.path={corpus}", f"data.index_dir={disk}/idx")
        assert_one_line_error(proc, "no space left on device while writing the index", "idx")
        assert list(disk.iterdir()) == []


def test_a_model_too_large_for_memory_is_refused_before_anything_is_made(tmp_path):
    write_corpus(tmp_path, SENTENCE * 50)
    proc = run_cli("textgen.train", TINY, *overrides(tmp_path, tmp_path / "run"),
                   "model.units=100000000")  # fmt: skip
    assert_one_line_error(proc, "model.units=100,000,000", "GB", "lower model.units")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]
