"""A dependency-free progress line (rate and ETA) for terminals; silent when not a TTY."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    """Returns e.g. '1:02:03' or '4:05'."""
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressBar:
    """One self-overwriting line: percentage, bar, amount, rate, ETA and extra fields.

    Args:
        total: The amount at 100% (None: no bar or ETA).
        desc: A short label.
        unit: The unit shown after amounts and rates.
        scale: Multiplies raw amounts for display (e.g. 1e-6 for bytes -> MB).
        initial: The amount already done when the bar starts (a resumed run's step): rate and
            ETA count only what is done from here on.
        stream: Where to draw (stderr by default).
        enabled: Draw at all; defaults to whether `stream` is a terminal.
    """

    def __init__(
        self,
        total: float | None,
        *,
        desc: str,
        unit: str,
        scale: float = 1.0,
        initial: float = 0.0,
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.desc, self.unit, self.scale = total, desc, unit, scale
        self.initial = initial
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._width = 0

    def update(self, done: float, *, rate: float | None = None, **fields: str) -> None:
        """Redraws at most 5 times a second; `rate` overrides the average rate (units/s)."""
        now = time.monotonic()
        if not self.enabled or (now - self._last_draw < 0.2 and done != self.total):
            return
        self._last_draw = now
        elapsed = max(now - self.start, 1e-9)
        rate = (done - self.initial) * self.scale / elapsed if rate is None else rate
        parts = [self.desc]
        if self.total:
            frac = min(done / self.total, 1.0)
            bar = "#" * int(frac * 20)
            parts.append(f"{frac * 100:3.0f}% |{bar:<20}|")
            parts.append(f"{done * self.scale:.1f}/{self.total * self.scale:.1f} {self.unit}")
        else:
            parts.append(f"{done * self.scale:.1f} {self.unit}")
        parts.append(f"{rate:,.1f} {self.unit}/s")
        if self.total and rate > 0:
            remaining = (self.total - done) * self.scale / rate
            parts.append(f"ETA {format_duration(remaining)}")
        parts += [f"{k}={v}" for k, v in fields.items()]
        line = " ".join(parts)
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        """Ends the line, if one was drawn."""
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
