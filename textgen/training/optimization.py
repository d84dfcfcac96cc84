"""The optimization side of training: the LR schedule and the compiled multi-step train call.

Each replica computes the mean loss of the *global* batch; gradients are clipped by the norm of the
all-reduced gradient (Keras 3 clips per replica, before its all-reduce), so N replicas follow the
same trajectory as one device with the same global batch.
"""

from __future__ import annotations

import math

from textgen.core.config import TrainConfig, precision_policy
from textgen.training.carry import CarriedState


def learning_rate_schedule(train_cfg: TrainConfig, total_steps: int):
    """Constant, or linear warmup then a cosine or linear decay to `min_lr_ratio` at `total_steps`.

    The decay's horizon is a variable (`schedule.horizon`): a time budget sets it once it has
    measured the step rate, and a resumed run sets it from its checkpoint.
    """
    if train_cfg.lr_schedule == "constant":
        return train_cfg.learning_rate
    return _warmup_cosine_class()(
        peak=train_cfg.learning_rate,
        warmup_steps=train_cfg.warmup_steps,
        floor_ratio=train_cfg.min_lr_ratio,
        horizon=total_steps,
        decay=train_cfg.lr_schedule,
    )


def _warmup_cosine_class():
    """`WarmupCosine`, defined on first use so that importing this module needs no Keras."""
    global _WarmupCosine
    if _WarmupCosine is not None:
        return _WarmupCosine
    import keras
    import tensorflow as tf

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        """Linear warmup to `peak`, then a cosine (or linear) decay to `peak * floor_ratio` at
        `horizon`, flat after."""

        def __init__(
            self, *, peak: float, warmup_steps: int, floor_ratio: float, horizon: int,
            decay: str = "cosine",
        ):  # fmt: skip
            self.peak, self.warmup_steps, self.floor_ratio = peak, warmup_steps, floor_ratio
            self.decay = decay
            self.horizon = tf.Variable(float(horizon), trainable=False, name="lr_horizon")

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            horizon = tf.maximum(tf.cast(self.horizon, tf.float32), 1.0)
            warmup = tf.minimum(float(self.warmup_steps), horizon - 1.0)  # a short run still decays
            rising = self.peak * step / tf.maximum(warmup, 1.0)
            progress = tf.clip_by_value((step - warmup) / tf.maximum(horizon - warmup, 1.0), 0, 1)
            floor = self.peak * self.floor_ratio
            if self.decay == "linear":
                share = 1.0 - progress  # (peak - floor) falls by the same amount every step
            else:
                share = 0.5 * (1.0 + tf.cos(math.pi * progress))
            falling = floor + (self.peak - floor) * share
            return tf.where(step < warmup, rising, falling)

        def get_config(self):
            return {
                "peak": self.peak,
                "warmup_steps": self.warmup_steps,
                "floor_ratio": self.floor_ratio,
                "horizon": int(self.horizon.numpy()),
                "decay": self.decay,
            }

    _WarmupCosine = WarmupCosine
    return WarmupCosine


_WarmupCosine = None


def compile_train_steps(
    model,
    optimizer,
    strategy,
    train_cfg: TrainConfig,
    *,
    targets_per_window: int,
    carried: CarriedState | None = None,
):
    """Returns `train_steps(iterator, steps) -> mean loss`: one tf.function running `steps` steps.

    Args:
        model: ids -> logits.
        optimizer: A built Keras optimizer (a LossScaleOptimizer under mixed_float16).
        strategy: The tf.distribute strategy the model was built under.
        train_cfg: The train section (batch size, clipping, precision).
        targets_per_window: maxlen for the `sequence` target, 1 for `next`.
        carried: The streams' carried LSTM states (`windows.carry_state`), or None: every
            window starts from zeros. `train_steps(iterator, steps, reset)` then starts the
            streams afresh at the call's first step when `reset` is true (a new epoch).
    """
    import tensorflow as tf

    tc, next_target = train_cfg, targets_per_window == 1
    tokens_per_batch = float(tc.batch_size * targets_per_window)
    variables = model.trainable_variables
    loss_scaled = precision_policy(tc) == "mixed_float16"

    def replica_step(x, y, reset):
        new_states = tf.zeros(())  # no carried state
        with tf.GradientTape() as tape:
            if carried is None:
                logits = model(x, training=True)  # (batch, time, vocab)
            else:
                logits, new_states = carried.forward(x, reset, training=True)
            if next_target:
                logits = logits[:, -1, :]  # (batch, vocab)
            nats = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=tf.cast(logits, tf.float32)
            )
            loss = tf.reduce_sum(nats) / tokens_per_batch  # the global batch's mean
            scaled = optimizer.scale_loss(loss) if loss_scaled else loss
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(scaled, variables)]
        if tc.clip_norm > 0:
            # Clip by the norm of the *global* gradient, so N replicas equal one device.
            context = tf.distribute.get_replica_context()
            total = context.all_reduce("SUM", grads) if context.num_replicas_in_sync > 1 else grads
            norm = tf.linalg.global_norm(total)
            if loss_scaled:
                norm = norm / tf.cast(optimizer.dynamic_scale, norm.dtype)
            factor = tf.minimum(1.0, tc.clip_norm / (norm + 1e-6))
            grads = [g * tf.cast(factor, g.dtype) for g in grads]
        optimizer.apply(grads, variables)
        return loss, new_states

    @tf.function
    def train_steps(iterator, steps, reset=False):
        total = tf.constant(0.0)
        for i in tf.range(steps):
            x, y = next(iterator)
            first = tf.logical_and(reset, tf.equal(i, 0))  # calls never cross an epoch's end
            loss, new_states = strategy.run(replica_step, args=(x, y, first))
            total += strategy.reduce("SUM", loss, axis=None)
            if carried is not None:
                carried.update(strategy, new_states)
        return total / tf.cast(steps, tf.float32)

    return train_steps
