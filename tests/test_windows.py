"""Window arithmetic, the per-epoch order, direct batch k, shards, and the tf.data pipeline."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_text, write_corpus

from textgen.core.config import load_config
from textgen.core.errors import TextgenError
from textgen.data.corpus import index_corpus
from textgen.data.tokenfile import TokenFile
from textgen.data.windows import (
    BatchPlan,
    EpochOrder,
    StreamPlan,
    WindowSpec,
    train_dataset,
)

SEED = 1337


def save_ids(path: Path, ids: np.ndarray, version: tuple[int, int] | None = None) -> Path:
    """Writes an int32 `.npy` file (format `version`, numpy's choice if None)."""
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.asarray(ids, dtype="<i4"), version=version)
    return path


@pytest.fixture
def ids(tmp_path: Path) -> tuple[np.ndarray, TokenFile]:
    """1,000 random ids in a real split file, and that file opened as a TokenFile."""
    values = np.random.default_rng(0).integers(0, 50, size=1000, dtype=np.int32)
    return values, TokenFile(save_ids(tmp_path / "train.npy", values))


def epoch_starts(plan: BatchPlan, epoch: int) -> list[np.ndarray]:
    """Every batch's window starts in one epoch, in order."""
    return [plan.starts(epoch, k) for k in range(plan.batches_per_epoch)]


@pytest.mark.parametrize(
    "n", [1, 2, 3, 4, 5, 7, 13, 16, 31, 64, 97, 127, 128, 256, 257, 1000, 1024, 4099]
)
def test_epoch_order_is_a_bijection(n):
    for seed, epoch in [(0, 0), (SEED, 0), (SEED, 1), (7, 123)]:
        order = EpochOrder(n, seed, epoch)(np.arange(n))
        assert order.dtype == np.int64
        np.testing.assert_array_equal(np.sort(order), np.arange(n))


def test_epoch_order_at_any_positions_matches_the_whole_permutation():
    order = EpochOrder(1000, SEED, 3)
    whole = order(np.arange(1000))
    picks = np.array([999, 0, 500, 3, 3, 42])
    np.testing.assert_array_equal(order(picks), whole[picks])


def test_epoch_orders_differ_between_epochs_and_seeds_and_repeat_for_the_same_ones():
    n = 500
    first = EpochOrder(n, SEED, 0)(np.arange(n))
    np.testing.assert_array_equal(EpochOrder(n, SEED, 0)(np.arange(n)), first)
    assert not np.array_equal(EpochOrder(n, SEED, 1)(np.arange(n)), first)
    assert not np.array_equal(EpochOrder(n, SEED + 1, 0)(np.arange(n)), first)
    assert not np.array_equal(first, np.arange(n))  # actually shuffled


@pytest.mark.parametrize(
    "tokens, maxlen, step",
    [(1000, 32, 32), (1000, 32, 7), (1000, 10, 1), (1000, 8, 50), (100, 32, 32), (33, 32, 32)],
)
def test_window_starts_are_an_offset_grid_with_the_same_count_every_epoch(tokens, maxlen, step):
    spec = WindowSpec(tokens, maxlen, step)
    plan = BatchPlan(spec, batch_size=1, seed=SEED)
    assert spec.count >= 1
    assert plan.batches_per_epoch == spec.count
    offsets = set()
    for epoch in range(12):
        offset = spec.offset(SEED, epoch)
        assert 0 <= offset < step
        offsets.add(offset)
        starts = np.concatenate(epoch_starts(plan, epoch))
        assert len(starts) == spec.count
        # Each window start exactly once, on the epoch's grid, and every window fits the split.
        expected = offset + step * np.arange(spec.count)
        np.testing.assert_array_equal(np.sort(starts), expected)
        assert starts.max() + spec.span <= tokens
    if step > 1 and tokens - spec.span >= step:
        assert len(offsets) > 1  # epochs see different window boundaries


def test_a_split_shorter_than_one_window_has_no_windows():
    assert WindowSpec(32, 32, 4).count == 0  # 32 tokens cannot hold 32 inputs + 1 target
    assert WindowSpec(33, 32, 4).count == 1
    assert BatchPlan(WindowSpec(32, 32, 4), 1, SEED).batches_per_epoch == 0


def test_batches_of_an_epoch_are_disjoint_and_skip_only_the_remainder():
    spec = WindowSpec(1000, 16, 5)
    plan = BatchPlan(spec, batch_size=8, seed=SEED)
    assert plan.batches_per_epoch == spec.count // 8
    for epoch in range(3):
        batches = epoch_starts(plan, epoch)
        assert all(b.shape == (8,) for b in batches)
        seen = np.concatenate(batches)
        assert len(set(seen.tolist())) == len(seen) == 8 * plan.batches_per_epoch
    assert not np.array_equal(plan.starts(0, 0), plan.starts(1, 0))


def test_sequence_target_is_the_input_shifted_by_one(ids):
    values, tokens = ids
    spec = WindowSpec(len(tokens), maxlen=16, step=16, target="sequence")
    plan = BatchPlan(spec, batch_size=4, seed=SEED)
    x, y = plan.batch(tokens, epoch=2, batch=3)
    assert x.shape == y.shape == (4, 16)
    assert x.dtype == y.dtype == np.int32
    for row, start in enumerate(plan.starts(2, 3)):
        np.testing.assert_array_equal(x[row], values[start : start + 16])
        np.testing.assert_array_equal(y[row], values[start + 1 : start + 17])


def test_next_target_is_the_id_after_the_window(ids):
    values, tokens = ids
    spec = WindowSpec(len(tokens), maxlen=20, step=3, target="next")
    plan = BatchPlan(spec, batch_size=5, seed=SEED)
    x, y = plan.batch(tokens, epoch=0, batch=1)
    assert x.shape == (5, 20) and y.shape == (5,)
    for row, start in enumerate(plan.starts(0, 1)):
        np.testing.assert_array_equal(x[row], values[start : start + 20])
        assert y[row] == values[start + 20]


def test_batch_k_directly_equals_batch_k_reached_by_iterating(ids):
    _, tokens = ids
    plan = BatchPlan(WindowSpec(len(tokens), 12, 12), batch_size=4, seed=SEED)
    steps_per_epoch = 5  # fewer than the 20 batches of a pass: epochs wrap early
    stream = plan.iterate(tokens, epoch=0, batch=0, steps_per_epoch=steps_per_epoch)
    for i, (x, y) in enumerate(itertools.islice(stream, 17)):  # across three epoch ends
        epoch, k = divmod(i, steps_per_epoch)
        x_direct, y_direct = plan.batch(tokens, epoch, k)
        np.testing.assert_array_equal(x, x_direct)
        np.testing.assert_array_equal(y, y_direct)
    # Starting mid-run gives the same batches as reaching that point from the start.
    resumed = plan.iterate(tokens, epoch=2, batch=3, steps_per_epoch=steps_per_epoch)
    for i, (x, _) in enumerate(itertools.islice(resumed, 4)):
        epoch, k = divmod(2 * steps_per_epoch + 3 + i, steps_per_epoch)
        np.testing.assert_array_equal(x, plan.batch(tokens, epoch, k)[0])


def test_shards_split_the_global_batch_into_disjoint_rows(ids):
    _, tokens = ids
    spec = WindowSpec(len(tokens), 10, 4)
    whole = BatchPlan(spec, batch_size=8, seed=SEED)
    sharded = BatchPlan(spec, batch_size=8, seed=SEED, num_shards=2)
    assert sharded.rows == 4 and sharded.batches_per_epoch == whole.batches_per_epoch
    for epoch, k in [(0, 0), (0, 7), (3, 11)]:
        shard0, shard1 = sharded.starts(epoch, k, 0), sharded.starts(epoch, k, 1)
        assert not set(shard0.tolist()) & set(shard1.tolist())
        np.testing.assert_array_equal(np.concatenate([shard0, shard1]), whole.starts(epoch, k))
        x0, y0 = sharded.batch(tokens, epoch, k, shard=0)
        x1, y1 = sharded.batch(tokens, epoch, k, shard=1)
        x, y = whole.batch(tokens, epoch, k)
        np.testing.assert_array_equal(np.concatenate([x0, x1]), x)
        np.testing.assert_array_equal(np.concatenate([y0, y1]), y)
    # iterate() yields one item per shard, in shard order, per global batch.
    items = list(
        itertools.islice(
            sharded.iterate(tokens, epoch=1, batch=2, steps_per_epoch=9, shards=(0, 1)), 4
        )
    )
    np.testing.assert_array_equal(
        np.concatenate([items[0][0], items[1][0]]), whole.batch(tokens, 1, 2)[0]
    )
    np.testing.assert_array_equal(
        np.concatenate([items[2][0], items[3][0]]), whole.batch(tokens, 1, 3)[0]
    )


def test_a_batch_that_does_not_split_over_the_replicas_is_an_error():
    with pytest.raises(TextgenError, match=r"train\.batch_size"):
        BatchPlan(WindowSpec(1000, 10, 10), batch_size=9, seed=SEED, num_shards=2)


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_token_file_reads_equal_np_load_slices(tmp_path, version):
    values = np.random.default_rng(1).integers(0, 2**31 - 1, size=777, dtype=np.int32)
    path = save_ids(tmp_path / "ids.npy", values, version)
    tokens = TokenFile(path)
    loaded = np.load(path, mmap_mode="r")
    assert len(tokens) == len(loaded) == 777
    starts = np.array([0, 1, 100, 745, 776 - 30, 3])
    rows = tokens.read(starts, 31)
    assert rows.shape == (6, 31) and rows.dtype == np.int32
    for row, start in zip(rows, starts, strict=True):
        np.testing.assert_array_equal(row, loaded[start : start + 31])
    assert tokens.read(np.array([776]), 1)[0, 0] == values[-1]
    assert tokens.read(np.zeros(0, np.int64), 5).shape == (0, 5)


def test_token_file_refuses_what_is_not_a_1d_int32_split(tmp_path):
    np.save(tmp_path / "f64.npy", np.zeros(10, np.float64))
    np.save(tmp_path / "i64.npy", np.zeros(10, np.int64))
    np.save(tmp_path / "2d.npy", np.zeros((2, 5), np.int32))
    for name in ("f64.npy", "i64.npy", "2d.npy"):
        with pytest.raises(TextgenError, match="re-index") as e:
            TokenFile(tmp_path / name)
        assert name in str(e.value)


def test_token_file_reading_past_a_truncated_file_is_an_error(tmp_path):
    path = save_ids(tmp_path / "cut.npy", np.arange(100, dtype=np.int32))
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 40)  # the header still says 100 ids; 90 are left
    tokens = TokenFile(path)
    np.testing.assert_array_equal(tokens.read(np.array([0]), 90)[0], np.arange(90))
    with pytest.raises(TextgenError, match="shorter than its header") as e:
        tokens.read(np.array([80]), 20)
    assert "cut.npy" in str(e.value)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A real index of a synthetic corpus (the trainer's input)."""
    root = tmp_path_factory.mktemp("windows_index")
    corpus = write_corpus(root, synthetic_text(lines=150, seed=3))
    cfg = load_config(None, [f"data.path={corpus}", f"data.index_dir={root / 'idx'}"])
    index, built = index_corpus(cfg.data)
    assert built
    return index.directory


@pytest.mark.parametrize("target", ["sequence", "next"])
def test_train_dataset_equals_direct_slices_of_the_split(indexed, target):
    corpus = np.load(indexed / "train.npy")
    tokens = TokenFile(indexed / "train.npy")
    maxlen = 24
    plan = BatchPlan(WindowSpec(len(tokens), maxlen, 17, target), batch_size=6, seed=SEED)
    steps_per_epoch = 4
    dataset = train_dataset(plan, tokens, epoch=1, batch=2, steps_per_epoch=steps_per_epoch)
    for i, (x, y) in enumerate(dataset.take(7)):  # crosses epoch ends at 2 and 6
        epoch, k = divmod(steps_per_epoch + 2 + i, steps_per_epoch)
        starts = plan.starts(epoch, k)
        x, y = x.numpy(), y.numpy()
        assert x.dtype == y.dtype == np.int32
        np.testing.assert_array_equal(x, np.stack([corpus[s : s + maxlen] for s in starts]))
        if target == "sequence":
            want = np.stack([corpus[s + 1 : s + maxlen + 1] for s in starts])
        else:
            want = corpus[starts + maxlen]
        np.testing.assert_array_equal(y, want)


def test_train_dataset_of_two_shards_yields_each_replica_its_rows(indexed):
    corpus = np.load(indexed / "train.npy")
    tokens = TokenFile(indexed / "train.npy")
    spec = WindowSpec(len(tokens), 16, 16)
    sharded = BatchPlan(spec, batch_size=8, seed=SEED, num_shards=2)
    whole = BatchPlan(spec, batch_size=8, seed=SEED)
    dataset = train_dataset(sharded, tokens, epoch=0, batch=0, steps_per_epoch=3, shards=(0, 1))
    items = [x.numpy() for x, _ in dataset.take(6)]
    assert all(x.shape == (4, 16) for x in items)
    for k in range(3):
        starts = whole.starts(0, k)
        want = np.stack([corpus[s : s + 16] for s in starts])
        np.testing.assert_array_equal(np.concatenate(items[2 * k : 2 * k + 2]), want)


# --- streams (windows.carry_state) ---------------------------------------------------------


def test_each_stream_row_continues_where_the_last_batch_stopped(ids):
    values, tokens = ids  # 1,000 ids: 4 streams of 250
    plan = StreamPlan(WindowSpec(1000, 16, 16), batch_size=4, seed=SEED)
    assert plan.region == 250
    for epoch in range(3):
        offset = plan.offset(epoch)
        assert 0 <= offset < 16
        reads = [plan.batch(tokens, epoch, k) for k in range(plan.batches_per_epoch)]
        for row in range(4):
            # Row r's inputs over the epoch are one contiguous run of its own region ...
            x = np.concatenate([x[row] for x, _ in reads])  # (batches * 16,)
            begin = row * 250 + offset
            np.testing.assert_array_equal(x, values[begin : begin + len(x)])
            # ... with the targets shifted by one, and never past the region's end.
            y = np.concatenate([y[row] for _, y in reads])
            np.testing.assert_array_equal(y, values[begin + 1 : begin + 1 + len(y)])
            assert begin + len(x) + 1 <= (row + 1) * 250
    offsets = {plan.offset(epoch) for epoch in range(20)}
    assert len(offsets) > 5  # epochs start the streams at different seeded offsets


def test_stream_shards_carry_disjoint_rows_of_the_global_batch(ids):
    _, tokens = ids
    spec = WindowSpec(1000, 16, 16)
    whole = StreamPlan(spec, batch_size=4, seed=SEED)
    halves = StreamPlan(spec, batch_size=4, seed=SEED, num_shards=2)
    for k in range(3):
        x, _ = whole.batch(tokens, 1, k)
        np.testing.assert_array_equal(np.concatenate([halves.batch(tokens, 1, k, s)[0]
                                                      for s in (0, 1)]), x)  # fmt: skip
