"""Whether a run may resume on this config and index, and what changed since it started.

Used by the trainer only: a changed model shape, tokenizer or vocabulary refuses to resume; other
changes (learning rate, limits, the corpus) are allowed and reported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textgen.core.config import Config, ModelConfig
from textgen.core.errors import TextgenError
from textgen.data.tokenizers import same_vocabulary
from textgen.run.rundir import RunDir

# Keys whose change makes the saved weights or token ids meaningless.
_SHAPE_KEYS = (*(("model", key) for key in ModelConfig.SHAPE_KEYS), ("data", "tokenizer"))
_START_OVER = "set train.fresh=true to start over, or choose another train.out_dir"


def check_resumable(run: RunDir, cfg: Config, index: Any) -> list[str]:
    """Refuses to resume a run whose model shape, tokenizer or vocabulary changed.

    Args:
        run: The run dir, which has checkpoints.
        cfg: The config of this invocation.
        index: The index it trains on (an opened `corpus.Index`, or one just built).

    Returns:
        Notes on allowed changes (learning rate, epochs, limits, the corpus, ...), for the user.

    Raises:
        TextgenError: the saved run is incompatible with `cfg` or with the index.
    """
    saved = run.load_config()
    for section, key in _SHAPE_KEYS:
        old, new = getattr(getattr(saved, section), key), getattr(getattr(cfg, section), key)
        if old != new:
            raise TextgenError(
                f"cannot resume: {section}.{key} changed from {old!r} to {new!r}; {_START_OVER}",
                str(run.path),
            )
    previous = run.load_tokenizer()
    if not same_vocabulary(previous, index.tokenizer):
        raise TextgenError(
            f"cannot resume: the corpus vocabulary changed since this run started "
            f"({previous.vocab_size} -> {index.tokenizer.vocab_size} tokens); {_START_OVER}",
            str(run.path),
        )
    notes = []
    old_dict, new_dict = saved.to_dict(), cfg.to_dict()
    for section, values in new_dict.items():
        for key, value in values.items():
            if key != "fresh" and old_dict[section].get(key) != value:
                notes.append(f"{section}.{key}: {old_dict[section].get(key)!r} -> {value!r}")
    corpus = run.load_corpus_record()
    change = corpus_change(corpus, index.meta) if corpus else None
    return [*notes, change] if change else notes


def resume_guard(run: RunDir, cfg: Config) -> Callable[[Any], None] | None:
    """The check a newly built index must pass before it replaces the old one.

    Returns:
        None when the run will not resume (no checkpoints, or `train.fresh`); else a function
        that raises `check_resumable`'s TextgenError for an index the run cannot resume on.
    """
    if cfg.train.fresh or not run.checkpoint_prefixes():
        return None

    def check(index: Any) -> None:
        check_resumable(run, cfg, index)

    return check


def corpus_change(saved: dict[str, Any], meta: dict[str, Any]) -> str | None:
    """A note on how the corpus changed since the run's last start, or None if it did not.

    Args:
        saved: The run's corpus record (`RunDir.load_corpus_record`).
        meta: The index's meta.json.
    """
    old = {s["path"]: s.get("sha256") for s in saved.get("sources", [])}
    new = {s["path"]: s.get("sha256") for s in meta.get("sources", [])}
    if old == new:
        return None
    groups = {
        "added": [p for p in new if p not in old],
        "removed": [p for p in old if p not in new],
        "changed": [p for p in new if p in old and old[p] != new[p]],
    }
    what = "; ".join(f"{kind}: {_names(paths)}" for kind, paths in groups.items() if paths)
    before, after = saved.get("counts", {}).get("tokens", 0), meta["counts"]["tokens"]
    return (
        f"corpus: {len(old)} file(s), {before:,} tokens -> {len(new)} file(s), {after:,} tokens "
        f"({what}); the window order differs from here on"
    )


def _names(paths: list[str]) -> str:
    shown = ", ".join(Path(p).name for p in paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
