"""Window arithmetic, the seeded per-epoch order, batch k of epoch e directly, the tf.data pipeline.

A window starts at `offset + k * step`. Each epoch visits every window once, in an order given by
a seeded bijection of [0, windows) (a small Feistel cipher), so batch k of epoch e is computed from
(seed, e, k) alone, in O(batch) time and memory, for resume and for splitting batches across
workers. Ids are read from the split's `.npy` file with `pread`, never through a long-lived
memmap, so page-cache pages of a large corpus never count in the trainer's RSS.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from textgen.core.errors import TextgenError
from textgen.data.tokenfile import TokenFile

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True)
class WindowSpec:
    """Where windows start in a split of `tokens` ids and what they predict.

    Attributes:
        tokens: Length of the split.
        maxlen: Input length of a window.
        step: Distance between window starts.
        target: `sequence` (y = x shifted by one) or `next` (y = the id after the window).
    """

    tokens: int
    maxlen: int
    step: int
    target: str = "sequence"

    @property
    def span(self) -> int:
        """Ids read per window: the inputs and the last target."""
        return self.maxlen + 1

    @property
    def max_offset(self) -> int:
        """Largest per-epoch shift of the window grid that keeps the window count fixed."""
        return max(0, min(self.step - 1, self.tokens - self.span))

    @property
    def count(self) -> int:
        """Windows per epoch (the same for every epoch's offset)."""
        room = self.tokens - self.span - self.max_offset
        return 0 if room < 0 else room // self.step + 1

    def offset(self, seed: int, epoch: int) -> int:
        """The epoch's shift of the window grid, so epochs see different window boundaries."""
        if self.max_offset == 0:
            return 0
        return int(np.random.default_rng([seed, epoch, 1]).integers(self.max_offset + 1))

    def split_xy(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Splits read rows (windows, span) into inputs and targets."""
        x = rows[:, :-1]  # (windows, maxlen)
        y = rows[:, 1:] if self.target == "sequence" else rows[:, -1]  # (windows, maxlen) | (w,)
        return x, y


class EpochOrder:
    """A seeded permutation of [0, n), evaluated at any positions without materializing it.

    A 4-round Feistel network on the smallest even-bit domain >= n, with cycle-walking to stay
    inside [0, n): a bijection for every (seed, epoch).
    """

    def __init__(self, n: int, seed: int, epoch: int) -> None:
        self.n = n
        half = max(1, math.ceil(math.log2(max(n, 2)) / 2))
        self._half = np.uint64(half)
        self._mask = np.uint64((1 << half) - 1)
        keys = np.random.default_rng([seed, epoch, 0]).integers(0, 2**63, size=4, dtype=np.int64)
        self._keys = keys.astype(np.uint64)

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """Returns the window index at each epoch position."""
        values = np.asarray(positions, dtype=np.uint64)
        out = self._permute(values)
        outside = out >= self.n
        while outside.any():  # cycle-walk: at most a few rounds, the domain is < 4n
            out[outside] = self._permute(out[outside])
            outside = out >= self.n
        return out.astype(np.int64)

    def _permute(self, values: np.ndarray) -> np.ndarray:
        left, right = values >> self._half, values & self._mask
        for key in self._keys:
            left, right = right, left ^ (_mix(right ^ key) & self._mask)
        return (left << self._half) | right


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a cheap, well-mixed 64-bit hash."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9) & _MASK64
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB) & _MASK64
        return x ^ (x >> np.uint64(31))


class _RowPlan:
    """What both plans share: rows per shard, and reading and iterating their batches."""

    def __init__(
        self, spec: WindowSpec, batch_size: int, seed: int, *, num_shards: int = 1
    ) -> None:
        if batch_size % num_shards:
            raise TextgenError(
                f"train.batch_size {batch_size} does not split evenly over {num_shards} replicas",
                "train.batch_size",
            )
        self.spec, self.batch_size, self.seed = spec, batch_size, seed
        self.num_shards = num_shards
        self.rows = batch_size // num_shards  # rows this shard reads per step

    def starts(self, epoch: int, batch: int, shard: int = 0) -> np.ndarray:
        """Where `shard`'s rows of global batch `batch` in epoch `epoch` start reading."""
        raise NotImplementedError

    def batch(
        self, tokens: TokenFile, epoch: int, batch: int, shard: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Returns (x, y) of `shard`'s rows of batch `batch` in epoch `epoch`."""
        return self.spec.split_xy(tokens.read(self.starts(epoch, batch, shard), self.spec.span))

    def iterate(
        self,
        tokens: TokenFile,
        *,
        epoch: int,
        batch: int,
        steps_per_epoch: int,
        shards: Sequence[int] = (0,),
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yields batches forever from (epoch, batch), each global batch as one item per shard.

        Epochs wrap every `steps_per_epoch` batches.
        """
        while True:
            for shard in shards:
                yield self.batch(tokens, epoch, batch, shard)
            batch += 1
            if batch >= steps_per_epoch:
                epoch, batch = epoch + 1, 0


class BatchPlan(_RowPlan):
    """Batch k of epoch e for one shard, computed directly from (seed, e, k).

    Args:
        spec: The split's windows.
        batch_size: The global batch (windows per step over all shards).
        seed: The run's seed.
        num_shards: Replicas sharing each global batch; each reads its own disjoint rows.
    """

    def __init__(
        self, spec: WindowSpec, batch_size: int, seed: int, *, num_shards: int = 1
    ) -> None:
        super().__init__(spec, batch_size, seed, num_shards=num_shards)
        self._order: tuple[int, EpochOrder] | None = None

    @property
    def batches_per_epoch(self) -> int:
        """Full global batches in one pass over the windows (the remainder is skipped)."""
        return self.spec.count // self.batch_size

    def starts(self, epoch: int, batch: int, shard: int = 0) -> np.ndarray:
        """Window starts of `shard`'s rows of global batch `batch` in epoch `epoch`."""
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, EpochOrder(self.spec.count, self.seed, epoch))
        first = batch * self.batch_size + shard * self.rows
        windows = self._order[1](np.arange(first, first + self.rows))  # (rows,)
        return self.spec.offset(self.seed, epoch) + windows * self.spec.step


class StreamPlan(_RowPlan):
    """Batch k of epoch e when each batch row is a contiguous stream (carried LSTM state).

    The split is cut into `batch_size` equal regions, one per row. In epoch e every row starts
    at the same seeded offset o_e < maxlen into its region, and batch k reads ids
    `[region_r + o_e + k * maxlen, ... + maxlen + 1)`: batch k + 1 continues exactly where batch
    k stopped. A new epoch starts every stream afresh (the trainer resets the carried state)::

        split:  |---- row 0 ----|---- row 1 ----|---- row 2 ----| ...   (batch_size regions)
        batch k:   [k] of each row, side by side -> x (rows, maxlen), y shifted by one

    Args:
        spec: The split's windows (its `maxlen`; the target must be `sequence`).
        batch_size: The global batch: streams over all shards.
        seed: The run's seed (the per-epoch offsets).
        num_shards: Replicas; shard s carries rows `[s * rows, (s + 1) * rows)`.
    """

    def __init__(
        self, spec: WindowSpec, batch_size: int, seed: int, *, num_shards: int = 1
    ) -> None:
        super().__init__(spec, batch_size, seed, num_shards=num_shards)
        self.region = spec.tokens // batch_size  # ids per stream
        self.max_offset = max(0, min(spec.maxlen - 1, self.region - spec.span))

    @property
    def batches_per_epoch(self) -> int:
        """Steps until the streams reach the end of their regions."""
        room = self.region - self.max_offset - 1  # the last target of a chunk is read too
        return max(room // self.spec.maxlen, 0)

    def offset(self, epoch: int) -> int:
        """The epoch's shift of every stream's start."""
        if self.max_offset == 0:
            return 0
        return int(np.random.default_rng([self.seed, epoch, 2]).integers(self.max_offset + 1))

    def starts(self, epoch: int, batch: int, shard: int = 0) -> np.ndarray:
        """Where `shard`'s rows of batch `batch` in epoch `epoch` start reading."""
        rows = np.arange(shard * self.rows, (shard + 1) * self.rows, dtype=np.int64)  # (rows,)
        return rows * self.region + self.offset(epoch) + batch * self.spec.maxlen


def make_plan(
    spec: WindowSpec, batch_size: int, seed: int, *, carry_state: bool, num_shards: int = 1
) -> BatchPlan | StreamPlan:
    """The batch plan of a run: independent windows, or streams when state is carried."""
    plan = StreamPlan if carry_state else BatchPlan
    return plan(spec, batch_size, seed, num_shards=num_shards)


def train_dataset(
    plan: BatchPlan | StreamPlan,
    tokens: TokenFile,
    *,
    epoch: int,
    batch: int,
    steps_per_epoch: int,
    shards: Sequence[int] = (0,),
):
    """A prefetched tf.data pipeline of per-replica (x, y) int32 batches from (epoch, batch).

    Args:
        plan: The batch plan.
        tokens: The train split.
        epoch: Epoch to start in.
        batch: Batch within that epoch to start at.
        steps_per_epoch: Batches per epoch.
        shards: The replicas this pipeline feeds, in the order the strategy consumes them.

    The generator gathers each batch by index from the split file; nothing holds the corpus.
    """
    import tensorflow as tf

    spec = plan.spec
    y_shape = (plan.rows, spec.maxlen) if spec.target == "sequence" else (plan.rows,)
    signature = (
        tf.TensorSpec((plan.rows, spec.maxlen), tf.int32),  # (batch, time)
        tf.TensorSpec(y_shape, tf.int32),
    )
    dataset = tf.data.Dataset.from_generator(
        lambda: plan.iterate(
            tokens, epoch=epoch, batch=batch, steps_per_epoch=steps_per_epoch, shards=shards
        ),
        output_signature=signature,
    )
    return dataset.prefetch(8)
