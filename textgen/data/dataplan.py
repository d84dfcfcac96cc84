"""The data plan of a training run: its windows, its epoch and step counts, its batch pipeline.

Built from the config and the index before TensorFlow starts (so a batch larger than the split
fails at once); the strategy it feeds is only needed for `iterator`.
"""

from __future__ import annotations

from textgen.core.config import Config
from textgen.core.errors import TextgenError
from textgen.data.corpus import Index
from textgen.data.windows import BatchPlan, StreamPlan, WindowSpec, make_plan, train_dataset


class DataPlan:
    """What the trainer reads, and how many steps it takes.

    Args:
        cfg: The resolved config (its `windows` and `train` sections).
        index: The opened index.

    Raises:
        TextgenError: the global batch is larger than the split's windows.
    """

    def __init__(self, cfg: Config, index: Index) -> None:
        tc, wc = cfg.train, cfg.windows
        self.index, self.carry_state = index, wc.carry_state
        if wc.carry_state and wc.target != "sequence":
            raise TextgenError(
                "windows.carry_state needs windows.target=sequence (every position a target)",
                "windows.carry_state",
            )
        step = wc.maxlen if wc.carry_state else wc.step  # streams advance by whole windows
        self.spec = WindowSpec(len(index.train), wc.maxlen, step, wc.target)
        self.batch_size, self.seed = tc.batch_size, tc.seed
        batches = self.batch_plan().batches_per_epoch
        if batches < 1:
            what = (
                f"too large: the train split cannot hold {tc.batch_size} streams of "
                f"{self.spec.span} ids"
                if wc.carry_state
                else f"larger than the {self.spec.count} training windows"
            )
            raise TextgenError(
                f"train.batch_size {tc.batch_size} is {what}; lower train.batch_size or "
                "windows.step, or use a larger corpus",
                "train.batch_size",
            )
        self.steps_per_epoch = min(tc.steps_per_epoch or 2**62, batches)
        self.schedule_steps = (
            tc.epochs * self.steps_per_epoch
        )  # max_steps is a limit, not a horizon
        self.total_steps = min(self.schedule_steps, tc.max_steps or 2**62)
        targets = self.spec.maxlen if self.spec.target == "sequence" else 1
        self.targets_per_step = tc.batch_size * targets  # supervised tokens per optimizer step
        counts = index.meta["counts"]
        self.chars_per_token = counts["chars"] / max(counts["tokens"], 1)

    @property
    def targets_per_window(self) -> int:
        """maxlen for the `sequence` target, 1 for `next`."""
        return self.targets_per_step // self.batch_size

    def batch_plan(self, num_shards: int = 1) -> BatchPlan | StreamPlan:
        """Batch k of epoch e, split over `num_shards` replicas (streams if state is carried)."""
        return make_plan(self.spec, self.batch_size, self.seed, carry_state=self.carry_state,
                         num_shards=num_shards)  # fmt: skip

    def iterator(self, strategy, *, epoch: int, batch: int):
        """A distributed iterator of (x, y) batches positioned at (epoch, batch)."""
        plan = self.batch_plan(strategy.num_replicas_in_sync)

        def per_pipeline(context):
            shards_each = plan.num_shards // context.num_input_pipelines
            first = context.input_pipeline_id * shards_each
            return train_dataset(plan, self.index.train, epoch=epoch, batch=batch,
                                 steps_per_epoch=self.steps_per_epoch,
                                 shards=range(first, first + shards_each))  # fmt: skip

        return iter(strategy.distribute_datasets_from_function(per_pipeline))
