"""A time budget for training: measure the step rate, then fit the schedule's horizon to it.

With `train.max_time` set, the run does not know how many steps it will make. After the first
call (which compiles) and a short measuring window, the budget estimates the seconds per step
(train calls, plus each evaluation's cost spread over `eval_every` steps) and fits the cosine
horizon so that the schedule reaches its floor when the time is up. It refits after every later
call from the rate measured since the window opened, so a machine that gets faster or slower
mid-run (another job starting or ending) still ends annealed on time: one fit from the first
minute ended a 600-s run at 506 s when another job had run during that minute
(docs/benchmarks.md). The horizon is kept in the checkpoint, and the seconds already trained
too, so a resumed run keeps both until it has measured its own rate.

The budget is the whole run: the final evaluation (all of val, scored after the last step) is
reserved out of it, estimated from the periodic evaluations' measured cost scaled by the tokens
each scores. Without the reserve a 600-s run took 611 s (docs/benchmarks.md).
"""

from __future__ import annotations

import time

MEASURE_S = 60.0  # seconds of steady steps measured before fitting (less for short budgets):
MEASURE_SHARE = 0.1  # ... at most this share of the budget. The first calls after compiling run
# slow; a 20-s window fitted 600-s runs that then ended 11-20% early (docs/benchmarks.md)
MIN_CALLS = 2  # steady calls measured at the least (the first call, which compiles, never counts)
SAFETY = 0.98  # aim to finish a little early: evaluations and checkpoints vary


class TimeBudget:
    """Seconds of training allowed to a run, across restarts.

    The step rate is measured on the wall clock from the end of this invocation's first call
    (which compiles), so checkpoints, samples and the Python loop count; evaluations are taken
    out and added back at their configured frequency.

    Args:
        seconds: The budget (`train.max_time`).
        spent: Seconds trained by earlier invocations of the run (from the checkpoint).
        eval_every: Steps between periodic evaluations.
    """

    def __init__(self, seconds: float, *, spent: float = 0.0, eval_every: int) -> None:
        self.seconds, self.spent, self.eval_every = seconds, spent, eval_every
        self.start = time.monotonic()
        self.window: tuple[float, int] | None = None  # (time, step) after the first call
        self.calls = 0  # calls since the window opened
        self.eval_in_window = 0.0  # seconds of evaluations since the window opened
        self.eval_seconds: float | None = None  # the last periodic evaluation's cost
        self.reserved = 0.0  # seconds kept for the final evaluation, after the last step

    def elapsed(self) -> float:
        """Seconds trained so far, earlier invocations included."""
        return self.spent + time.monotonic() - self.start

    def remaining(self) -> float:
        """Seconds left for training: the budget less what was spent and what is reserved."""
        return max(self.seconds - self.reserved - self.elapsed(), 0.0)

    def observe_call(self, step: int) -> None:
        """Records a train call that ended at `step`; the first opens the measuring window."""
        if self.window is None:
            self.window = (time.monotonic(), step)
        else:
            self.calls += 1

    def observe_eval(self, seconds: float, *, final_share: float = 0.0) -> None:
        """Records the cost of a periodic evaluation.

        Args:
            seconds: What it took.
            final_share: The final evaluation's tokens over this one's: its cost, estimated as
                `seconds * final_share`, is reserved out of the budget.
        """
        self.eval_seconds = seconds
        self.reserved = seconds * final_share
        if self.window is not None:
            self.eval_in_window += seconds

    def measured(self) -> bool:
        """True once enough steady calls were timed to fit the horizon."""
        if self.window is None or self.calls < MIN_CALLS:
            return False
        return time.monotonic() - self.window[0] >= min(MEASURE_S, MEASURE_SHARE * self.seconds)

    def seconds_per_step(self, step: int) -> float:
        """Measured wall seconds per step up to `step`, evaluations at their frequency."""
        opened, first = self.window
        loop = (time.monotonic() - opened - self.eval_in_window) / max(step - first, 1)
        return loop + (self.eval_seconds or 0.0) / self.eval_every

    def fit_horizon(self, step: int) -> int:
        """The step at which the schedule should end, seen from `step` now."""
        more = SAFETY * self.remaining() / max(self.seconds_per_step(step), 1e-9)
        return step + max(int(more), 1)
