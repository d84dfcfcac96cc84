"""`open_session` / `TrainSession`: what a run trains with, built from configs/tiny.yaml shrunk to
a synthetic corpus of a few thousand characters, and one compiled train call."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, synthetic_text, write_corpus

from textgen.core.config import load_config
from textgen.run.checkpoints import TrainCheckpoint, TrainCounters
from textgen.training.session import TrainSession, open_session

PEAK = 0.01  # configs/tiny.yaml's learning_rate


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """About 2,400 characters of varied text."""
    return write_corpus(tmp_path_factory.mktemp("session"), synthetic_text(lines=60, seed=5))


def tiny_session(corpus: Path, out: Path, *words: str) -> TrainSession:
    """configs/tiny.yaml on `corpus`: 1 x 16 units, batch 8 of 16 ids, 2 epochs of 10 steps."""
    cfg = load_config(
        REPO_ROOT / "configs" / "tiny.yaml",
        [
            f"data.path={corpus}",
            f"data.index_dir={corpus.parent / 'index'}",
            f"train.out_dir={out}",
            "model.units=16",
            "model.embedding_dim=8",
            "windows.maxlen=16",
            "windows.step=16",
            "train.batch_size=8",
            "train.steps_per_epoch=10",
            *words,
        ],
    )
    return open_session(cfg)


def weights(session: TrainSession) -> list[np.ndarray]:
    return [v.numpy().copy() for v in session.model.trainable_variables]


@pytest.fixture
def session(corpus, tmp_path) -> TrainSession:
    """A fresh cosine session with a 4-step warmup (each test may train or change it)."""
    return tiny_session(
        corpus, tmp_path / "run", "train.lr_schedule=cosine", "train.warmup_steps=4"
    )


def test_the_session_holds_a_model_an_optimizer_and_a_checkpoint_and_writes_nothing_else(
    session,
):
    vocab = session.data.index.vocab_size
    logits = session.model(np.zeros((2, 16), np.int32))
    assert tuple(logits.shape) == (2, 16, vocab)  # (batch, time, vocab)
    assert int(session.optimizer.iterations) == 0
    assert isinstance(session.checkpoint, TrainCheckpoint)
    out = Path(session.cfg.train.out_dir)
    assert [p.name for p in out.iterdir()] == ["checkpoints"]
    assert list((out / "checkpoints").iterdir()) == []
    assert session.checkpoint.directory == out / "checkpoints"
    assert (session.data.steps_per_epoch, session.data.schedule_steps) == (10, 20)


def test_the_learning_rate_warms_up_linearly_from_zero(session):
    assert session.learning_rate() == 0.0  # step 0 of a 4-step warmup
    for step in range(4):
        assert float(session.schedule(step)) == pytest.approx(PEAK * step / 4)
    assert float(session.schedule(4)) == pytest.approx(PEAK)  # the peak once warmed up


def test_one_train_call_changes_the_weights_and_the_step_counter(session):
    before = weights(session)
    iterator = session.iterator(TrainCounters())
    loss = float(session.train_steps(iterator, 3))
    assert int(session.optimizer.iterations) == 3
    # An untrained model spreads its bets: the mean loss is near ln(vocab).
    assert math.isfinite(loss)
    assert abs(loss - math.log(session.data.index.vocab_size)) < 1.0
    after = weights(session)
    assert all(a.shape == b.shape for a, b in zip(before, after, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert session.learning_rate() == pytest.approx(PEAK * 3 / 4)  # the warmup goes on


def test_the_horizon_moves_the_end_of_the_cosine(session):
    floor = PEAK * session.cfg.train.min_lr_ratio
    assert float(session.schedule(20)) == pytest.approx(floor)  # schedule_steps: 2 x 10
    session.set_horizon(40)
    assert float(session.schedule(20)) > floor * 1.5
    assert float(session.schedule(40)) == pytest.approx(floor)


def test_without_warmup_step_0_gets_the_full_rate(corpus, tmp_path):
    s = tiny_session(corpus, tmp_path / "run", "train.lr_schedule=cosine", "train.warmup_steps=0")
    assert s.learning_rate() == pytest.approx(PEAK)


def test_a_warmup_longer_than_the_run_ends_one_step_before_it(corpus, tmp_path):
    # 20 scheduled steps and a 100-step warmup: it is cut to 19, so the run still decays.
    s = tiny_session(corpus, tmp_path / "run", "train.lr_schedule=cosine", "train.warmup_steps=100")
    assert s.learning_rate() == 0.0
    assert float(s.schedule(1)) == pytest.approx(PEAK / 19)
    assert float(s.schedule(19)) == pytest.approx(PEAK)


def test_a_constant_schedule_is_the_learning_rate_from_step_0(corpus, tmp_path):
    s = tiny_session(corpus, tmp_path / "run", "train.lr_schedule=constant", "train.warmup_steps=4")
    assert s.learning_rate() == PEAK
    s.set_horizon(100)  # nothing to move
    assert s.learning_rate() == PEAK
