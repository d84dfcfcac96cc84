"""metrics.jsonl and samples.txt cut back to what a checkpoint has seen: torn, doubled, newer."""

from __future__ import annotations

import json
from pathlib import Path

from textgen.run.runlog import cut_metrics, cut_samples, read_records, record_order


def record(step: int, final: bool = False) -> str:
    return json.dumps({"step": step, "epoch": 0, "loss": 1.0, "final": final})


def write_lines(path: Path, *lines: str, end: str = "\n") -> Path:
    path.write_text("\n".join(lines) + end, encoding="utf-8")
    return path


def steps(path: Path) -> list[tuple[int, bool]]:
    return [record_order(r) for r in read_records(path)]


def assert_valid_and_increasing(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    orders = [record_order(json.loads(line)) for line in lines]  # every line is JSON
    assert orders == sorted(set(orders)), orders


def test_records_newer_than_the_checkpoint_and_its_final_are_cut(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", record(10), record(20), record(30), record(30, True))
    assert cut_metrics(path, 30) == 1  # the final evaluation came after the checkpoint
    assert steps(path) == [(10, False), (20, False), (30, False)]
    assert cut_metrics(path, 20) == 1
    assert steps(path) == [(10, False), (20, False)]
    assert cut_metrics(path, 0) == 2  # no checkpoint: nothing was seen
    assert path.read_text(encoding="utf-8") == ""


def test_a_torn_last_line_and_a_glued_record_are_dropped(tmp_path):
    torn = record(40)[:17]
    path = write_lines(
        tmp_path / "m.jsonl", record(10), torn + record(20), record(30), torn, end=""
    )
    assert cut_metrics(path, 40) == 2
    assert steps(path) == [(10, False), (30, False)]
    assert_valid_and_increasing(path)
    assert path.read_text(encoding="utf-8").endswith("\n")  # the next append starts a line


def test_duplicates_from_retries_are_dropped(tmp_path):
    path = write_lines(
        tmp_path / "m.jsonl", record(10), record(20), record(30), record(30), record(30)
    )
    assert cut_metrics(path, 30) == 2
    assert_valid_and_increasing(path)
    assert steps(path) == [(10, False), (20, False), (30, False)]


def test_a_clean_log_is_left_as_it_is(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", record(10), record(20))
    inode = path.stat().st_ino
    assert cut_metrics(path, 20) == 0
    assert path.stat().st_ino == inode  # not rewritten
    assert cut_metrics(tmp_path / "missing.jsonl", 10) == 0


def test_samples_are_cut_to_complete_blocks_up_to_the_step(tmp_path):
    blocks = [f"=== epoch {e} step {s} ===\n--- temperature 1.0\nab\ncd\n\n" for e, s in
              ((1, 20), (2, 40), (3, 60))]  # fmt: skip
    path = tmp_path / "samples.txt"
    path.write_text("".join(blocks) + "=== epoch 4 step 80 ===\n--- temp", encoding="utf-8")
    assert cut_samples(path, 60) == 1  # the torn block
    assert path.read_text(encoding="utf-8") == "".join(blocks)
    assert cut_samples(path, 40) == 1
    assert path.read_text(encoding="utf-8") == "".join(blocks[:2])
    assert cut_samples(path, 40) == 0
