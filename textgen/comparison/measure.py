"""`python -m textgen.compare CONFIG [key=value ...] [--sizes MB,...] [--steps K]`: one-hot vs ids.

For each prefix of the config's corpus, measures the peak RSS of the classic Keras example
(one-hot bool `x` and `y`, `model.fit` on the whole arrays) and of textgen's trainer (int32 ids
read from the index), each in a fresh process (`textgen.comparison.worker`), so the
parent, which never imports TensorFlow, adds nothing. A one-hot run whose estimate exceeds
80% of the available RAM is not started: its row says `skipped`, with the estimate
(build: the exact bytes of `x` and `y`; build + fit: TensorFlow's import plus 3.2x those bytes,
as measured).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from textgen.core.config import Config
from textgen.core.errors import TextgenError
from textgen.data.corpus import index_corpus
from textgen.data.sources import find_sources, read_text_chunks

DEFAULT_SIZES = (0.5, 1.0, 2.0, 5.0, 10.0, 100.0)  # MB (10^6 bytes) prefixes of the corpus
# The classic example's settings (textgen's embedding: 32 dims); key=value words on the command
# line still override them, for both pipelines.
CLASSIC_OVERRIDES = (
    "windows.maxlen=40", "windows.step=3", "windows.target=next", "model.units=128",
    "model.layers=1", "model.embedding_dim=32", "model.dropout=0.0", "train.batch_size=128",
)  # fmt: skip
# Peak RSS of the classic run = importing TensorFlow + Keras (~600 MB) + 3.2x the arrays: the
# numpy arrays themselves, plus ~2x while Keras 3 `fit` turns them into one tensor. Measured on
# 0.25-4 MB of text (TF 2.21, Keras 3.15, CPU): 3.08-3.2x over the import's RSS.
ONEHOT_TRAIN_BASE_MB = 600.0
ONEHOT_TRAIN_FACTOR = 3.2
RAM_FRACTION = 0.8  # a run whose estimate exceeds this share of MemAvailable is skipped
EVAL_WINDOWS = 32  # textgen's periodic evaluation sample; kept small, it is not measured here


@dataclasses.dataclass
class Prefix:
    """One corpus prefix to measure."""

    requested_mb: float
    text: str
    nbytes: int  # UTF-8 bytes of `text`
    whole: bool  # the whole corpus (it is not larger than requested_mb)


def onehot_sizes(chars: int, vocab: int, maxlen: int = 40, step: int = 3) -> tuple[int, int, int]:
    """Windows and exact bytes of the classic example's bool arrays.

    Args:
        chars: Characters of the text.
        vocab: Distinct characters of the text.
        maxlen: Characters per window.
        step: Distance between window starts.

    Returns:
        (windows, bytes of x: windows*maxlen*vocab, bytes of y: windows*vocab).
    """
    windows = len(range(0, chars - maxlen, step))
    return windows, windows * maxlen * vocab, windows * vocab


def onehot_train_estimate_mb(array_bytes: int) -> float:
    """Estimated peak RSS of building the classic arrays and fitting on them, MB."""
    return ONEHOT_TRAIN_BASE_MB + ONEHOT_TRAIN_FACTOR * array_bytes / 1e6


def available_mb() -> float:
    """MemAvailable from /proc/meminfo, MB (10^6 bytes); inf where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return math.inf


def fits(estimate_mb: float, available: float) -> bool:
    """The skip rule: a run is started only if its estimate is within 80% of `available` MB."""
    return estimate_mb <= RAM_FRACTION * available


def parse_sizes(text: str) -> list[float]:
    """Parses `--sizes 0.5,1,2` into sorted, distinct positive MB values.

    Raises:
        TextgenError: an empty list, or a size that is not a positive number.
    """
    sizes = []
    for word in text.split(","):
        try:
            value = float(word)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise TextgenError(f"sizes must be positive numbers of MB, got {word.strip()!r}",
                               "--sizes")  # fmt: skip
        sizes.append(value)
    return sorted(set(sizes))


def check_writable(path: str | None, option: str) -> None:
    """Fails now, not after minutes of measuring, if `path` cannot be written."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise TextgenError(f"output path is a directory: {target}", option)
    existed = target.exists()
    try:
        with open(target, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise TextgenError(f"cannot write {target}: {e.strerror or e}", option) from None
    if not existed:
        target.unlink()


def read_prefixes(cfg: Config, sizes: Sequence[float]) -> list[Prefix]:
    """The first `size` MB of the corpus for each size, cut on a character boundary.

    Sizes at or past the corpus's end collapse into one whole-corpus prefix.
    """
    limit = int(max(sizes) * 1e6)
    parts, total = [], 0
    for src in find_sources(cfg.data.path):
        for text, _ in read_text_chunks(src.path, encoding_errors=cfg.data.encoding_errors):
            parts.append(text.encode("utf-8"))
            total += len(parts[-1])
            if total > limit:
                break
        if total > limit:
            break
    data = b"".join(parts)
    prefixes: list[Prefix] = []
    for size in sizes:
        n = int(size * 1e6)
        if n >= len(data):
            prefixes.append(Prefix(size, data.decode("utf-8"), len(data), True))
            break
        text = data[:n].decode("utf-8", errors="ignore")  # drops a split last character only
        prefixes.append(Prefix(size, text, len(text.encode("utf-8")), False))
    return prefixes


def ids_config(cfg: Config, prefix_path: Path, work: Path, steps: int, chars: int) -> Config:
    """The config of textgen's run on one prefix: K steps, fresh dirs under `work`, ~20k val ids."""
    data = dataclasses.replace(
        cfg.data,
        path=str(prefix_path),
        index_dir=str(work / "index"),
        tokenizer="char",
        val_fraction=min(0.05, max(0.001, 20_000 / max(chars, 1))),  # ~20k ids, scored at the end
    )
    train = dataclasses.replace(
        cfg.train,
        epochs=1000,  # max_steps ends the run
        steps_per_epoch=None,
        max_steps=steps,
        max_time=None,
        out_dir=str(work / "run"),
        checkpoint_every=steps,
        eval_every=steps,
        eval_windows=EVAL_WINDOWS,
        patience=0,
        distribute="none",
        fresh=True,
    )
    return cfg.replace(data=data, train=train)


def run_worker(*args: str) -> dict[str, Any]:
    """Runs `python -m textgen.comparison.worker args...` in a fresh process; returns its JSON line.

    A failed run returns {"error": its last stderr line, "exit": its exit status}.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "textgen.comparison.worker", *args],
        capture_output=True, text=True, env=env, check=False, preexec_fn=_die_with_parent,
    )  # fmt: skip
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
    return {"error": lines[-1].removeprefix("textgen: error: "), "exit": proc.returncode}


def _die_with_parent() -> None:
    """In the child: SIGKILL it when the parent dies, so no worker outlives a killed compare."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: Ctrl-C still reaches the worker through the process group


def measure(
    prefix: Prefix, cfg: Config, steps: int, available: float | None, *,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:  # fmt: skip
    """Measures both pipelines on one prefix (`say` hears what starts); returns its row."""
    maxlen, step = cfg.windows.maxlen, cfg.windows.step
    vocab = len(set(prefix.text))
    windows, x_bytes, y_bytes = onehot_sizes(len(prefix.text), vocab, maxlen, step)
    row: dict[str, Any] = {
        "mb": round(prefix.nbytes / 1e6, 3), "requested_mb": prefix.requested_mb,
        "whole_corpus": prefix.whole, "chars": len(prefix.text), "vocab": vocab,
        "windows": windows, "onehot_x_bytes": x_bytes, "onehot_y_bytes": y_bytes,
        "onehot_build_estimate_mb": round((x_bytes + y_bytes) / 1e6, 1),
        "onehot_train_estimate_mb": round(onehot_train_estimate_mb(x_bytes + y_bytes), 1),
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="textgen-compare-") as tmp:
        work = Path(tmp)
        path = work / "prefix.txt"
        path.write_text(prefix.text, encoding="utf-8")
        row |= _measure_onehot(row, path, cfg, steps, available, say)
        ids_cfg = ids_config(cfg, path, work, steps, len(prefix.text))
        ids_cfg.dump(work / "config.yaml")
        say(f"{row['mb']:g} MB: textgen, {steps} training steps")
        index, _ = index_corpus(ids_cfg.data, min_split_tokens=cfg.windows.maxlen + 1)
        row["ids_vocab"] = index.vocab_size  # the prefix's characters + the unknown id 0
        row["ids_index_bytes"] = sum(
            (index.directory / name).stat().st_size for name in ("train.npy", "val.npy")
        )
        del index
        result = run_worker("ids-train", str(work / "config.yaml"))
        if "error" in result:
            raise TextgenError(f"textgen's run failed: {result['error']}", f"{row['mb']:g} MB")
        row["ids_train_peak_mb"] = result["peak_mb"]
        row["ids_train_s"] = result["train_s"]
    return row


def _measure_onehot(
    row: dict[str, Any], path: Path, cfg: Config, steps: int, available: float | None,
    say: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    """Runs the classic build and build + fit workers that fit in RAM; returns their fields."""
    out: dict[str, Any] = {"onehot_build_peak_mb": None, "onehot_train_peak_mb": None}
    common = [str(path), f"--maxlen={cfg.windows.maxlen}", f"--step={cfg.windows.step}"]
    runs = (
        ("build", "onehot-build", common, row["onehot_build_estimate_mb"]),
        ("train", "onehot-train", [*common, f"--units={cfg.model.units}",
         f"--batch-size={cfg.train.batch_size}", f"--steps={steps}"],
         row["onehot_train_estimate_mb"]),
    )  # fmt: skip
    for name, kind, args, estimate in runs:
        free = available_mb() if available is None else available
        if not fits(estimate, free):
            say(f"{row['mb']:g} MB: one-hot {name} skipped: estimate {estimate:,.0f} MB > "
                 f"{RAM_FRACTION:.0%} of {free:,.0f} MB available")  # fmt: skip
            out[f"onehot_{name}_status"] = "skipped"
            continue
        say(f"{row['mb']:g} MB: one-hot {name} (estimate {estimate:,.0f} MB)")
        result = run_worker(kind, *args)
        if "error" in result:  # e.g. MemoryError, or killed by the OOM killer
            out[f"onehot_{name}_status"], out["onehot_error"] = "failed", result["error"]
            continue
        out[f"onehot_{name}_status"] = "measured"
        out[f"onehot_{name}_peak_mb"] = result["peak_mb"]
        out.update({k: v for k, v in result.items() if k in ("build_s", "fit_s")})
    statuses = {out["onehot_build_status"], out["onehot_train_status"]}
    out["onehot_status"] = next(s for s in ("failed", "skipped", "measured") if s in statuses)
    return out
