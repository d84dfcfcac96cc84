"""A run's logs, metrics.jsonl and samples.txt: appended as training goes, cut back on resume.

A process can die between appending a record and saving the checkpoint that follows it, or in
the middle of a line. On resume the logs are cut back to what the restored checkpoint has seen,
so every line of metrics.jsonl is one JSON object and the records are in strictly increasing
`(step, final)` order: one periodic record per step, and a run's final evaluation (all of val,
`final: true`) after the periodic one of its step.

What a checkpoint at step S has seen: the periodic evaluations up to S and the samples up to S
(the loop evaluates and samples before it checkpoints), but not the final evaluation at S (made
after the last checkpoint, and made again when the run resumes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from textgen.core.filewrite import write_atomic, writing

SAMPLES_HEADER = re.compile(r"^=== epoch \d+ step (\d+) ===$", re.MULTILINE)


def append_text(path: Path, text: str, *, what: str) -> None:
    """Appends `text` in one write; a full disk is a TextgenError naming `what`."""
    with writing(what, path), open(path, "a", encoding="utf-8") as f:
        f.write(text)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The valid JSON objects of a JSONL file, in order (torn or garbled lines are skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def record_order(record: dict[str, Any]) -> tuple[int, bool]:
    """The key that metrics.jsonl records strictly increase in."""
    return record["step"], bool(record.get("final"))


def seen_by_checkpoint(record: dict[str, Any], step: int) -> bool:
    """True when a checkpoint at `step` was saved after this record was written."""
    return record_order(record) <= (step, False)


def cut_metrics(path: Path, step: int) -> int:
    """Keeps the records a checkpoint at `step` has seen, in strictly increasing order.

    Returns:
        How many lines were dropped (torn, garbled, duplicated or newer than `step`).
    """
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    kept: list[dict[str, Any]] = []
    for record in read_records(path):
        if seen_by_checkpoint(record, step) and (
            not kept or record_order(record) > record_order(kept[-1])
        ):
            kept.append(record)
    dropped = len([line for line in lines if line.strip()]) - len(kept)
    if dropped or (kept and not path.read_bytes().endswith(b"\n")):
        text = "".join(json.dumps(record) + "\n" for record in kept)
        write_atomic(path, text, what="metrics.jsonl")
    return dropped


def cut_samples(path: Path, step: int) -> int:
    """Keeps the complete sample blocks of steps up to `step` (each ends with a blank line).

    Returns:
        How many blocks were dropped.
    """
    if not path.is_file():
        return 0
    text = path.read_text(encoding="utf-8", errors="replace")
    starts = [m.start() for m in SAMPLES_HEADER.finditer(text)]
    blocks = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
    kept = [
        block
        for block in blocks
        if int(SAMPLES_HEADER.match(block).group(1)) <= step and block.endswith("\n\n")
    ]
    if len(kept) != len(blocks) or (starts and starts[0] != 0):
        write_atomic(path, "".join(kept), what="samples.txt")
    return len(blocks) - len(kept)
