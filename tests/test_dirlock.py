"""Run dir and index dir locks held by real processes: refused, waited for, freed by kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cli_env, synthetic_text, write_corpus

from textgen.core.dirlock import index_dir_lock, read_holder, run_dir_lock
from textgen.core.errors import TextgenError

TINY = REPO_ROOT / "configs" / "tiny.yaml"


def hold_lock_in_child(run_dir: Path) -> subprocess.Popen:
    """A child process that takes the run dir's lock, says `locked`, then sleeps."""
    code = textwrap.dedent(f"""
        import sys, time
        from textgen.core.dirlock import run_dir_lock
        lock = run_dir_lock({str(run_dir)!r}).acquire()
        print("locked", flush=True)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=cli_env(),
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_second_writer_is_refused_naming_the_holder_and_kill_9_frees_the_lock(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    child = hold_lock_in_child(run_dir)
    try:
        with pytest.raises(TextgenError) as e:
            run_dir_lock(run_dir).acquire()
        assert e.value.line() == f"run dir is in use by process {child.pid} ({run_dir})"
        assert read_holder(run_dir / ".lock") == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with run_dir_lock(run_dir) as lock:  # the kernel released it with the process
        assert lock.held
        assert read_holder(run_dir / ".lock") == os.getpid()
    assert not run_dir_lock(run_dir).held


def test_an_index_build_waits_for_the_process_building_it(tmp_path):
    corpus = write_corpus(tmp_path, synthetic_text(lines=300, seed=4))
    index_dir = tmp_path / "idx"
    held = index_dir_lock(index_dir).acquire()  # this process "builds" it
    proc = subprocess.Popen(
        [sys.executable, "-m", "textgen.index", str(TINY), f"data.path={corpus}",
         f"data.index_dir={index_dir}"],
        cwd=REPO_ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        waiting = proc.stderr.readline()
        assert "waiting for process" in waiting and str(os.getpid()) in waiting
        assert not index_dir.exists()  # nothing built while the lock is held
    finally:
        held.release()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("indexed ")
    assert (index_dir / "meta.json").is_file()
