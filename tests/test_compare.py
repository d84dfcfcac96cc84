"""`textgen.compare`: exact one-hot estimates, measured peaks, the skip rule, bad input."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, cli_env, run_cli, synthetic_text, write_corpus

from textgen import compare
from textgen.comparison import measure
from textgen.comparison import report as compare_report
from textgen.comparison.worker import classic_arrays
from textgen.core.config import load_config
from textgen.core.errors import TextgenError

TINY = REPO_ROOT / "configs" / "tiny.yaml"


def classic_loop(text: str, maxlen: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """keras-io's lstm_text_generation.py, verbatim in spirit: the per-character Python loop."""
    chars = sorted(set(text))
    char_indices = {c: i for i, c in enumerate(chars)}
    sentences, next_chars = [], []
    for i in range(0, len(text) - maxlen, step):
        sentences.append(text[i : i + maxlen])
        next_chars.append(text[i + maxlen])
    x = np.zeros((len(sentences), maxlen, len(chars)), dtype="bool")
    y = np.zeros((len(sentences), len(chars)), dtype="bool")
    for i, sentence in enumerate(sentences):
        for t, char in enumerate(sentence):
            x[i, t, char_indices[char]] = 1
        y[i, char_indices[next_chars[i]]] = 1
    return x, y


@pytest.mark.parametrize(
    ("text", "maxlen", "step"),
    [
        (synthetic_text(lines=60, seed=3), 40, 3),
        (synthetic_text(lines=30, seed=4), 7, 1),
        (synthetic_text(lines=30, seed=5), 40, 41),
        ("abc" * 14, 40, 3),  # 42 chars: exactly one window
        ("short", 40, 3),  # no window at all
    ],
)
def test_estimates_equal_nbytes_and_arrays_match_the_classic_loop(text, maxlen, step):
    arrays = classic_arrays(text, maxlen, step)
    windows, x_bytes, y_bytes = measure.onehot_sizes(len(text), len(set(text)), maxlen, step)
    assert windows == len(arrays.sentences) == arrays.x.shape[0]
    assert x_bytes == arrays.x.nbytes
    assert y_bytes == arrays.y.nbytes
    x, y = classic_loop(text, maxlen, step)
    np.testing.assert_array_equal(arrays.x, x)
    np.testing.assert_array_equal(arrays.y, y)


def test_skip_rule():
    assert measure.fits(80.0, 100.0)
    assert not measure.fits(80.1, 100.0)
    assert measure.fits(1e9, float("inf"))  # memory that cannot be read skips nothing


def test_available_mb_is_memavailable_in_mb():
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        pytest.skip("no /proc/meminfo")
    [kib] = [
        line.split()[1]
        for line in meminfo.read_text().splitlines()
        if line.startswith("MemAvailable:")
    ]
    expected = int(kib) * 1024 / 1e6  # kB in /proc/meminfo are KiB; MB are 10^6 bytes
    available = measure.available_mb()
    assert math.isfinite(available) and available > 0
    assert available == pytest.approx(expected, rel=0.05)  # other processes come and go


def test_prefixes_cut_on_a_character_boundary(tmp_path):
    corpus = write_corpus(tmp_path, "é" * 10)  # 20 bytes
    cfg = load_config(TINY, [f"data.path={corpus}"])
    [cut] = measure.read_prefixes(cfg, [3e-6])  # 3 bytes: one é and half of the next
    assert (cut.text, cut.nbytes, cut.whole) == ("é", 2, False)
    first, whole = measure.read_prefixes(cfg, [4e-6, 20e-6, 1.0])  # 20 B and 1 MB: the same
    assert (first.text, first.whole) == ("éé", False)
    assert (whole.text, whole.nbytes, whole.whole, whole.requested_mb) == (
        "é" * 10,
        20,
        True,
        20e-6,
    )


def test_the_parent_never_imports_tensorflow():
    code = (
        "import sys, textgen.compare, textgen.data.corpus, textgen.data.sources;"
        "assert not {'tensorflow', 'keras'} & set(sys.modules), 'imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--sizes", "0"], "--sizes"),
        (["--sizes", "1,-2"], "'-2'"),
        (["--sizes", "1,,2"], "--sizes"),
        (["--sizes", "nan"], "'nan'"),
        (["--sizes", "big"], "'big'"),
        (["--steps", "0"], "--steps"),
        (["--steps", "two"], "invalid int"),
        (["--json", "/nonexistent-dir/rows.json"], "No such file or directory (--json)"),
        (["--plot", "{tmp}"], "is a directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, fragment):
    corpus = write_corpus(tmp_path, synthetic_text(lines=50))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    safe = [str(TINY), f"data.path={corpus}", "--sizes", "0.001", "--steps", "1"]  # if not caught
    with pytest.raises(TextgenError) as info:
        compare.main([*safe, *args])
    assert fragment in info.value.line()


def test_bad_input_from_the_command_line(tmp_path):
    corpus = write_corpus(tmp_path, synthetic_text(lines=50))
    not_a_dir = write_corpus(tmp_path, "a file", name="file.txt")
    proc = run_cli(
        "textgen.compare", TINY, f"data.path={corpus}", "--sizes", "0.001", "--steps", "1",
        "--json", not_a_dir / "rows.json", timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("textgen: error: ") and "--json" in line
    assert proc.stdout == ""


def test_measures_both_pipelines_on_the_whole_corpus(tmp_path):
    corpus = write_corpus(tmp_path, synthetic_text(lines=450, seed=7))  # ~24 kB, < 0.05 MB
    text = corpus.read_text(encoding="utf-8")
    json_path, png_path = tmp_path / "rows.json", tmp_path / "peaks.png"
    proc = run_cli(
        "textgen.compare", TINY, f"data.path={corpus}", "--sizes", "0.05,1", "--steps", "1",
        "--json", json_path, "--plot", png_path, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "measuring it whole for 0.05, 1 MB" in proc.stderr
    [row] = json.loads(json_path.read_text(encoding="utf-8"))["rows"]
    assert row["onehot_status"] == "measured" and row["whole_corpus"]
    assert (row["chars"], row["vocab"]) == (len(text), len(set(text)))
    assert row["windows"] == len(range(0, len(text) - 40, 3))
    assert row["onehot_x_bytes"] == row["windows"] * 40 * row["vocab"]
    assert row["onehot_y_bytes"] == row["windows"] * row["vocab"]
    assert row["onehot_build_peak_mb"] * 1e6 > row["onehot_x_bytes"]
    assert row["onehot_train_peak_mb"] * 1e6 > row["onehot_x_bytes"]
    assert row["ids_train_peak_mb"] > 0
    assert 4 * len(text) <= row["ids_index_bytes"] <= 4 * len(text) + 1024  # int32 per char
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| corpus |") and len(lines) == 3
    assert "(whole corpus)" in lines[2] and "skipped" not in lines[2]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_that_does_not_fit_is_not_started(tmp_path):
    text = synthetic_text(lines=300, seed=8)
    prefix = write_corpus(tmp_path, text)
    cfg = load_config(TINY, measure.CLASSIC_OVERRIDES)
    _, x_bytes, y_bytes = measure.onehot_sizes(len(text), len(set(text)))
    row = {
        "mb": 0.02,
        "onehot_build_estimate_mb": (x_bytes + y_bytes) / 1e6,
        "onehot_train_estimate_mb": measure.onehot_train_estimate_mb(x_bytes + y_bytes),
    }
    between = (row["onehot_build_estimate_mb"] + row["onehot_train_estimate_mb"]) / 2
    out = measure._measure_onehot(row, prefix, cfg, 1, between / measure.RAM_FRACTION, print)
    assert out["onehot_status"] == "skipped"
    assert out["onehot_build_peak_mb"] * 1e6 > x_bytes  # the build fitted: measured
    assert out["onehot_train_peak_mb"] is None  # build + fit did not: never started
    nothing = measure._measure_onehot(row, prefix, cfg, 1, 0.0, print)
    assert nothing["onehot_status"] == "skipped"
    assert nothing["onehot_build_peak_mb"] is None and nothing["onehot_train_peak_mb"] is None


def test_table_and_plot_show_skipped_estimates(tmp_path):
    def row(mb, status, build, train, ids):
        return {
            "mb": mb, "whole_corpus": False, "chars": int(mb * 1e6), "vocab": 70,
            "windows": int(mb * 1e6 / 3), "onehot_x_bytes": int(mb * 1e6 / 3) * 40 * 70,
            "onehot_y_bytes": int(mb * 1e6 / 3) * 70, "onehot_status": status,
            "onehot_build_estimate_mb": mb * 950, "onehot_train_estimate_mb": mb * 3000,
            "onehot_build_peak_mb": build, "onehot_train_peak_mb": train,
            "ids_index_bytes": int(mb * 4e6), "ids_train_peak_mb": ids,
        }  # fmt: skip

    rows = [row(1, "measured", 1000, 3600, 700), row(100, "skipped", None, None, 710)]
    table = compare_report.markdown_table(rows, 5).splitlines()
    assert "5 steps" in table[0]
    assert "| 1 MB |" in table[2] and "3,600 MB" in table[2]
    assert "skipped (est. 95.0 GB)" in table[3] and "skipped (est. 300.0 GB)" in table[3]
    assert table[3].endswith("| 400 MB | 710 MB |")
    png = tmp_path / "plot.png"
    drawn = compare_report.plot(rows, str(png), 5, available=20_000.0, ram_fraction=0.8)
    if importlib.util.find_spec("matplotlib") is None:  # an optional extra
        assert not drawn and not png.exists()
    else:
        assert drawn and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "config", sorted((REPO_ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_textgen_side_runs_the_classic_windows_on_every_config(tmp_path, config):
    from textgen.data.corpus import index_corpus
    from textgen.data.dataplan import DataPlan

    text = synthetic_text(lines=300, seed=9)
    corpus = write_corpus(tmp_path, text)
    words = [f"data.path={corpus}"]
    own = load_config(config, words)
    cfg = load_config(config, [*measure.CLASSIC_OVERRIDES, *words])
    used = measure.ids_config(cfg, corpus, tmp_path, 2, len(text))
    index, _ = index_corpus(used.data, min_split_tokens=41)
    DataPlan(used, index)  # what refused base.yaml's carried state with the classic windows
    assert (used.windows.maxlen, used.windows.step, used.windows.target) == (40, 3, "next")
    assert not used.windows.carry_state
    overridden = {o["key"]: o for o in measure.overridden_settings(own, used)}
    for key, value, _ in measure.CLASSIC_SETTINGS:
        section, _, name = key.partition(".")
        if getattr(getattr(own, section), name) != value:
            assert overridden[key]["used"] == value
    if own.windows.carry_state:
        assert overridden["windows.carry_state"]["config"] is True
        assert "state" in overridden["windows.carry_state"]["why"]
    assert overridden["train.max_steps"]["used"] == 2
    assert all(o["why"] and o["config"] != o["used"] for o in overridden.values())
    assert "data.path" not in overridden and "train.out_dir" not in overridden


def test_a_command_line_setting_wins_and_is_not_reported_as_overridden(tmp_path):
    corpus = write_corpus(tmp_path, synthetic_text(lines=50))
    words = [f"data.path={corpus}", "model.units=64"]
    own = load_config(REPO_ROOT / "configs" / "base.yaml", words)
    cfg = load_config(REPO_ROOT / "configs" / "base.yaml", [*measure.CLASSIC_OVERRIDES, *words])
    used = measure.ids_config(cfg, corpus, tmp_path, 1, 1000)
    keys = [o["key"] for o in measure.overridden_settings(own, used)]
    assert used.model.units == 64 and "model.units" not in keys
    assert "windows.carry_state" in keys and "model.layers" in keys
