"""`build_sampler`: the one compiled sampling function, shared by `Generator`, the export and
the server (rows of one call may differ in prompt, settings, seed and position)."""

from __future__ import annotations

from textgen.generation.sampling import (
    FILTERED,
    GREEDY,
    PLAIN,
    pick_tokens,
    row_keys,
    row_settings,
    sampling_rule,
    uniforms,
)  # fmt: skip
from textgen.model.stepmodel import StepModel

# A block: the most tokens one compiled call reads or samples (chosen by measurement, see
# docs/benchmarks.md). A chunk: what `Generator.stream` yields, one call of at most a block.
BLOCK = 256


def build_sampler(step: StepModel, block: int = BLOCK, *, jit_compile: bool = False, on_trace=None):
    """The one compiled sampling function, shared by `Generator`, the export and the server.

    `sampler(feed, feed_length, feed_row, states, length, position, temperature, top_k, top_p,
    seed, sample) -> (tokens, states)`: each prompt of `feed` (rows of <= `block` tokens) is
    read once from the state of its first row and its state copied to every row that names it
    in `feed_row` (-1: no prompt this call); then every row samples `length` (<= `block`)
    tokens with its own temperature, top-k, top-p, seed and sample number. Rows are requests
    or samples of one request: any mix of settings goes in one call.

    Args:
        step: The step model.
        block: Most prompt tokens read and tokens sampled per call.
        jit_compile: XLA-compile it (one compile per shape of the batch).
        on_trace: Called each time the function is traced (for tests and benchmarks).

    Returns:
        A `tf.function` with a fixed input signature: (rows, block) int32 tokens (the first
        `length` of each row are real) and the states, (2 * layers, rows, units).
    """
    import tensorflow as tf

    spec = tf.TensorSpec

    @tf.function(
        jit_compile=jit_compile,
        input_signature=[
            spec((None, block), tf.int32, name="feed"),  # (prompts, block), zero-padded
            spec((None,), tf.int32, name="feed_length"),  # (prompts,) real tokens of each
            spec((None,), tf.int32, name="feed_row"),  # (rows,) the row's prompt, or -1
            spec((2 * step.layers, None, step.units), tf.float32, name="states"),
            spec((), tf.int32, name="length"),  # tokens to sample, <= block
            spec((None,), tf.int32, name="position"),  # (rows,) tokens sampled before
            spec((None,), tf.float32, name="temperature"),  # (rows,)
            spec((None,), tf.int32, name="top_k"),  # (rows,)
            spec((None,), tf.float32, name="top_p"),  # (rows,)
            spec((None,), tf.int64, name="seed"),  # (rows,)
            spec((None,), tf.int32, name="sample"),  # (rows,) number among its request's
        ],
    )
    def sampler(
        feed, feed_length, feed_row, states, length, position, temperature, top_k, top_p, seed,
        sample,
    ):  # fmt: skip
        if on_trace is not None:
            on_trace()  # runs only while tracing
        states = tf.cond(
            tf.reduce_max(feed_length) > 0,
            lambda: read_prompts(step, feed, feed_length, feed_row, states),
            lambda: states,
        )
        carry = step.carry_of(states)
        settings = row_settings(temperature, top_k, top_p)
        keys = row_keys(seed, sample)  # (rows,)
        rows = tf.shape(states)[1]

        def sample_with(rule: int):
            def run():
                out = tf.zeros([block, rows], tf.int32)  # (block, rows): fixed for XLA
                draws = uniforms(keys, position, length if rule != GREEDY else 0)

                def body(i, out, *carry):
                    logits = step.logits(carry)  # (rows, vocab)
                    uniform = draws[i] if rule != GREEDY else None  # (rows,)
                    inverse, k, p = settings
                    token = pick_tokens(
                        rule, logits, inverse_temperature=inverse, top_k=k, top_p=p,
                        uniform=uniform,
                    )  # (rows,)  # fmt: skip
                    out = tf.tensor_scatter_nd_update(out, [[i]], token[None])
                    return (i + 1, out, *step.advance(token, carry))

                loop = tf.while_loop(lambda i, *_: i < length, body, (0, out, *carry))
                return loop[1], loop[2:]

            return run

        # One loop per rule, the rule picked once: no token pays for a branch (measured in
        # docs/benchmarks.md).
        rule = sampling_rule(temperature, top_k, top_p)
        out, final_carry = tf.switch_case(rule, [sample_with(r) for r in (GREEDY, PLAIN, FILTERED)])
        return tf.transpose(out), step.states_of(final_carry)  # (rows, block), states

    return sampler


def read_prompts(step: StepModel, feed, feed_length, feed_row, states):
    """States after each row's prompt: each prompt is read once, then copied to its rows.

    Args:
        step: The step model.
        feed: (prompts, block) int32; feed_length: (prompts,) int32.
        feed_row: (rows,) int32, the prompt of each row, -1 for none (its state is kept).
        states: (2 * layers, rows, units): a prompt starts from the state of its first row.

    Returns:
        (2 * layers, rows, units).
    """
    import tensorflow as tf

    rows = tf.shape(states)[1]
    first = tf.math.unsorted_segment_min(tf.range(rows), feed_row, tf.shape(feed)[0])
    start = tf.gather(states, tf.minimum(first, rows - 1), axis=1)  # (2 * layers, prompts, units)
    carry = step.warm_up(feed, feed_length, step.carry_of(start))
    read = tf.gather(step.states_of(carry), tf.maximum(feed_row, 0), axis=1)  # (2L, rows, units)
    return tf.where((feed_row >= 0)[None, :, None], read, states)
