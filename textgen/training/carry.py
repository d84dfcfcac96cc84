"""The LSTM states that training streams carry from batch to batch (truncated BPTT).

With `windows.carry_state`, row r of every batch continues row r of the previous one
(`windows.StreamPlan`), so the model starts each batch from the states the last batch ended
in; gradients stop at the batch boundary. The states of the whole global batch live in one
variable, `(2 * layers, batch, units)`, that is part of the checkpoint (exact resume); each
replica reads and writes its own rows.
"""

from __future__ import annotations


class CarriedState:
    """The carried (h, c) of every layer and stream, and the model that carries them.

    Args:
        model: The training model from `build_model` (its layers are shared, not copied).
        batch_size: The global batch (streams over all replicas).
    """

    def __init__(self, model, batch_size: int) -> None:
        import tensorflow as tf

        from textgen.model.build import lstm_layers, stream_model

        layers = lstm_layers(model)
        self.stream = stream_model(model)
        self.compute_dtype = layers[0].compute_dtype
        shape = (2 * len(layers), batch_size, layers[0].units)  # (h and c per layer, batch, units)
        self.variable = tf.Variable(tf.zeros(shape), trainable=False, name="carried_states")

    def forward(self, x, reset, *, training: bool):
        """This replica's logits from its rows' carried states (zeros where `reset`).

        Returns:
            logits `(rows, time, vocab)` and the new states `(2 * layers, rows, units)`, float32,
            with no gradient through them.
        """
        import tensorflow as tf

        x = tf.convert_to_tensor(x)  # (rows, time)
        rows = tf.shape(x)[0]
        first = tf.distribute.get_replica_context().replica_id_in_sync_group * rows
        states = self.variable[:, first : first + rows]  # (2 * layers, rows, units)
        states = tf.where(reset, tf.zeros_like(states), states)
        inputs = [tf.cast(s, self.compute_dtype) for s in tf.unstack(states)]
        logits, *after = self.stream([x, *inputs], training=training)
        new_states = tf.stack([tf.cast(s, tf.float32) for s in after])  # (2 * layers, rows, units)
        return logits, tf.stop_gradient(new_states)

    def update(self, strategy, per_replica_states) -> None:
        """Stores every replica's new states (called in cross-replica context)."""
        self.variable.assign(strategy.gather(per_replica_states, axis=1))
