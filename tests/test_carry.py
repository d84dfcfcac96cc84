"""Carried state: a batch starts from the states the last one ended in, or from zeros."""

from __future__ import annotations

import numpy as np
import pytest

from textgen.core.config import load_config
from textgen.model.build import build_model, stream_model
from textgen.training.carry import CarriedState


def test_streams_start_from_carried_states_and_a_reset_starts_them_afresh() -> None:
    import tensorflow as tf

    cfg = load_config(None, ["model.units=8", "model.layers=2", "model.embedding_dim=4"])
    model = build_model(cfg.model, 12)
    carried = CarriedState(model, batch_size=3)
    x = np.random.default_rng(0).integers(0, 12, (3, 10)).astype(np.int32)

    # Reset (a new epoch): exactly the zero-state model.
    logits, after = carried.forward(x, tf.constant(True), training=False)
    np.testing.assert_allclose(logits, model(x), atol=1e-6)
    carried.update(tf.distribute.get_strategy(), after)
    # The next batch continues: as if both batches were one sequence read in one go.
    nxt = np.random.default_rng(1).integers(0, 12, (3, 10)).astype(np.int32)
    logits, _ = carried.forward(nxt, tf.constant(False), training=False)
    whole = model(np.concatenate([x, nxt], axis=1))  # (3, 20, vocab)
    np.testing.assert_allclose(logits, whole[:, 10:], atol=1e-5)
    # The carried variable holds (h, c) of both layers for every stream.
    assert carried.variable.shape == (4, 3, 8)


@pytest.mark.parametrize("residual", [False, True])
def test_stream_model_reading_in_pieces_equals_reading_at_once(residual: bool) -> None:
    words = ["model.units=8", "model.layers=2", "model.embedding_dim=4"]
    cfg = load_config(None, [*words, f"model.residual={str(residual).lower()}"])
    model = build_model(cfg.model, 12)
    stream = stream_model(model)
    assert len(stream.weights) == len(model.weights)  # shared, not copied
    ids = np.random.default_rng(2).integers(0, 12, (2, 9)).astype(np.int32)
    states = [np.zeros((2, 8), np.float32)] * 4
    pieces = []
    for start, stop in ((0, 4), (4, 7), (7, 9)):
        logits, *states = stream([ids[:, start:stop], *states])
        states = [np.asarray(s) for s in states]
        pieces.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), model(ids), atol=1e-5)


def test_a_carried_state_run_samples_after_each_epoch_and_from_its_run_dir(tmp_path) -> None:
    from conftest import REPO_ROOT, write_corpus

    from textgen.generation.generate import Generator
    from textgen.training.trainer import train

    corpus = write_corpus(tmp_path, "the quick brown fox jumps over the lazy dog.\n" * 300)
    cfg = load_config(REPO_ROOT / "configs" / "tiny.yaml", [
        f"data.path={corpus}", f"data.index_dir={tmp_path / 'index'}",
        f"train.out_dir={tmp_path / 'run'}", "windows.carry_state=true",
    ])  # fmt: skip
    result = train(cfg)
    assert result.stop_reason == "done" and result.epoch == 2
    samples = (tmp_path / "run" / "samples.txt").read_text(encoding="utf-8")
    assert samples.count("=== epoch") == 2
    text = Generator.from_run(tmp_path / "run").generate("the ", 40, seed=1)[0]
    assert len(text) == 40
