"""A time budget (`train.max_time`): the schedule is fitted to it, and a resume keeps it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_trainer import SENTENCE, Recorder, make_paths

from textgen.run.rundir import RunDir
from textgen.training.budget import TimeBudget
from textgen.training.trainer import StopFlag, train

LR, FLOOR_RATIO = 0.01, 0.1  # configs/tiny.yaml's learning rate; the cosine floor here


def budgeted(paths, *overrides: str):
    return paths.config(
        "train.max_time=8s",
        "train.epochs=1000",  # not the budget: the time is
        "train.warmup_steps=0",
        f"train.min_lr_ratio={FLOOR_RATIO}",
        "sample.epoch_temperatures=[]",
        *overrides,
    )


def test_a_time_budget_fits_the_schedule_and_ends_annealed(tmp_path: Path) -> None:
    paths = make_paths(tmp_path, SENTENCE * 300)
    events = Recorder()
    result = train(budgeted(paths), on_event=events)

    [start] = events.of("start")
    assert start["steps"] is None and start["budget"] == "time budget 0:08"
    [fitted] = events.of("budget")  # announced once, after the step rate was measured
    assert fitted["horizon"] > fitted["step"] > 0
    assert result.stop_reason in ("done", "max_time")
    records = RunDir(paths.out).read_metrics()
    assert records[-1]["final"] and records[-1]["elapsed_s"] <= 8 + 5
    # The learning rate fell along the cosine and ends at (or within a hair of) its floor.
    rates = [r["lr"] for r in records]
    assert max(rates) <= LR and rates[-1] < rates[0]
    assert rates[-1] == pytest.approx(LR * FLOOR_RATIO, abs=0.02 * LR)
    # The progress line knew the total once the horizon was fitted.
    totals = [p["total"] for p in events.of("progress")]
    assert totals[0] is None and totals[-1] >= fitted["step"]


def test_a_run_slowed_while_its_rate_is_measured_still_spends_its_budget(tmp_path: Path) -> None:
    paths = make_paths(tmp_path, SENTENCE * 300)
    events = Recorder()

    def slow_until_fitted(kind: str, **data) -> None:
        events(kind, **data)
        if kind == "progress" and not events.of("budget"):
            time.sleep(0.2)  # another job hogs the machine while the rate is measured

    result = train(budgeted(paths), on_event=slow_until_fitted)
    [fitted] = events.of("budget")
    # The first fit expected the slow rate; refits followed the faster one to the end of the
    # budget instead of ending the run at the first fit's step.
    assert result.step > fitted["horizon"]
    assert result.stop_reason in ("done", "max_time")
    rates = [r["lr"] for r in RunDir(paths.out).read_metrics()]
    assert rates[-1] == pytest.approx(LR * FLOOR_RATIO, abs=0.02 * LR)


def test_a_budgeted_run_resumes_with_its_horizon_and_its_time_spent(tmp_path: Path) -> None:
    paths = make_paths(tmp_path, SENTENCE * 300)
    stop = StopFlag()
    first = Recorder()

    def stop_once_fitted(kind: str, **data) -> None:
        first(kind, **data)
        if kind == "budget":
            stop.set()  # as Ctrl-C would: checkpoint after this call, then return

    stopped = train(budgeted(paths, "train.max_time=20s"), on_event=stop_once_fitted, stop=stop)
    [fitted] = first.of("budget")
    assert stopped.stop_reason == "interrupted" and fitted["horizon"] > stopped.step
    spent = RunDir(paths.out).read_metrics()[-1]["elapsed_s"]

    again = Recorder()
    result = train(budgeted(paths, "train.max_time=20s"), on_event=again)
    [resume] = again.of("resume")
    assert resume["step"] == stopped.step and resume["total"] == fitted["horizon"]
    assert not again.of("budget")  # the horizon came from the checkpoint, not a new fit
    records = RunDir(paths.out).read_metrics()
    later = [r for r in records if r["step"] > stopped.step]
    assert later and later[0]["elapsed_s"] > spent  # the clock goes on from the first part
    assert result.stop_reason in ("done", "max_time")
    assert records[-1]["lr"] == pytest.approx(LR * FLOOR_RATIO, abs=0.02 * LR)


def test_the_fitted_horizon_spends_the_remaining_time_at_the_measured_rate() -> None:
    budget = TimeBudget(600.0, spent=100.0, eval_every=100)
    budget.observe_call(10)  # the first call compiles: it only opens the measuring window
    budget.observe_call(20)
    budget.observe_call(30)
    assert not budget.measured()  # two steady calls, but no time measured yet
    opened, first = budget.window
    budget.window = (opened - 60.0, first)  # as if the 20 steps since had taken 60 s
    budget.observe_eval(20.0)  # ... of which an evaluation took 20 s
    assert budget.measured()
    # (60 s - 20 s of evaluation) / 20 steps, plus the evaluation spread over eval_every steps.
    assert budget.seconds_per_step(30) == pytest.approx(40 / 20 + 20 / 100, rel=1e-3)
    remaining = budget.remaining()
    assert 499 < remaining <= 500  # 600 s, of which 100 were spent by an earlier invocation
    horizon = budget.fit_horizon(step=30)
    assert horizon == pytest.approx(30 + 0.98 * remaining / 2.2, abs=1)


def test_the_final_evaluation_is_reserved_out_of_the_budget() -> None:
    budget = TimeBudget(600.0, eval_every=100)
    before = budget.remaining()
    # A periodic evaluation of 1,000 tokens took 2 s; the final one scores 12.5x as many.
    budget.observe_eval(2.0, final_share=12.5)
    assert before - budget.remaining() == pytest.approx(25.0, abs=0.5)
    budget.observe_eval(1.0, final_share=12.5)  # the latest measurement replaces the estimate
    assert before - budget.remaining() == pytest.approx(12.5, abs=0.5)


def test_a_budgeted_runs_metrics_say_what_each_evaluation_cost(tmp_path: Path) -> None:
    paths = make_paths(tmp_path, SENTENCE * 300)
    train(budgeted(paths, "train.max_time=4s"))
    records = RunDir(paths.out).read_metrics()
    assert all(r["eval_s"] >= 0 for r in records)
    assert records[-1]["final"]
