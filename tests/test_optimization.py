"""The learning-rate schedule a run follows, step by step."""

from __future__ import annotations

import math

import pytest

from textgen.core.config import load_config
from textgen.training.optimization import learning_rate_schedule

LR = 0.002
TOL = 1e-6 * LR  # float32 arithmetic: absolute slack where the rate nears 0


def rates(schedule, steps: range) -> list[float]:
    """The learning rate at each step (a constant schedule is a plain number)."""
    if not callable(schedule):
        return [float(schedule)] * len(steps)
    return [float(schedule(step)) for step in steps]


@pytest.mark.parametrize("warmup, ratio", [(10, 0.1), (25, 0.0), (1, 0.5)])
def test_cosine_warms_up_linearly_then_decays_to_its_floor(warmup, ratio):
    decay = 120
    total = warmup + decay
    train_cfg = load_config(
        None,
        [
            "train.lr_schedule=cosine",
            f"train.learning_rate={LR}",
            f"train.warmup_steps={warmup}",
            f"train.min_lr_ratio={ratio}",
        ],
    ).train
    lr = rates(learning_rate_schedule(train_cfg, total), range(total + 50))
    floor = LR * ratio

    # Warmup: a straight line from 0 to the full rate at `warmup`.
    assert lr[0] == pytest.approx(0.0, abs=TOL)
    for step in range(warmup + 1):
        assert lr[step] == pytest.approx(LR * step / warmup, rel=1e-6, abs=TOL), step
    assert lr[warmup] == pytest.approx(LR, rel=1e-6)

    # Decay: half a cosine from the full rate down to the floor at `total`.
    for step in range(warmup, total + 1):
        progress = (step - warmup) / decay
        expected = floor + (LR - floor) * (1 + math.cos(math.pi * progress)) / 2
        assert lr[step] == pytest.approx(expected, rel=1e-6, abs=TOL), step
    assert all(a >= b for a, b in zip(lr[warmup:total], lr[warmup + 1 : total + 1], strict=True))
    assert lr[warmup + decay // 2] == pytest.approx(floor + (LR - floor) / 2, rel=1e-6)

    # The floor is reached at the last step and kept after it (a resumed run with a larger limit).
    assert lr[total] == pytest.approx(floor, rel=1e-6, abs=TOL)
    assert all(value == pytest.approx(floor, rel=1e-6, abs=TOL) for value in lr[total:])


def test_cosine_without_warmup_starts_at_the_full_rate():
    train_cfg = load_config(
        None, ["train.lr_schedule=cosine", f"train.learning_rate={LR}", "train.warmup_steps=0"]
    ).train
    lr = rates(learning_rate_schedule(train_cfg, 100), range(101))
    assert lr[0] == pytest.approx(LR, rel=1e-6)
    assert lr[50] == pytest.approx(LR * (1 + train_cfg.min_lr_ratio) / 2, rel=1e-6)
    assert lr[100] == pytest.approx(LR * train_cfg.min_lr_ratio, rel=1e-6)


def test_constant_is_the_learning_rate_at_every_step():
    train_cfg = load_config(
        None, ["train.lr_schedule=constant", f"train.learning_rate={LR}", "train.warmup_steps=10"]
    ).train
    assert rates(learning_rate_schedule(train_cfg, 100), range(0, 300, 7)) == [LR] * 43


def test_linear_decays_by_equal_steps_to_its_floor_and_keeps_it():
    warmup, decay, ratio = 10, 100, 0.0
    train_cfg = load_config(
        None,
        ["train.lr_schedule=linear", f"train.learning_rate={LR}",
         f"train.warmup_steps={warmup}", f"train.min_lr_ratio={ratio}"],
    ).train  # fmt: skip
    lr = rates(learning_rate_schedule(train_cfg, warmup + decay), range(warmup + decay + 20))
    assert lr[warmup // 2] == pytest.approx(LR / 2, rel=1e-6)  # the same warmup as cosine
    for step in range(warmup, warmup + decay + 1):
        assert lr[step] == pytest.approx(LR * (1 - (step - warmup) / decay), rel=1e-5, abs=TOL)
    assert all(value == pytest.approx(0.0, abs=TOL) for value in lr[warmup + decay :])
