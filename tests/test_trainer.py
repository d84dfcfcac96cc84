"""The training loop in-process: learning, the run dir, exact resume, limits and bad inputs."""

from __future__ import annotations

import importlib.util
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO_ROOT, write_corpus

from textgen.core.config import Config, load_config
from textgen.core.errors import TextgenError
from textgen.run.rundir import RunDir
from textgen.sample import main as sample_main
from textgen.training.trainer import train

TINY = REPO_ROOT / "configs" / "tiny.yaml"
SENTENCE = "the quick brown fox jumps over the lazy dog.\n"
METRIC_KEYS = {
    "step",
    "epoch",
    "loss",
    "val_loss",
    "val_bpc",
    "chars_per_sec",
    "rss_mb",
    "elapsed_s",
}


class Recorder:
    """An `on_event` handler that keeps every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, **data: Any) -> None:
        self.events.append((kind, data))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.events if k == kind]


@dataclass
class Paths:
    """A corpus, its index dir and a run dir."""

    corpus: Path
    index: Path
    out: Path

    def config(self, *overrides: str, out: Path | None = None) -> Config:
        """configs/tiny.yaml on this corpus, index and run dir (or `out`), plus overrides."""
        return load_config(
            TINY,
            [
                f"data.path={self.corpus}",
                f"data.index_dir={self.index}",
                f"train.out_dir={out or self.out}",
                *overrides,
            ],
        )


def make_paths(root: Path, text: str) -> Paths:
    return Paths(write_corpus(root, text), root / "index", root / "run")


def latest_checkpoint(run_dir: Path) -> str:
    import tensorflow as tf

    path = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    assert path is not None, f"no checkpoint in {run_dir}"
    return path


def checkpoint_tensors(run_dir: Path) -> dict[str, np.ndarray]:
    """Every tensor of the run's latest checkpoint but the save counter and the object graph."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(latest_checkpoint(run_dir))
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if not key.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))
    }


# --- a run that learns ------------------------------------------------------------------------


def test_a_tiny_run_learns_a_repeated_sentence_and_fills_its_run_dir(tmp_path):
    """One run (9 short epochs): it learns, and its run dir has every file."""
    paths = make_paths(tmp_path, SENTENCE * 120)
    cfg = paths.config(
        "train.epochs=9",
        "train.lr_schedule=constant",
        "sample.epoch_temperatures=[0.5]",
        "sample.epoch_length=40",
    )
    events = Recorder()
    result = train(cfg, on_event=events)
    check_learned(cfg, result, events)
    check_run_dir(paths, cfg, result)


def check_learned(cfg: Config, result, events: Recorder) -> None:
    assert result.stop_reason == "done"
    steps_per_epoch = events.of("start")[0]["steps"] // cfg.train.epochs
    assert result.step == cfg.train.epochs * steps_per_epoch
    assert result.epoch == cfg.train.epochs
    evals = events.of("eval")
    assert evals[0]["val_bpc"] > 2.0  # it started out knowing nothing
    assert evals[-1]["final"] is True
    assert evals[-1]["val_bpc"] < 0.5, evals[-1]
    assert result.last_metrics == evals[-1]
    assert result.best_val_loss <= min(e["val_loss"] for e in evals[:-1])
    [stop] = events.of("stop")
    assert stop["reason"] == "done" and stop["checkpoint"] == latest_checkpoint(result.run_dir)


def check_run_dir(paths: Paths, cfg: Config, result) -> None:
    """config.yaml, tokenizer, checkpoints, model.keras, metrics.jsonl, samples, tensorboard."""
    import keras

    run = RunDir(paths.out)
    assert result.run_dir == paths.out
    assert run.load_config() == cfg
    assert run.load_tokenizer().chars == "".join(sorted(set(SENTENCE)))
    assert latest_checkpoint(paths.out).endswith(f"ckpt-{result.step}")

    records = run.read_metrics()
    assert records and all(set(r) >= METRIC_KEYS for r in records)
    assert records[-1]["final"] and records[-1]["val_bpc"] < 0.5
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and steps[-1] == result.step

    samples = run.samples.read_text(encoding="utf-8")
    assert [line for line in samples.splitlines() if line.startswith("=== epoch")] == [
        f"=== epoch {e} step {e * result.step // cfg.train.epochs} ==="
        for e in range(1, cfg.train.epochs + 1)
    ]
    assert "--- temperature 0.5" in samples

    # model.keras: int32 ids -> logits, and it has learned the sentence.
    model = keras.models.load_model(run.best_model, compile=False)
    tokenizer = run.load_tokenizer()
    prompt = SENTENCE[:-3]  # "... the lazy do"
    logits = keras.ops.convert_to_numpy(model(tokenizer.encode(prompt)[None, :]))
    assert logits.shape == (1, len(prompt), tokenizer.vocab_size)
    assert tokenizer.decode([int(logits[0, -1].argmax())]) == "g"

    assert tensorboard_tags(run.tensorboard) >= {"loss", "val_loss", "val_bpc"}
    if importlib.util.find_spec("matplotlib") is not None:  # the plot extra is installed
        assert run.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the learning curves
    assert not list(run.path.glob(".tmp-*"))


def tensorboard_tags(directory: Path) -> set[str]:
    import tensorflow as tf

    files = list(directory.glob("events.out.tfevents.*"))
    assert files, f"no event file in {directory}"
    tags = set()
    for file in files:
        for event in tf.compat.v1.train.summary_iterator(str(file)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_next_token_target_learns_and_samples(tmp_path, capsys):
    """`windows.target=next` (one target per window): the loss falls and the run samples."""
    paths = make_paths(tmp_path, SENTENCE * 120)
    cfg = paths.config(
        "windows.target=next",
        "windows.maxlen=16",
        "windows.step=1",
        "train.batch_size=32",
        "train.epochs=6",
        "train.eval_every=20",
        "train.steps_per_call=10",
        "train.lr_schedule=constant",
        "sample.epoch_temperatures=[0.5]",
        "sample.epoch_length=40",
    )
    events = Recorder()
    result = train(cfg, on_event=events)
    assert (result.stop_reason, result.step, result.epoch) == ("done", 120, 6)

    records = RunDir(paths.out).read_metrics()
    first, last = records[0], records[-1]
    assert first["loss"] > 2.5 and first["val_loss"] > 2.5  # knowing nothing: ln(30) = 3.4
    assert last["final"] and last["step"] == 120
    assert last["loss"] < first["loss"] / 3, (first, last)
    assert last["val_loss"] < 0.6 * first["val_loss"], (first, last)

    samples = events.of("sample")
    assert [len(s["text"]) for s in samples] == [40] * 6
    assert any(word in samples[-1]["text"] for word in SENTENCE.split()), samples[-1]
    text = RunDir(paths.out).samples.read_text(encoding="utf-8")
    assert text.count("=== epoch ") == 6 and samples[-1]["text"] in text

    assert sample_main([str(paths.out), "--prompt", "the ", "--length", "30", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the ") and len(out) == len("the ") + 30 + 1 and out.endswith("\n")


# --- gradient clipping under loss scaling ------------------------------------------------------


def first_step_gradient_norm(run_dir: Path) -> float:
    """The global norm of the gradient Adam applied at step 1, read from the run's checkpoint.

    After one step Adam's first moment is m = (1 - beta_1) g and its second v = (1 - beta_2) g^2,
    so each weight's m is the slot that has a partner v = (1 - beta_2) / (1 - beta_1)^2 m^2: found
    by that relation, not by the checkpoint's (internal) variable names.
    """
    import keras

    adam = keras.optimizers.Adam()  # the trainer's Adam keeps Keras' default betas
    b1, b2 = adam.beta_1, adam.beta_2
    slots = [
        t.astype(np.float64)
        for t in checkpoint_tensors(run_dir).values()
        if t.dtype == np.float32 and t.ndim >= 1
    ]
    firsts = [
        m
        for m in slots
        if np.any(m)
        and any(
            v.shape == m.shape
            and np.allclose(v, (1 - b2) / (1 - b1) ** 2 * m**2, rtol=1e-4, atol=1e-30)
            for v in slots
        )
    ]
    model = keras.models.load_model(RunDir(run_dir).best_model, compile=False)
    assert len(firsts) == len(model.trainable_weights), "not one first moment per weight"
    return math.sqrt(sum(float((m**2).sum()) for m in firsts)) / (1 - b1)


def test_clip_norm_under_mixed_float16_clips_the_unscaled_gradient(base_run, tmp_path):
    """With loss scaling (x 2^15) the gradient applied has norm clip_norm, not clip_norm / 2^15.

    Adam's steps barely depend on the gradient's size, so the weights cannot tell; its first
    moment can. Clipping measured on the scaled gradient would leave a norm 2^15 times too small.
    """
    norms = {}
    for clip in (1e-3, 1e6):
        out = tmp_path / f"clip-{clip:g}"
        overrides = ("train.precision=mixed_float16", f"train.clip_norm={clip}")
        result = train(base_run.config(*overrides, "train.max_steps=1", out=out))
        assert (result.step, result.stop_reason) == (1, "max_steps")
        assert math.isfinite(result.last_metrics["loss"])
        assert math.isfinite(result.last_metrics["val_loss"])
        norms[clip] = first_step_gradient_norm(out)
    assert norms[1e6] > 10 * 1e-3, norms  # unclipped, the gradient is far longer than 1e-3
    assert norms[1e-3] == pytest.approx(1e-3, rel=1e-4), norms  # clipped to exactly 1e-3


# --- exact resume -----------------------------------------------------------------------------


@pytest.mark.parametrize("carry_state", [False, True], ids=["windows", "carried-state"])
def test_resume_is_exact_with_dropout_across_a_restart_and_an_epoch_end(tmp_path, carry_state):
    paths = make_paths(tmp_path, SENTENCE * 200)  # 15 batches (13 as streams) a pass; epochs of 12
    common = [
        f"windows.carry_state={str(carry_state).lower()}",
        "train.deterministic=true",
        "model.dropout=0.2",
        "train.epochs=5",
        "train.steps_per_epoch=12",
        "sample.epoch_temperatures=[]",
    ]
    once_events = Recorder()
    once = train(
        paths.config(*common, "train.max_steps=40", out=tmp_path / "once"), on_event=once_events
    )
    assert once.step == 40

    first = train(paths.config(*common, "train.max_steps=15", out=tmp_path / "twice"))
    assert (first.step, first.stop_reason) == (15, "max_steps")
    at_15 = checkpoint_tensors(tmp_path / "twice")
    events = Recorder()
    second = train(
        paths.config(*common, "train.max_steps=40", out=tmp_path / "twice"), on_event=events
    )
    [resume] = events.of("resume")
    assert resume["step"] == 15 and resume["checkpoint"].endswith("ckpt-15")
    assert (resume["epoch"], resume["batch"]) == (1, 3)  # mid-epoch: 15 = 12 + 3
    assert not events.of("start")
    assert second.step == 40

    a, b = checkpoint_tensors(tmp_path / "once"), checkpoint_tensors(tmp_path / "twice")
    assert a.keys() == b.keys()
    assert any(k.startswith("optimizer/") for k in a) and any(k.startswith("rng/") for k in a)
    # The streams' states are saved and restored with the rest (and were really carried).
    assert any(k.startswith("carried_states/") for k in a) == carry_state
    if carry_state:
        [states] = [v for k, v in a.items() if k.startswith("carried_states/")]
        assert states.shape == (2, 16, 32) and np.abs(states).max() > 0.01
    for key in a:
        if not key.startswith("trained_s"):  # wall-clock seconds, not state
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert any(not np.array_equal(at_15[k], b[k]) for k in b)  # it really trained on
    assert once_events.of("stop")[0]["weights"] == events.of("stop")[0]["weights"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Paths:
    """A 10-step run (mid-epoch) to copy and resume."""
    paths = make_paths(tmp_path_factory.mktemp("base"), SENTENCE * 400)
    result = train(paths.config("train.max_steps=10"))
    assert result.step == 10
    return paths


def copy_run(base: Paths, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(base.out, out)
    return out


def test_resume_with_a_new_learning_rate_notes_the_change(base_run, tmp_path):
    out = copy_run(base_run, tmp_path)
    events = Recorder()
    result = train(
        base_run.config("train.max_steps=13", "train.learning_rate=0.005", out=out), on_event=events
    )
    [resume] = events.of("resume")
    assert resume["step"] == 10
    assert "train.learning_rate: 0.01 -> 0.005" in resume["notes"]
    assert "train.max_steps: 10 -> 13" in resume["notes"]
    assert result.step == 13
    assert RunDir(out).load_config().train.learning_rate == 0.005


@pytest.mark.parametrize(
    "change", ["model.units=24", "model.layers=2", "model.embedding_dim=8", "model.residual=false"]
)
def test_resume_refuses_a_changed_model_shape(base_run, tmp_path, change):
    out = copy_run(base_run, tmp_path)
    saved = (out / "config.yaml").read_text(encoding="utf-8")
    with pytest.raises(TextgenError, match=r"train\.fresh") as e:
        train(base_run.config(change, "train.max_steps=20", out=out))
    key = change.partition("=")[0]
    assert f"cannot resume: {key} changed" in str(e.value)
    assert (out / "config.yaml").read_text(encoding="utf-8") == saved  # the run is untouched
    assert latest_checkpoint(out).endswith("ckpt-10")


def test_a_run_saved_before_residual_existed_is_read_as_without_it(base_run, tmp_path):
    # config.yaml lists every key; one written before model.residual existed lacks it, and its
    # model had no residual sums, whatever the default is now.
    out = copy_run(base_run, tmp_path)
    saved = (out / "config.yaml").read_text(encoding="utf-8")
    assert "  residual: true\n" in saved  # the default now
    (out / "config.yaml").write_text(saved.replace("  residual: true\n", ""), encoding="utf-8")
    assert RunDir(out).load_config().model.residual is False
    result = train(base_run.config("train.max_steps=12", "model.residual=false", out=out))
    assert result.step == 12


def test_fresh_starts_over(base_run, tmp_path):
    out = copy_run(base_run, tmp_path)
    events = Recorder()
    result = train(
        base_run.config("train.fresh=true", "train.max_steps=5", out=out), on_event=events
    )
    assert events.of("start") and not events.of("resume")
    assert result.step == 5
    assert sorted(p.name for p in (out / "checkpoints").glob("*.index")) == ["ckpt-5.index"]
    assert all(r["step"] <= 5 for r in RunDir(out).read_metrics())


def test_a_plot_that_cannot_be_written_warns_and_training_goes_on(base_run, tmp_path):
    pytest.importorskip("matplotlib")
    out = copy_run(base_run, tmp_path)
    (out / "curves.png").unlink(missing_ok=True)
    (out / "curves.png").mkdir()  # in the way of the PNG
    events = Recorder()
    result = train(base_run.config("train.max_steps=12", out=out), on_event=events)
    assert (result.step, result.stop_reason) == (12, "max_steps")
    assert events.of("warning") and all(
        w["message"].startswith("curves.png not drawn") for w in events.of("warning")
    )
    assert RunDir(out).read_metrics()[-1]["step"] == 12
    assert not list(out.glob(".tmp-*"))


def test_a_finished_run_resumed_with_the_same_limit_trains_no_further(base_run, tmp_path):
    out = copy_run(base_run, tmp_path)
    before = checkpoint_tensors(out)
    result = train(base_run.config("train.max_steps=10", out=out))
    assert (result.step, result.stop_reason) == (10, "max_steps")
    after = checkpoint_tensors(out)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)


# --- limits -----------------------------------------------------------------------------------


def test_patience_stops_when_val_loss_stops_improving(base_run, tmp_path):
    # A learning rate too small to move float32 weights: val loss stays put after the first eval.
    cfg = base_run.config(
        "train.learning_rate=1e-12",
        "train.lr_schedule=constant",
        "train.eval_every=2",
        "train.patience=2",
        "train.max_steps=40",
        out=tmp_path / "run",
    )
    result = train(cfg)
    assert result.stop_reason == "early_stop"
    assert result.step < 40
    periodic = [r for r in RunDir(tmp_path / "run").read_metrics() if not r["final"]]
    best_before = min(r["val_loss"] for r in periodic[:-2])
    assert all(r["val_loss"] >= best_before for r in periodic[-2:])
    assert latest_checkpoint(tmp_path / "run").endswith(f"ckpt-{result.step}")


def test_max_time_stops_with_a_checkpoint(base_run, tmp_path):
    cfg = base_run.config(
        "train.max_time=5",  # the evaluation's warm-up is spent from it: leave room for steps
        "train.max_steps=100000",
        "train.steps_per_call=1",
        out=tmp_path / "run",
    )
    result = train(cfg)
    assert result.stop_reason == "max_time"
    assert 1 <= result.step < 100000
    assert latest_checkpoint(tmp_path / "run").endswith(f"ckpt-{result.step}")


# --- bad inputs -------------------------------------------------------------------------------


def test_out_dir_that_is_a_file_is_an_error(base_run, tmp_path):
    out = tmp_path / "not_a_dir"
    out.write_text("x", encoding="utf-8")
    with pytest.raises(TextgenError, match="not a directory") as e:
        train(base_run.config(out=out))
    assert str(out) in str(e.value)
    assert out.read_text(encoding="utf-8") == "x"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_checkpoint_is_an_error_naming_it_and_train_fresh(base_run, tmp_path, damage):
    out = copy_run(base_run, tmp_path)
    checkpoint = latest_checkpoint(out)
    [data] = Path(checkpoint).parent.glob(Path(checkpoint).name + ".data-*")
    size = data.stat().st_size
    if damage == "garbage":
        data.write_bytes(np.random.default_rng(0).bytes(size))
    else:
        with open(data, "r+b") as f:
            f.truncate(size // 2)
    with pytest.raises(TextgenError) as e:
        train(base_run.config("train.max_steps=20", out=out))
    message = str(e.value)
    assert checkpoint in message
    assert "train.fresh=true" in message


def test_a_batch_larger_than_the_training_windows_is_an_error(base_run, tmp_path):
    with pytest.raises(TextgenError, match=r"train\.batch_size 100000 is larger than") as e:
        train(base_run.config("train.batch_size=100000", out=tmp_path / "run"))
    assert e.value.where == "train.batch_size"
    assert not list((tmp_path / "run" / "checkpoints").glob("ckpt-*"))


@pytest.mark.parametrize("maxlen, split", [(2000, "val"), (100_000, "train")])
def test_maxlen_longer_than_a_split_is_an_error(tmp_path, maxlen, split):
    paths = make_paths(tmp_path, SENTENCE * 100)  # 4,500 chars: 4,050 train + 450 val
    with pytest.raises(TextgenError, match=f"the {split} split has") as e:
        train(paths.config(f"windows.maxlen={maxlen}"))
    assert "windows.maxlen" in str(e.value)


def test_a_corpus_changed_since_the_run_started(tmp_path):
    paths = make_paths(tmp_path, SENTENCE * 200)
    train(paths.config("train.max_steps=5"))

    # Same characters, different text: the index is rebuilt and the run resumes.
    words = SENTENCE.split()
    write_corpus(tmp_path, "\n".join(" ".join(words[i:] + words[:i]) for i in range(9)) * 30)
    events = Recorder()
    result = train(paths.config("train.max_steps=8"), on_event=events)
    [indexed] = events.of("indexed")
    assert indexed["built"] is True
    [resume] = events.of("resume")
    assert resume["step"] == 5
    assert result.step == 8

    # A new character changes the vocabulary: the saved weights no longer fit.
    write_corpus(tmp_path, SENTENCE * 200 + "Zebra!\n")
    with pytest.raises(TextgenError, match="vocabulary changed") as e:
        train(paths.config("train.max_steps=12"))
    assert "train.fresh=true" in str(e.value)
    assert latest_checkpoint(paths.out).endswith("ckpt-8")
    # The refused run keeps what its checkpoint was trained with: the old tokenizer and config,
    # and no metrics from the attempt.
    run = RunDir(paths.out)
    assert run.load_tokenizer().chars == "".join(sorted(set(SENTENCE)))
    assert run.load_config().train.max_steps == 8
    records = run.read_metrics()
    assert all(set(r) >= METRIC_KEYS and 0 < r["val_loss"] < 10 for r in records)
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and steps[-1] == 8


def test_a_bf16_run_says_so_and_saves_a_float32_model(base_run, tmp_path):
    out = copy_run(base_run, tmp_path)
    events = Recorder()
    overrides = ("train.fresh=true", "train.max_steps=5", "train.precision=mixed_bfloat16")
    train(base_run.config(*overrides, out=out), on_event=events)
    assert events.of("start")[0]["precision"] == "mixed_bfloat16"
    model = RunDir(out).load_model()  # model.keras: what sample, evaluate and export read
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
