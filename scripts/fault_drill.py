"""Fault drill: kill -9, damaged checkpoints, two writers, a full disk; prints one JSON object.

    python scripts/fault_drill.py [--kills 20] [--workdir DIR]

A short deterministic run (configs/tiny.yaml, 10 epochs of 20 steps, one step per call, an
evaluation every 5 steps and a checkpoint every 10) is first trained once, uninterrupted: its
final weights are the reference. Then, every fault followed by the same command again:

- kill -9 at `--kills` moments spread over one run: after the first evaluation line at or past a
  step that moves from 5 to 180 over the trials, at once (between the metrics append and the
  checkpoint write, or during the write) or a random 0.02-0.15 s later (mid-step, mid-append),
  each time restarting the same command; then the same command runs to its end;
- damaged checkpoints (a missing `.index`, flipped `.data` bytes, garbage or binary in the
  `checkpoint` state file, every checkpoint damaged) on a copy of a run stopped at step 40;
- two trainings started at once on one run dir;
- a full disk under the run dir (a small tmpfs, when run as root).

Targets (issue 14): every fault survived with nothing lost (final weights equal to the
reference), metrics.jsonl valid JSON in strictly increasing (step, final) after every trial,
zero tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.yaml"
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 400
EPOCHS = 10  # of 20 steps (tiny.yaml): 200 steps, ~4 s of training on 2 cores
WEIGHTS = re.compile(r"^stopped \(\w+\) at step (\d+).*; weights (\w+)$", re.MULTILINE)


class Drill:
    """Runs `textgen.train` processes on one corpus, with faults, and checks what they leave."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        (workdir / "corpus.txt").write_text(TEXT, encoding="utf-8")
        self.tracebacks = 0
        self.processes = 0

    def words(self, run: Path, *more: str) -> list[str]:
        """The command-line words of the drill's run (deterministic, 200 steps in all)."""
        return [str(TINY), f"data.path={self.workdir / 'corpus.txt'}",
                f"data.index_dir={self.workdir / 'index'}", f"train.out_dir={run}",
                "train.deterministic=true", f"train.epochs={EPOCHS}", "train.steps_per_call=1",
                "train.eval_every=5", "sample.epoch_temperatures=[]", *more]  # fmt: skip

    def train(self, run: Path, *more: str, kill_at: int | None = None, delay: float = 0.0):
        """Runs one training; SIGKILLs it `delay` s after its first `eval step S` with S >= kill_at.

        Returns:
            (exit status, stdout, stderr, killed).
        """
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-m", "textgen.train", *self.words(run, *more)],
                                cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
        self.processes += 1
        err: list[str] = []
        reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
        reader.start()
        out, killed = [], False
        for line in proc.stdout:
            out.append(line)
            evaluated = re.match(r"eval step (\d+) ", line)
            if kill_at and evaluated and int(evaluated.group(1)) >= kill_at and not killed:
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                killed = True
        code = proc.wait()
        reader.join()
        stderr = "".join(err)
        self.tracebacks += stderr.count("Traceback")
        return code, "".join(out), stderr, killed

    def finish(self, run: Path, *more: str) -> tuple[str | None, str]:
        """Runs the command to its end; returns (final weights or None, stderr)."""
        code, out, err, _ = self.train(run, *more)
        found = WEIGHTS.search(out)
        return (found.group(2) if code == 0 and found else None), err


def metrics_ok(run: Path) -> bool:
    """Every line of metrics.jsonl is JSON and (step, final) strictly increases."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return True
    try:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    except ValueError:
        return False
    orders = [(r["step"], bool(r.get("final"))) for r in records]
    return orders == sorted(set(orders))


def kill_trials(drill: Drill, reference: str, kills: int, rng: random.Random) -> dict:
    """Kills one run `kills` times at spread moments, resuming each time; then finishes it."""
    run = drill.workdir / "killed"
    moments, metrics_valid, resumed_from = [], True, []
    for i in range(kills):
        step = 5 + round(175 * i / max(kills - 1, 1))  # 5 ... 180, spread over the trials
        delay = 0.0 if i % 2 == 0 else round(rng.uniform(0.02, 0.15), 3)
        code, out, _, killed = drill.train(run, kill_at=step, delay=delay)
        found = re.search(r"resuming from \S+ckpt-(\d+)", out)
        resumed_from.append(int(found.group(1)) if found else 0)
        last_eval = re.findall(r"^eval step (\d+) ", out, re.MULTILINE)
        moments.append({"after_eval_at_step": int(last_eval[-1]) if last_eval else None,
                        "delay_s": delay, "killed": killed, "exit": code})  # fmt: skip
        metrics_valid &= metrics_ok(run)
    weights, _ = drill.finish(run)
    metrics_valid &= metrics_ok(run)
    return {
        "kills": sum(m["killed"] for m in moments),
        "moments": moments,
        "resumed_from_steps": resumed_from,
        "final_weights_equal": weights == reference,
        "metrics_valid_after_every_trial": metrics_valid,
    }


def damage(run: Path, how: str) -> None:
    """Damages the run's newest checkpoint (ckpt-40) or its state file, or every checkpoint."""
    ckpts = run / "checkpoints"
    if how == "index removed":
        (ckpts / "ckpt-40.index").unlink()
    elif how == "data bytes flipped":
        [data] = ckpts.glob("ckpt-40.data-*")
        raw = bytearray(data.read_bytes())
        for i in range(0, len(raw), 97):
            raw[i] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif how == "state file text":
        (ckpts / "checkpoint").write_text("hello world\n", encoding="utf-8")
    elif how == "state file binary":
        (ckpts / "checkpoint").write_bytes(bytes(range(256)))
    else:  # every checkpoint
        for index in ckpts.glob("*.index"):
            index.write_bytes(b"hello world")


def damaged_checkpoints(drill: Drill, reference: str) -> dict:
    """Each damage on a copy of a run stopped at step 40, then the same command to the end."""
    base = drill.workdir / "at40"
    drill.finish(base, "train.max_steps=40")
    results = {}
    for how in ("index removed", "data bytes flipped", "state file text", "state file binary",
                "every checkpoint"):  # fmt: skip
        run = drill.workdir / f"damaged-{how.replace(' ', '-')}"
        shutil.copytree(base, run)
        damage(run, how)
        before = sorted(p.name for p in (run / "checkpoints").iterdir())
        code, out, err, _ = drill.train(run)
        found = WEIGHTS.search(out)
        results[how] = {
            "exit": code,
            "warning": "is damaged" in err,
            "one_line_error": code == 2 and len(err.splitlines()) == 1,
            "final_weights_equal": bool(found) and found.group(2) == reference,
            "checkpoints_untouched": code != 2
            or sorted(p.name for p in (run / "checkpoints").iterdir()) == before,
            "metrics_valid": metrics_ok(run),
        }
    return results


def concurrent_trainings(drill: Drill, reference: str) -> dict:
    """Two trainings started at once on one fresh run dir."""
    run = drill.workdir / "concurrent"
    outcomes: list = [None, None]

    def one(i: int) -> None:
        outcomes[i] = drill.train(run)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(o[0] for o in outcomes)
    refused = [o[2] for o in outcomes if o[0] == 2]
    finished = [WEIGHTS.search(o[1]) for o in outcomes if o[0] == 0]
    return {
        "exits": codes,
        "refused_line": refused[0].strip() if refused else None,
        "final_weights_equal": bool(finished) and finished[0].group(2) == reference,
        "metrics_valid": metrics_ok(run),
    }


def disk_full(drill: Drill) -> dict:
    """Training into a 3 MB tmpfs: the first checkpoint (3.4 MB at 256 units) does not fit."""
    if os.geteuid() != 0:
        return {"skipped": "mounting a tmpfs needs root"}
    mount = drill.workdir / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                      capture_output=True, check=False).returncode:  # fmt: skip
        return {"skipped": "cannot mount a tmpfs here"}
    try:
        run = mount / "run"
        code, _, err, _ = drill.train(run, "model.units=256", "train.max_steps=20")
        leftovers = [p.name for p in [*run.glob(".tmp-*"), *run.glob("checkpoints/*_temp*")]]
        return {
            "exit": code,
            "line": err.strip(),
            "one_line": len(err.splitlines()) == 1,
            "leftover_temp_files": leftovers,
            "metrics_valid": metrics_ok(run),
        }
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def summary(result: dict) -> dict:
    """Faults tried and faults survived with nothing lost, over every part of the drill."""
    kills, damaged = result["kill_9"], result["damaged_checkpoints"]
    survived = [  # all damaged: refused in one line, nothing touched
        r["final_weights_equal"] or (r["one_line_error"] and r["checkpoints_untouched"])
        for r in damaged.values()
    ]
    concurrent, disk = result["two_trainings_at_once"], result["disk_full"]
    concurrent_ok = concurrent["exits"] == [0, 2] and concurrent["final_weights_equal"]
    disk_ok = disk.get("one_line", False) and not disk.get("leftover_temp_files")
    parts = [
        (kills["kills"], kills["kills"] if kills["final_weights_equal"] else 0),
        (len(survived), sum(survived)),
        (1, int(concurrent_ok)),
        (int("skipped" not in disk), int(disk_ok)),
    ]
    valid = [
        kills["metrics_valid_after_every_trial"],
        concurrent["metrics_valid"],
        disk.get("metrics_valid", True),
        *(r["metrics_valid"] for r in damaged.values()),
    ]
    return {
        "faults": sum(tried for tried, _ in parts),
        "survived_with_nothing_lost": sum(ok for _, ok in parts),
        "metrics_valid_everywhere": all(valid),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kill -9 trials (default 20)")
    parser.add_argument("--workdir", help="keep the runs here (default: a temp dir, removed)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill delays")
    args = parser.parse_args()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fault-drill-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        drill = Drill(workdir)
        reference, _ = drill.finish(workdir / "reference")
        result = {
            "reference_weights": reference,
            "kill_9": kill_trials(drill, reference, args.kills, random.Random(args.seed)),
            "damaged_checkpoints": damaged_checkpoints(drill, reference),
            "two_trainings_at_once": concurrent_trainings(drill, reference),
            "disk_full": disk_full(drill),
        }
        result["summary"] = summary(result)
        result["processes"] = drill.processes
        result["tracebacks"] = drill.tracebacks
        result["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
