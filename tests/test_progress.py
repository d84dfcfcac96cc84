"""The progress line users see on a terminal: amount, rate, ETA; nothing when not a TTY."""

from __future__ import annotations

import io
import re

from textgen.core.progress import ProgressBar, format_duration


def test_durations_read_like_a_clock() -> None:
    assert format_duration(5) == "0:05"
    assert format_duration(65) == "1:05"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(-3) == "0:00"


def test_bar_shows_percentage_amount_rate_eta_and_fields() -> None:
    out = io.StringIO()
    bar = ProgressBar(200, desc="train", unit="steps", stream=out, enabled=True)
    bar.update(200, rate=50.0, loss="1.234")
    bar.close()
    line = out.getvalue()
    assert line.startswith("\rtrain 100% |")
    assert "200.0/200.0 steps" in line
    assert "50.0 steps/s" in line
    assert "ETA 0:00" in line and "loss=1.234" in line
    assert line.endswith("\n")


def test_bar_without_total_shows_amount_and_rate_only() -> None:
    out = io.StringIO()
    bar = ProgressBar(None, desc="index", unit="MB", scale=1e-6, stream=out, enabled=True)
    bar.update(3_000_000, rate=30.0)
    assert "3.0 MB" in out.getvalue() and "30.0 MB/s" in out.getvalue()
    assert "ETA" not in out.getvalue() and "%" not in out.getvalue()


def test_nothing_is_drawn_when_not_a_terminal() -> None:
    out = io.StringIO()  # not a TTY: the default is to stay silent
    bar = ProgressBar(10, desc="train", unit="steps", stream=out)
    bar.update(5)
    bar.close()
    assert out.getvalue() == ""


def test_dropout_auto_is_said_with_its_value_and_reason(capsys) -> None:
    from textgen.train import _Printer

    printer = _Printer(stream=io.StringIO(), enabled=True)
    printer("dropout", value=0.25, reason="the run will see its text ~6.8 times, >= 6")
    line = "model.dropout auto: 0.25 (the run will see its text ~6.8 times, >= 6)\n"
    assert capsys.readouterr().out == line  # as the README shows it


def test_after_a_resume_rate_and_eta_count_only_this_processs_steps() -> None:
    from textgen.train import _Printer

    out = io.StringIO()
    printer = _Printer(stream=out, enabled=True)
    printer(
        "resume",
        checkpoint="ckpt-1000",
        step=1000,
        epoch=2,
        batch=0,
        total=2000,
        notes=[],
        precision="float32",
    )
    printer.train_bar.start -= 10.0  # this process has trained for 10 s since it resumed
    printer("progress", step=1010, total=2000, loss=1.5, chars_per_sec=100.0, epoch=2)
    line = out.getvalue()
    # 10 steps in 10 s: 1 step/s and 990 steps to go (not 1,010 steps in 10 s).
    assert "1.0 steps/s" in line, line
    assert re.search(r"ETA 16:3[01]\b", line), line
    assert "1010.0/2000.0 steps" in line
