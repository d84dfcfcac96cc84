"""A training session: the model, optimizer, checkpoint and compiled train steps of one run.

Everything the loop in `trainer.py` drives, built once, with nothing of the loop itself; the
benchmarks build one with `open_session` and time its `train_steps` directly.
"""

from __future__ import annotations

from pathlib import Path

from textgen.core.config import Config, precision_policy
from textgen.data.corpus import index_corpus
from textgen.data.dataplan import DataPlan
from textgen.run.checkpoints import TrainCheckpoint, TrainCounters
from textgen.run.rundir import RunDir
from textgen.training.carry import CarriedState
from textgen.training.optimization import compile_train_steps, learning_rate_schedule


class TrainSession:
    """The trainable state of a run and the compiled function that advances it.

    Args:
        cfg: The resolved config.
        data: The run's data plan.
        strategy: The tf.distribute strategy to build under.
        checkpoint_dir: Where the checkpoint manager writes.
    """

    def __init__(self, cfg: Config, data: DataPlan, *, strategy, checkpoint_dir: Path) -> None:
        import keras
        import tensorflow as tf

        from textgen.model.build import build_model

        tc = cfg.train
        keras.utils.set_random_seed(tc.seed)
        if tc.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.cfg, self.data, self.strategy = cfg, data, strategy
        with strategy.scope():
            self.model = build_model(cfg.model, data.index.vocab_size)
            self.schedule = learning_rate_schedule(tc, data.schedule_steps)  # or a constant
            optimizer = keras.optimizers.Adam(self.schedule, beta_2=tc.adam_beta2)
            if precision_policy(tc) == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)
            self.optimizer = optimizer
            # The streams' LSTM states, carried from batch to batch (windows.carry_state).
            self.carried = CarriedState(self.model, tc.batch_size) if data.carry_state else None
            extra = {"carried_states": self.carried.variable} if self.carried else {}
            self.checkpoint = TrainCheckpoint(self.model, optimizer, checkpoint_dir, **extra)
        # train_steps(iterator, steps, reset) -> mean loss: `steps` optimizer steps in one call.
        self.train_steps = compile_train_steps(
            self.model, optimizer, strategy, tc, targets_per_window=data.targets_per_window,
            carried=self.carried,
        )  # fmt: skip

    def set_horizon(self, steps: int) -> None:
        """Ends the cosine schedule at `steps` (no-op for a constant learning rate)."""
        if hasattr(self.schedule, "horizon"):
            self.schedule.horizon.assign(float(steps))

    def learning_rate(self) -> float:
        """The learning rate of the next step."""
        if not callable(self.schedule):
            return float(self.schedule)
        return float(self.schedule(self.optimizer.iterations))

    def iterator(self, counters: TrainCounters):
        """The batch pipeline, positioned at the counters' epoch and batch."""
        return self.data.iterator(self.strategy, epoch=counters.epoch, batch=counters.batch)


def open_session(cfg: Config) -> TrainSession:
    """Indexes the corpus and builds a session on the default strategy (for benchmarks).

    Nothing is trained, and nothing is written but the index and the run's checkpoints dir.
    """
    import tensorflow as tf

    index, _ = index_corpus(cfg.data, min_split_tokens=cfg.windows.maxlen + 1)
    run = RunDir(cfg.train.out_dir)
    run.prepare()
    return TrainSession(cfg, DataPlan(cfg, index), strategy=tf.distribute.get_strategy(),
                        checkpoint_dir=run.checkpoints)  # fmt: skip
