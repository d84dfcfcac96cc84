"""`model.dropout: auto`: the planned passes over the text and the value they give."""

from __future__ import annotations

import pytest
from conftest import REPO_ROOT

from textgen.core.config import ConfigError, load_config
from textgen.training.regularisation import (
    planned_passes,
    resolve_dropout,
    source_windows_per_s,
)  # fmt: skip

FINETUNE = REPO_ROOT / "configs" / "finetune.yaml"


def finetune(*overrides: str):
    return load_config(FINETUNE, list(overrides))


def test_finetune_yaml_asks_for_auto_and_a_bad_value_names_the_key() -> None:
    assert finetune().model.dropout == "auto"
    with pytest.raises(ConfigError, match=r"model.dropout must be in \[0, 1\) or auto"):
        finetune("model.dropout=1.5")
    with pytest.raises(ConfigError, match=r"model\.dropout"):
        finetune("model.dropout=lots")


@pytest.mark.parametrize(
    ("text_kb", "steps", "expected", "words"),
    [
        (100, 624, 0.25, "~6.8 times, >= 6"),  # measured: 0.25 won on all three texts
        (300, 1340, 0.0, "~4.8 times, < 6"),  # measured alone: 0.25 lost on all three
        (300, 624, 0.0, "~2.2 times, < 6"),
        (1000, 624, 0.0, "~0.7 times"),
    ],
)
def test_two_minutes_fine_tuned_use_dropout_only_on_a_small_text(text_kb, steps, expected, words):
    # The measured runs: ~624 steps of 16 windows in 2 minutes with two runs side by side, and
    # the source's ~1,340 (make pretrained's rate) for a run alone on the machine.
    rate = source_windows_per_s([{"step": steps, "elapsed_s": 120.0}], 16)
    steps_per_pass = text_kb * 950 // 64 // 16  # the 95% train split in 16 x 64-token windows
    cfg, reason = resolve_dropout(finetune(), steps_per_pass=steps_per_pass, total_steps=0,
                                  source_windows_per_s=rate)  # fmt: skip
    assert cfg.model.dropout == expected and words in reason
    assert finetune().model.dropout == "auto"  # the config given is not changed


def test_a_time_budget_is_capped_by_max_steps_and_steps_budgets_are_exact() -> None:
    fast = 1e6  # windows/s: the time budget alone would plan thousands of passes
    capped = finetune("train.max_steps=400")
    assert planned_passes(capped, steps_per_pass=100, total_steps=0,
                          source_windows_per_s=fast) == 4.0  # fmt: skip
    by_steps = finetune("train.max_time=null", "train.max_steps=400")
    assert planned_passes(by_steps, steps_per_pass=200, total_steps=400,
                          source_windows_per_s=None) == 2.0  # fmt: skip


def test_without_a_rate_a_time_budget_gets_no_dropout_and_says_why() -> None:
    cfg, reason = resolve_dropout(finetune(), steps_per_pass=50, total_steps=0,
                                  source_windows_per_s=None)  # fmt: skip
    assert cfg.model.dropout == 0.0 and "no training rate known" in reason


def test_a_number_is_kept_and_a_resumed_run_keeps_its_first_value() -> None:
    fixed = finetune("model.dropout=0.1")
    kept = resolve_dropout(fixed, steps_per_pass=5, total_steps=0, source_windows_per_s=100.0)
    assert kept == (fixed, None)
    started = finetune("model.dropout=0.0")
    cfg, reason = resolve_dropout(finetune(), steps_per_pass=5, total_steps=0,
                                  source_windows_per_s=1e6, saved=started)  # fmt: skip
    assert cfg.model.dropout == 0.0 and reason == "as this run started"
