"""`textgen.training.curves`: the learning-curve PNG of a run."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from textgen.run.rundir import RunDir
from textgen.training.curves import CurvesPainter, plot_curves, train_bpc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def record(step: int, loss: float, val_loss: float, chars_per_token: float, final=False) -> dict:
    """A metrics.jsonl record as the trainer writes it."""
    val_bpc = val_loss / math.log(2) / chars_per_token
    return {"step": step, "loss": loss, "val_loss": val_loss, "val_bpc": val_bpc, "final": final}


RECORDS = [record(s, 3.0 - s / 100, 3.1 - s / 100, 1.0) for s in (10, 20, 30)] + [
    record(30, 2.7, 2.75, 1.0, final=True)
]


@pytest.mark.parametrize("chars_per_token", [1.0, 3.5])
def test_train_loss_is_converted_to_bits_per_character(chars_per_token: float) -> None:
    r = record(10, loss=2.0, val_loss=2.5, chars_per_token=chars_per_token)
    assert train_bpc(r) == pytest.approx(2.0 / math.log(2) / chars_per_token)


def test_plot_writes_a_png_in_place(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    path.write_bytes(b"an older plot")
    assert plot_curves(RECORDS, path, title="runs/x")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]  # no temp file left


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(OSError):
        plot_curves(RECORDS, tmp_path / "missing-dir" / "curves.png")
    assert not list(tmp_path.rglob("*"))


def test_without_matplotlib_nothing_is_drawn(tmp_path: Path, monkeypatch) -> None:
    for name in ("matplotlib", "matplotlib.figure"):  # as if the optional extra were absent
        monkeypatch.setitem(sys.modules, name, None)
    assert not plot_curves(RECORDS, tmp_path / "curves.png")
    assert not list(tmp_path.iterdir())


def test_no_records_draw_nothing(tmp_path: Path) -> None:
    assert not plot_curves([], tmp_path / "curves.png")
    assert not list(tmp_path.iterdir())


def test_the_painter_redraws_at_most_once_a_minute_unless_forced(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = RunDir(tmp_path / "run")
    run.prepare()
    for r in RECORDS:
        run.append_metrics(r)
    warnings: list[str] = []
    paint = CurvesPainter(run, warn=warnings.append)
    paint()
    assert run.curves.is_file()
    run.curves.unlink()
    paint()  # within the minute: not redrawn
    assert not run.curves.exists()
    paint(force=True)  # after a final evaluation
    assert run.curves.is_file() and not warnings
