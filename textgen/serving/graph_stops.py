"""Where a sample stops, in graph ops, for the SavedModel (`export.py`): the rule of
`generation/stops.py` (`RowStops`) on a whole batch of sampled tokens at once.

A row ends at the first of: a stop string it writes (the text is cut before it; the tokens
count up to and with it), the end-of-text token when the row stops at end (cut there; the
token counted), or its length. Stop strings are searched for in the decoded text, so one may
span tokens; of several starting at the same place the shortest wins, as in `StopScanner`.
Each row's stop strings become one RE2 alternation (punctuation escaped, shortest first,
leftmost-first matching), applied row by row; only core ops, so TensorFlow alone runs it.
"""

from __future__ import annotations

from textgen.generation.stops import MAX_STOP_CHARS, MAX_STOPS

NEVER = r"\z."  # an alternation for a row without stop strings: matches nothing


def check_stop_inputs(stop, stop_at_end, rows) -> list:
    """Graph assertions on `stop` (string (B, S), "" padding) and `stop_at_end` (bool (B,))."""
    import tensorflow as tf

    given = tf.reduce_sum(tf.cast(stop != "", tf.int32), axis=1)  # (B,)
    chars = tf.strings.length(stop, unit="UTF8_CHAR")  # (B, S)
    return [
        tf.debugging.assert_equal(tf.shape(stop)[0], rows, "stop must have one row per prompt"),
        tf.debugging.assert_equal(
            tf.shape(stop_at_end)[0], rows, "stop_at_end must have one per prompt"
        ),
        tf.debugging.assert_less_equal(
            given, MAX_STOPS, f'at most {MAX_STOPS} stop strings per row ("" pads a row)'
        ),
        tf.debugging.assert_less_equal(
            chars, MAX_STOP_CHARS, f"a stop string must be at most {MAX_STOP_CHARS} characters"
        ),
    ]


def stop_patterns(stop):
    """Each row's stop strings as one RE2 alternation, shortest first: string (B,)."""
    import tensorflow as tf

    order = tf.argsort(tf.strings.length(stop), axis=1, stable=True)  # (B, S) shortest first
    ordered = tf.gather(stop, order, batch_dims=1)  # (B, S)
    escaped = tf.strings.regex_replace(ordered, r"[[:punct:]]", r"\\\0")  # literal in RE2
    options = tf.where(ordered != "", tf.strings.join(["|", escaped]), "")  # (B, S)
    joined = tf.strings.reduce_join(options, axis=1)  # (B,) "|a|b", "" for none
    return tf.where(joined == "", NEVER, tf.strings.regex_replace(joined, r"\A\|", ""))


def stop_offsets(text, patterns):
    """Bytes of each row's text before its first stop string, and through it: int32 (B,) x 2
    (both the text's length where there is none)."""
    import tensorflow as tf

    def one(row):
        line, pattern = row[0], row[1]
        head = tf.strings.join([r"(?s)\A(.*?)(?:", pattern, r")(?s:.*)\z"])
        through = tf.strings.join([r"(?s)\A(.*?(?:", pattern, r"))(?s:.*)\z"])
        return tf.stack([
            tf.strings.length(tf.strings.regex_replace(line, head, r"\1", replace_global=False)),
            tf.strings.length(tf.strings.regex_replace(line, through, r"\1", False)),
        ])  # fmt: skip

    pairs = tf.map_fn(
        one, tf.stack([text, patterns], axis=1), fn_output_signature=tf.TensorSpec([2], tf.int32)
    )  # (B, 2)
    return pairs[:, 0], pairs[:, 1]


def row_ends(tokens, length, at_end, patterns, *, end_of_text: int, tokenizer):
    """How each row of sampled tokens ends.

    Args:
        tokens: int32 (B, T), sampled (T >= every row's length, or the rows sampled so far).
        length: int32 (B,), each row's length cap.
        at_end: bool (B,), the row stops at the end-of-text token.
        patterns: string (B,), from `stop_patterns`.
        end_of_text: The end-of-text id, or -1.
        tokenizer: The `GraphTokenizer` (`decode`, `piece_bytes`).

    Returns:
        {text: string (B,) cut at the stop, tokens: int32 (B,), stopped: string (B,)}.
    """
    import tensorflow as tf

    position = tf.range(tf.shape(tokens)[1])[None, :]  # (1, T)
    written = position < length[:, None]  # (B, T)
    is_end = (tokens == end_of_text) & at_end[:, None] & written  # (B, T); -1: never
    ended = tf.reduce_any(is_end, axis=1)  # (B,)
    first_end = tf.reduce_min(tf.where(is_end, position, tf.int32.max), axis=1)  # (B,)
    kept = tf.where(ended, first_end, tf.minimum(length, tf.shape(tokens)[1]))  # (B,)
    real = position < kept[:, None]  # (B, T): the tokens before the end
    text = tokenizer.decode(tf.where(real, tokens, -1))  # (B,)
    before, through = stop_offsets(text, patterns)  # (B,) bytes each
    stopped = before < tf.strings.length(text)  # (B,)
    piece_bytes = tf.strings.length(tf.gather(tokenizer.piece_bytes, tf.maximum(tokens, 0)))
    used = tf.cumsum(tf.where(real, piece_bytes, 0), axis=1)  # (B, T) bytes after each token
    upto = tf.reduce_sum(tf.cast(real & (used < through[:, None]), tf.int32), axis=1) + 1
    count = tf.where(ended, first_end + 1, length)  # (B,)
    return {
        "text": tf.where(stopped, tf.strings.substr(text, tf.zeros_like(before), before), text),
        "tokens": tf.where(stopped, upto, count),
        "stopped": tf.where(stopped, "stop", tf.where(ended, "end", "length")),
    }
