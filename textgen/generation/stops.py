"""Where a sample stops: a stop string it writes, the end-of-text token, or its length.

`RowStops` follows every row of a batch through the chunks of `Generator.stream`: each row stops
on its own. A stop string is cut from the text (so is the end-of-text token); text that might be
the start of a stop string is held back until the next chunk shows whether it is. Nothing here
runs when there is neither a stop string nor an end-of-text token to watch for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from textgen.core.errors import TextgenError

MAX_STOPS = 8  # stop strings per request: each is searched for in every chunk of every row
MAX_STOP_CHARS = 64  # characters per stop string: a stop is a separator, not a passage
STOPPED_REASONS = ("stop", "end", "length")  # a stop string, end-of-text, the length cap


def check_stops(stop: Sequence[str], *, where: str = "stop") -> tuple[str, ...]:
    """The stop strings as a tuple, checked.

    Raises:
        TextgenError: more than `MAX_STOPS`, an empty one or one over `MAX_STOP_CHARS`.
    """
    if isinstance(stop, str):
        stop = [stop]
    stops = tuple(stop)
    if len(stops) > MAX_STOPS:
        raise TextgenError(f"at most {MAX_STOPS} stop strings, got {len(stops)}", where)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise TextgenError(f"a stop string must be a non-empty string, got {s!r}", where)
        if len(s) > MAX_STOP_CHARS:
            raise TextgenError(
                f"a stop string must be at most {MAX_STOP_CHARS} characters, got {len(s)}", where
            )
    return stops


class StopScanner:
    """Finds the first stop string in one row's text, chunk by chunk.

    Args:
        stops: The stop strings (non-empty).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.pending = ""  # text held back: it may be the start of a stop string

    def feed(self, text: str) -> tuple[str, int | None]:
        """Returns (text that is safe to give out, characters of `text` up to the end of the
        stop string when one completed in it, else None)."""
        held = len(self.pending)
        buf = self.pending + text
        found = [(i, len(s)) for s in self.stops if (i := buf.find(s)) >= 0]
        if found:
            start, size = min(found)
            self.pending = ""
            return buf[:start], start + size - held
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), hold, -1):
                if buf.endswith(s[:k]):
                    hold = k
                    break
        self.pending = buf[len(buf) - hold :]
        return buf[: len(buf) - hold], None

    def flush(self) -> str:
        """What was held back, once the row ends without a stop string."""
        text, self.pending = self.pending, ""
        return text


@dataclass
class RowStops:
    """The stop state of every row of one batch.

    Args:
        rows: The number of rows.
        stops: Stop strings (may be empty).
        end_of_text: The end-of-text id to stop at, or None.
        char_lengths: Characters per token id (to count the tokens up to a stop string).
    """

    rows: int
    stops: tuple[str, ...]
    end_of_text: int | None
    char_lengths: np.ndarray

    def __post_init__(self) -> None:
        self.active = bool(self.stops) or self.end_of_text is not None
        self.reasons: list[str | None] = [None] * self.rows  # None: still going
        self.tokens = [0] * self.rows  # tokens each row wrote (up to and with its stop)
        self._scanners = [StopScanner(self.stops) for _ in range(self.rows)]

    @property
    def all_stopped(self) -> bool:
        """True when no row is still going."""
        return all(r is not None for r in self.reasons)

    def step(self, tokens: np.ndarray, done: int, decode: Callable[[int, np.ndarray], str]):
        """The texts of one chunk, rows cut at their stops.

        Args:
            tokens: (rows, size) int32, the chunk's new tokens.
            done: Tokens each row had written before this chunk.
            decode: (row, ids) -> the text of those ids for that row (holding partial pieces).
        """
        texts = []
        for i, row in enumerate(tokens):
            if self.reasons[i] is not None:
                texts.append("")
                continue
            ended = None
            if self.end_of_text is not None:
                at = np.flatnonzero(row == self.end_of_text)
                if at.size:
                    ended, row = int(at[0]), row[: at[0]]
            text = decode(i, row)
            if self.stops:
                text, stop_chars = self._scanners[i].feed(text)
                if stop_chars is not None:
                    used = np.cumsum(self.char_lengths[row])  # (size,) chars after each token
                    count = int(np.searchsorted(used, stop_chars, side="left")) + 1
                    self.reasons[i], self.tokens[i] = "stop", done + min(count, len(row))
                    texts.append(text)
                    continue
            if ended is not None:
                text += self._scanners[i].flush()
                self.reasons[i], self.tokens[i] = "end", done + ended + 1
            texts.append(text)
        return texts

    def finish(self, length: int, held: list[str]) -> list[str]:
        """Ends the rows still going at `length` tokens; returns their last text.

        Args:
            length: The length cap.
            held: Each row's text held back by the decoder (partial pieces) at the end.
        """
        tail = []
        for i, text in enumerate(held):
            if self.reasons[i] is not None:
                tail.append("")
                continue
            self.reasons[i], self.tokens[i] = "length", length
            if self.stops:
                text, stop_chars = self._scanners[i].feed(text)
                if stop_chars is not None:
                    self.reasons[i] = "stop"
                else:
                    text += self._scanners[i].flush()
            tail.append(text)
        return tail
