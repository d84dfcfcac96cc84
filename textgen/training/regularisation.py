"""`model.dropout: auto`: dropout for a run that will see its training text many times.

Measured (docs/benchmarks.md, "Fine-tuning"): fine-tuned from `make pretrained` for 2 minutes,
dropout 0.25 beat 0 on all three 100 KB texts (Austen, Shakespeare, the Jargon File: -0.04,
-0.05, -0.10 bpc; ~6.8 passes over the text) and lost on all six of 300 KB and 1 MB (+0.04 to
+0.14; ~2.5 and ~0.6 passes), and on all three 300 KB texts again with the run alone on the
machine (+0.01 to +0.04; ~4.9 passes planned, 4.0-4.9 made). So auto is 0.25 from `MIN_PASSES`
planned passes on, else 0. The passes are planned from the budget: exactly for epochs and
`max_steps`; for `max_time`, from the rate the `init_from` source run trained at (same model
shape); a time-budgeted run from scratch has no rate before it starts, and gets 0 (base.yaml's:
a large text is the common case).
"""

from __future__ import annotations

import dataclasses

from textgen.core.config import Config

AUTO_DROPOUT = 0.25  # the value measured against 0 (finetune.yaml's before auto)
MIN_PASSES = 6.0  # between ~4.9 planned passes (dropout lost, 3 of 3) and ~6.8 (it won, 3 of 3)


def planned_passes(cfg: Config, *, steps_per_pass: int, total_steps: int,
                   source_windows_per_s: float | None) -> float | None:  # fmt: skip
    """Passes over the training split the run is planned to make; None if unknown.

    Args:
        cfg: The run's config.
        steps_per_pass: Steps of one whole pass over the training split (`DataPlan`).
        total_steps: The run's steps when it is not time-budgeted (`DataPlan.total_steps`).
        source_windows_per_s: The `init_from` source's training rate, if any.
    """
    tc = cfg.train
    if tc.max_time:  # epochs do not bound a time-budgeted run; max_steps does
        if not source_windows_per_s:
            return None
        steps = tc.max_time * source_windows_per_s / tc.batch_size
        if tc.max_steps:
            steps = min(steps, tc.max_steps)
    else:
        steps = total_steps
    return steps / max(steps_per_pass, 1)


def source_windows_per_s(records: list[dict], batch_size: int) -> float | None:
    """Training windows per second of a source run, from its metrics.jsonl records."""
    timed = [r for r in records if r.get("elapsed_s") and r.get("step")]
    if not timed:
        return None
    last = timed[-1]
    return last["step"] * batch_size / last["elapsed_s"]


def resolve_dropout(cfg: Config, *, steps_per_pass: int, total_steps: int,
                    source_windows_per_s: float | None, saved: Config | None = None
                    ) -> tuple[Config, str | None]:  # fmt: skip
    """`cfg` with `model.dropout: auto` replaced by a number, and why (None if not auto).

    A resumed run keeps the value it started with (`saved`, its config.yaml): the checkpoint's
    dropout state and the run's exact resume depend on it.
    """
    if cfg.model.dropout != "auto":
        return cfg, None
    if saved is not None and saved.model.dropout != "auto":
        value, reason = saved.model.dropout, "as this run started"
    else:
        passes = planned_passes(cfg, steps_per_pass=steps_per_pass, total_steps=total_steps,
                                source_windows_per_s=source_windows_per_s)  # fmt: skip
        if passes is None:
            value = 0.0  # a run from scratch, or a source without metrics.jsonl records
            reason = "a time budget, and no training rate known before the run starts"
        else:
            value = AUTO_DROPOUT if passes >= MIN_PASSES else 0.0
            side = ">=" if passes >= MIN_PASSES else "<"
            reason = f"the run will see its text ~{passes:.1f} times, {side} {MIN_PASSES:g}"
    return cfg.replace(model=dataclasses.replace(cfg.model, dropout=value)), reason
