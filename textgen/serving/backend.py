"""`Backend`: the model the server runs, an export (`tf.saved_model.load`) or a run dir (the
same module built in memory), reached only through the module's `sampler`, `encode` and
`metadata` functions, so both behave alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from textgen.core.errors import TextgenError
from textgen.generation.stops import RowStops
from textgen.run.rundir import RunDir
from textgen.serving import export


class Backend:
    """A loaded model: the sampler, the in-graph encoder and what the tokenizer's pieces read.

    Args:
        module: An `export.ExportModule` or what `tf.saved_model.load` returns for one.
        source: Where it came from (for /healthz).
        run: The run dir it was built from (None for an export): novelty needs its index.
    """

    def __init__(self, module, source: str, run: RunDir | None = None) -> None:
        meta = {k: v.numpy() for k, v in module.metadata().items()}
        self.module, self.source, self.run = module, source, run
        self.kind = meta["kind"].decode()
        self.pieces = list(meta["pieces"])  # id -> bytes (a sentencepiece byte piece: one byte)
        self.block, self.layers, self.units = (int(meta[k]) for k in ("block", "layers", "units"))
        self.newline = int(meta["newline"])
        # Exports written before documents and stops lack these: no end-of-text, a line break.
        self.start = int(meta.get("start", self.newline))  # an empty prompt's first id
        self.end_of_text = int(meta.get("end_of_text", -1))
        lengths = meta.get("char_lengths")
        self.char_lengths = (  # (vocab,) characters per id: a stop string's tokens
            _char_lengths(self.pieces) if lengths is None else lengths.astype(np.float32)
        )
        chars = [p.decode("utf-8") for p in self.pieces[1:]] if self.kind == "char" else None
        self.chars = None if chars is None else frozenset(chars)  # sentencepiece: every char

    @classmethod
    def load(cls, path: str | Path, checkpoint: str = "best") -> Backend:
        """Loads an export dir, or builds the module of a run dir.

        Raises:
            TextgenError: neither an export nor a usable run dir.
        """
        path = Path(path)
        if export.is_export(path):
            import tensorflow as tf

            try:
                return cls(tf.saved_model.load(str(path)), str(path))
            except Exception as e:  # TensorFlow raises many types for a damaged SavedModel
                what = f"cannot load the export: {e.__class__.__name__}"
                raise TextgenError(what, str(path)) from None
        if not path.is_dir():
            raise TextgenError("no such run dir or export", str(path))
        return cls(export.build_module(path, checkpoint), str(path), RunDir(path))

    def unknown_chars(self, prompt: str) -> list[str]:
        """Distinct prompt characters outside the vocabulary, in order of appearance (none for
        sentencepiece: byte fallback encodes every character)."""
        if self.chars is None:
            return []
        return [c for c in dict.fromkeys(prompt) if c not in self.chars]

    def encode(self, prompts: list[str]) -> list[np.ndarray]:
        """Each prompt's ids (an empty prompt starts after a line break, or a documents run's
        new document, as `Generator`)."""
        out = self.module.encode(np.array([p.encode("utf-8") for p in prompts], dtype=object))
        ids, lengths = out["ids"].numpy(), out["lengths"].numpy()
        start = np.array([self.start] if self.start >= 0 else [], np.int32)
        return [row[:n] if n else start for row, n in zip(ids, lengths, strict=True)]

    def row_stops(self, rows: int, stop: tuple[str, ...], stop_at_end: bool | None) -> RowStops:
        """The stop state of a job's rows (stop at end-of-text: None means if the model has it)."""
        at_end = self.end_of_text >= 0 and stop_at_end is not False
        return RowStops(rows, stop, self.end_of_text if at_end else None, self.char_lengths)

    def zero_states(self, rows: int) -> np.ndarray:
        """(2 * layers, rows, units) zeros."""
        return np.zeros((2 * self.layers, rows, self.units), np.float32)


def _char_lengths(pieces: list[bytes]) -> np.ndarray:
    """Characters per id from the pieces' bytes (a byte piece that starts a character: 1)."""
    return np.array(
        [1.0 if len(p) == 1 and p[0] >= 0xC0 else len(p.decode("utf-8", "ignore")) for p in pieces],
        np.float32,
    )  # (vocab,)
