"""Checkpoints: which one a run resumes from, what it passes over, and which ones it keeps.

A tiny untrained 2 x 8 LSTM model: each checkpoint marks its first weight with its step, so a
restore shows which checkpoint it read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_lstm_model

from textgen.core.errors import TextgenError
from textgen.run.checkpoints import (
    STATE_FILE,
    DamagedCheckpoint,
    Restored,
    TrainCheckpoint,
    TrainCounters,
    checkpoint_number,
    restore_newest,
)
from textgen.run.rundir import RunDir

VOCAB = 12
ADVICE = "; set train.fresh=true to start over"


def open_checkpoint(directory: Path, *, max_to_keep: int = 3) -> TrainCheckpoint:
    """A TrainCheckpoint of a fresh model and built Adam optimizer, as a new process has."""
    import keras

    model = tiny_lstm_model(VOCAB, seed=0)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    directory.mkdir(parents=True, exist_ok=True)
    return TrainCheckpoint(model, optimizer, directory, max_to_keep=max_to_keep)


def marker(checkpoint: TrainCheckpoint) -> float:
    """The value the first weight was set to before the save that was restored."""
    weight = checkpoint.checkpoint.model.trainable_variables[0].numpy()
    assert np.all(weight == weight.flat[0])
    return float(weight.flat[0])


def save(checkpoint: TrainCheckpoint, *steps: int) -> None:
    """Saves a checkpoint at each step, its first weight set to the step."""
    weight = checkpoint.checkpoint.model.trainable_variables[0]
    for step in steps:
        weight.assign(np.full(weight.shape, step, np.float32))
        checkpoint.save(TrainCounters(step=step, epoch=step // 10, batch=step % 10))


def on_disk(directory: Path) -> list[int]:
    """Numbers of the checkpoints with any file in `directory`, ascending."""
    return sorted({n for p in directory.iterdir() if (n := checkpoint_number(p.name)) is not None})


def state_paths(directory: Path) -> tuple[str, list[str]]:
    """TensorFlow's reading of the state file: the latest and all kept checkpoints (names)."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(directory))
    return Path(state.model_checkpoint_path).name, [
        Path(p).name for p in state.all_model_checkpoint_paths
    ]


def damage(prefix: Path, how: str) -> None:
    """Damages one checkpoint the way a crash, a full disk or a bad copy would."""
    data = prefix.with_name(prefix.name + ".data-00000-of-00001")
    index = prefix.with_name(prefix.name + ".index")
    if how == "truncated data":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif how == "garbage data":
        data.write_bytes(np.random.default_rng(0).bytes(data.stat().st_size))
    elif how == "missing index":
        index.unlink()
    elif how == "garbage index":
        index.write_bytes(np.random.default_rng(0).bytes(200))
    else:
        raise ValueError(how)


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("ckpt-12", 12),
        ("/runs/a/checkpoints/ckpt-3", 3),
        ("ckpt-3.index", 3),
        ("ckpt-7.data-00000-of-00001", 7),
        ("ckpt-0", 0),
        ("ckpt-7_temp", None),  # TensorFlow's temp dir of a write in progress
        ("ckpt-3.index.bak", None),
        ("ckpt-x", None),
        ("checkpoint", None),
        ("model.keras", None),
    ],
)
def test_checkpoint_number(name, number):
    assert checkpoint_number(name) == number


DAMAGES = ["truncated data", "garbage data", "missing index", "garbage index"]


def test_damaged_newest_checkpoints_are_passed_over_and_reported_and_the_next_restores(tmp_path):
    run = RunDir(tmp_path / "run")
    save(open_checkpoint(run.checkpoints, max_to_keep=5), 1, 2, 3, 4, 5)
    for number, how in zip((5, 4, 3, 2), DAMAGES, strict=True):
        damage(run.checkpoints / f"ckpt-{number}", how)
    checkpoint = open_checkpoint(run.checkpoints)
    restored = checkpoint.restore_newest(run.checkpoint_prefixes(), where=str(run.checkpoints))
    assert restored.path == str(run.checkpoints / "ckpt-1")
    assert restored.value == TrainCounters(step=1, epoch=0, batch=1)
    assert marker(checkpoint) == 1.0 and checkpoint.latest == restored.path
    assert [d.prefix for d in restored.damaged] == [
        str(run.checkpoints / f"ckpt-{n}") for n in (5, 4, 3, 2)
    ]  # newest first, each kind of damage
    for damaged in restored.damaged:
        assert damaged.reason and "\n" not in damaged.reason and len(damaged.reason) <= 160
    assert restored.damaged[2].reason == "ckpt-3.index is missing"
    assert restored.damaged[0].describe().startswith(f"checkpoint {run.checkpoints}/ckpt-5 is")
    assert on_disk(run.checkpoints) == [1, 2, 3, 4, 5]  # restoring removes nothing


def test_counters_come_back_exactly(tmp_path):
    checkpoint = open_checkpoint(tmp_path)
    counters = TrainCounters(step=17, epoch=2, batch=5, best_val_loss=1.2345678901234,
                             bad_evals=3, horizon=400, trained_s=61.25)  # fmt: skip
    prefix = checkpoint.save(counters)
    assert open_checkpoint(tmp_path).restore(prefix) == counters
    assert open_checkpoint(tmp_path).restore_newest([prefix], where="x").value == counters


def test_when_the_only_checkpoint_does_not_restore_the_error_names_it(tmp_path):
    checkpoint = open_checkpoint(tmp_path)
    save(checkpoint, 5)
    damage(tmp_path / "ckpt-5", "garbage index")
    with pytest.raises(TextgenError) as e:
        open_checkpoint(tmp_path).restore_newest([str(tmp_path / "ckpt-5")], where="RUN")
    assert e.value.where == str(tmp_path / "ckpt-5")
    assert e.value.what.startswith("cannot restore checkpoint (")
    assert e.value.what.endswith(ADVICE) and "\n" not in str(e.value)


def test_when_none_restores_the_error_names_the_run_dir_the_newest_and_the_advice(tmp_path):
    run = RunDir(tmp_path / "run")
    save(open_checkpoint(run.checkpoints), 1, 2)
    damage(run.checkpoints / "ckpt-2", "missing index")
    damage(run.checkpoints / "ckpt-1", "truncated data")
    with pytest.raises(TextgenError) as e:
        open_checkpoint(run.checkpoints).restore_newest(
            run.checkpoint_prefixes(), where=str(run.checkpoints)
        )
    assert e.value.where == str(run.checkpoints)
    assert e.value.what == (
        "none of the run's 2 checkpoints restores (the newest, ckpt-2: ckpt-2.index is missing)"
        + ADVICE
    )
    assert on_disk(run.checkpoints) == [1, 2]  # nothing is deleted: the user decides


def test_no_candidates_is_an_empty_restore_and_fresh_counters(tmp_path):
    calls = []
    assert restore_newest([], calls.append, where="RUN") == Restored()
    assert calls == []
    checkpoint = open_checkpoint(tmp_path)
    restored = checkpoint.restore_newest([], where=str(tmp_path))
    assert (restored.value, restored.path, restored.damaged) == (TrainCounters(), None, [])
    assert checkpoint.latest is None


def test_the_generic_restore_passes_over_what_its_restorer_calls_damaged(tmp_path):
    prefixes = [str(tmp_path / f"ckpt-{n}") for n in (3, 2, 1)]
    for prefix in prefixes:
        Path(prefix + ".index").write_bytes(b"")

    def restore_one(prefix: str) -> int:
        if prefix.endswith("3"):
            raise DamagedCheckpoint("bad bytes")
        return int(prefix[-1]) * 10

    restored = restore_newest(prefixes, restore_one, where="RUN")
    assert (restored.value, restored.path) == (20, prefixes[1])
    assert [(d.prefix, d.reason) for d in restored.damaged] == [(prefixes[0], "bad bytes")]


def test_only_max_to_keep_checkpoints_are_kept_and_the_state_file_lists_them(tmp_path):
    import tensorflow as tf

    save(open_checkpoint(tmp_path, max_to_keep=2), 1, 2, 3, 4, 5)
    assert on_disk(tmp_path) == [4, 5]
    assert state_paths(tmp_path) == ("ckpt-5", ["ckpt-4", "ckpt-5"])
    assert Path(tf.train.latest_checkpoint(str(tmp_path))).name == "ckpt-5"
    assert sorted(p.name for p in tmp_path.iterdir() if "ckpt" not in p.name) == [STATE_FILE]


def test_a_damaged_checkpoint_stays_while_only_older_steps_are_saved(tmp_path):
    run = RunDir(tmp_path / "run")
    directory = run.checkpoints
    save(open_checkpoint(directory), 10, 20, 30)
    damage(directory / "ckpt-30", "truncated data")
    checkpoint = open_checkpoint(directory, max_to_keep=3)
    assert checkpoint.restore_newest(run.checkpoint_prefixes(), where="RUN").value.step == 20

    save(checkpoint, 25)  # older than the damaged one: it is kept (nothing newer is touched)
    assert on_disk(directory) == [10, 20, 25, 30]
    assert state_paths(directory) == ("ckpt-25", ["ckpt-10", "ckpt-20", "ckpt-25"])

    save(checkpoint, 35)  # newer: the damaged one goes, and the oldest beyond max_to_keep
    assert on_disk(directory) == [20, 25, 35]
    assert state_paths(directory) == ("ckpt-35", ["ckpt-20", "ckpt-25", "ckpt-35"])
    assert run.checkpoint_prefixes() == [str(directory / f"ckpt-{n}") for n in (35, 25, 20)]


def test_the_state_file_is_rewritten_from_what_is_really_there(tmp_path):
    checkpoint = open_checkpoint(tmp_path, max_to_keep=3)
    save(checkpoint, 1, 2)
    (tmp_path / "ckpt-2.index").unlink()  # a write killed before its index: broken
    (tmp_path / STATE_FILE).write_text('model_checkpoint_path: "ckpt-99"\n')  # points at nothing
    save(checkpoint, 3)
    assert on_disk(tmp_path) == [1, 3]  # the broken ckpt-2's data file was removed
    assert state_paths(tmp_path) == ("ckpt-3", ["ckpt-1", "ckpt-3"])
