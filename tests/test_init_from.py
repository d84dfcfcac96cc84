"""Fine-tuning (`train.init_from`): the vocabulary merge, step-0 predictions, exact resume, the
origin record, a fine-tuned run as a source, and bad sources refused with the source untouched."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, assert_one_line_error, run_cli, write_corpus

from textgen.core.config import Config, load_config
from textgen.core.dirlock import run_dir_lock
from textgen.core.errors import TextgenError
from textgen.data.corpus import index_corpus
from textgen.model.build import build_model
from textgen.run.rundir import RunDir
from textgen.training.init_from import NEW_TOKEN_BIAS, fine_tuning_plan, start_from
from textgen.training.trainer import train

TINY = REPO_ROOT / "configs" / "tiny.yaml"
SOURCE_TEXT = "the quick brown fox jumps over the lazy dog.\n" * 300
# New characters the source never saw: 'é' and 'Z' (and '!'), often enough to be learned.
NEW_TEXT = "Zoé the lazy fox. Zut! the dog jumps over Zoé.\n" * 200


def tiny(root: Path, corpus: Path, out: str, *overrides: str) -> Config:
    """configs/tiny.yaml on `corpus`, with its own index dir and run dir under `root`."""
    return load_config(TINY, [f"data.path={corpus}", f"data.index_dir={root / ('index-' + out)}",
                              f"train.out_dir={root / out}", "sample.epoch_temperatures=[]",
                              *overrides])  # fmt: skip


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A run trained 40 steps on SOURCE_TEXT (tiny.yaml: 1 x 32 units)."""
    root = tmp_path_factory.mktemp("source")
    corpus = write_corpus(root, SOURCE_TEXT)
    train(tiny(root, corpus, "run", "train.max_steps=40"))
    return root / "run"


def snapshot(run_dir: Path) -> dict[str, tuple[int, str]]:
    """Every file under a run dir: its mtime (ns) and content hash."""
    return {
        str(p.relative_to(run_dir)): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def test_step0_predictions_over_known_chars_equal_the_sources(source, tmp_path):
    corpus = write_corpus(tmp_path, NEW_TEXT)
    cfg = tiny(tmp_path, corpus, "ft", f"train.init_from={source}")
    cfg, src, base = fine_tuning_plan(cfg, RunDir(cfg.train.out_dir))
    index, _ = index_corpus(cfg.data, min_split_tokens=33, base=base)
    merged = index.tokenizer
    assert set(src.tokenizer.chars) < set(merged.chars)
    assert {"Z", "é", "!"} <= set(merged.chars) - set(src.tokenizer.chars)
    model = build_model(cfg.model, merged.vocab_size)
    origin, event = start_from(src, model, merged)
    assert sorted(event["new_tokens"]) == sorted(set(merged.chars) - set(src.tokenizer.chars))
    assert origin.run_dir == str(source) and origin.checkpoint.endswith("model.keras")

    source_model = RunDir(source).load_model()
    text = "the lazy dog jumps over the quick brown fox."
    old = _probabilities(source_model, src.tokenizer.encode(text))  # (time, source_vocab)
    new = _probabilities(model, merged.encode(text))  # (time, vocab)
    known = np.concatenate([[0], merged.encode(src.tokenizer.chars)])  # new id of each source id
    np.testing.assert_allclose(new[:, known] / old, 1.0, atol=1e-5)
    assert new[:, known].sum(axis=1) == pytest.approx(1.0, abs=1e-9)  # the new ones: ~0
    bias = model.get_layer("logits").get_weights()[1]
    assert bias[merged.encode("Zé")].tolist() == [NEW_TOKEN_BIAS] * 2


def _probabilities(model, ids: np.ndarray) -> np.ndarray:
    """Softmax of the model's logits for one sequence, float64."""
    logits = np.asarray(model(ids[None, :]), np.float64)[0]  # (time, vocab)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_a_fine_tuned_run_learns_a_new_char_records_its_origin_and_leaves_the_source(
    source, tmp_path
):
    before = snapshot(source)
    corpus = write_corpus(tmp_path, NEW_TEXT)
    words = [f"data.path={corpus}", "sample.epoch_temperatures=[]", "train.epochs=10"]
    proc = run_cli("textgen.train", TINY, *words, f"data.index_dir={tmp_path / 'i'}",
                   f"train.out_dir={tmp_path / 'ft'}", f"train.init_from={source}",
                   "train.learning_rate=0.02", timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "fine-tuning from" in proc.stdout and "new:" in proc.stdout
    assert snapshot(source) == before  # nothing in the source was written, not even touched

    saved = RunDir(tmp_path / "ft").load_config()
    assert saved.origin.run_dir == str(source)
    assert saved.origin.checkpoint == str(source / "model.keras")
    assert saved.origin.weights and len(saved.origin.weights) == 16
    first = json.loads((tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["origin"] == {"run_dir": str(source), "checkpoint": saved.origin.checkpoint,
                               "weights": saved.origin.weights}  # fmt: skip
    sample = run_cli("textgen.sample", tmp_path / "ft", "--length", "400", "--seed", "1")
    assert sample.returncode == 0, sample.stderr
    assert "Z" in sample.stdout  # a character the source never saw is sampled

    # A fine-tuned run is itself a source.
    again = run_cli("textgen.train", TINY, *words, f"data.index_dir={tmp_path / 'j'}",
                    f"train.out_dir={tmp_path / 'ft2'}", f"train.init_from={tmp_path / 'ft'}",
                    "train.max_steps=10", timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "new:" not in again.stdout  # nothing new: the merged vocabulary had it all
    assert RunDir(tmp_path / "ft2").load_config().origin.run_dir == str(tmp_path / "ft")


def test_a_fine_tuned_run_resumes_exactly(source, tmp_path):
    corpus = write_corpus(tmp_path, NEW_TEXT)
    common = [f"train.init_from={source}", "train.deterministic=true", "model.dropout=0.2",
              "train.epochs=5", "train.steps_per_epoch=12"]  # fmt: skip
    once = tiny(tmp_path, corpus, "once", *common, "train.max_steps=30")
    fingerprints = []
    result = train(once, on_event=lambda kind, **d: fingerprints.append(d.get("weights")))
    assert result.step == 30
    twice = [tiny(tmp_path, corpus, "twice", *common, f"train.max_steps={n}") for n in (15, 30)]
    train(twice[0])
    shutil.rmtree(tmp_path / "index-twice")  # a resume needs neither the old index ...
    moved = source.parent / "moved"
    source.rename(moved)  # ... nor the source
    try:
        events = []
        second = train(twice[1], on_event=lambda kind, **d: events.append((kind, d)))
    finally:
        moved.rename(source)
    assert second.step == 30
    assert next(d for k, d in events if k == "resume")["step"] == 15
    assert not [k for k, _ in events if k == "init"]  # weights come from its own checkpoint
    assert next(d for k, d in events if k == "stop")["weights"] == fingerprints[-1]
    assert RunDir(tmp_path / "twice").load_config().origin.run_dir == str(source)


def test_dropout_auto_is_said_saved_and_kept_on_resume(source, tmp_path):
    corpus = write_corpus(tmp_path, NEW_TEXT)  # ~263 windows of 32 tokens per pass
    auto = [f"train.init_from={source}", "model.dropout=auto", "train.epochs=10"]
    events: list = []
    train(tiny(tmp_path, corpus, "many", *auto, "train.max_steps=110"),
          on_event=lambda kind, **d: events.append((kind, d)))  # fmt: skip
    [said] = [d for kind, d in events if kind == "dropout"]
    assert said["value"] == 0.25 and "times, >= 6" in said["reason"]
    assert RunDir(tmp_path / "many").load_config().model.dropout == 0.25
    train(tiny(tmp_path, corpus, "few", *auto, "train.max_steps=20"))  # ~1.2 passes: 0
    events.clear()
    resumed = train(tiny(tmp_path, corpus, "few", *auto, "train.max_steps=70"),
                    on_event=lambda kind, **d: events.append((kind, d)))  # fmt: skip
    assert resumed.step == 70
    assert [d for kind, d in events if kind == "dropout"] == [
        {"value": 0.0, "reason": "as this run started"}
    ]
    assert RunDir(tmp_path / "few").load_config().model.dropout == 0.0


def test_the_model_shape_comes_from_the_source(source, tmp_path):
    corpus = write_corpus(tmp_path, NEW_TEXT)
    # A config file's model section gives way to the source's (tiny: 1 x 32, embedding 16).
    cfg = tiny(tmp_path, corpus, "ft", f"train.init_from={source}", "model.dropout=0.1")
    source_residual = RunDir(source).load_config().model.residual
    asked = cfg.model.__class__(units=64, residual=not source_residual)
    shaped, _, _ = fine_tuning_plan(cfg.replace(model=asked), RunDir(cfg.train.out_dir))
    assert (shaped.model.units, shaped.model.layers, shaped.model.embedding_dim) == (32, 1, 16)
    assert shaped.model.residual == source_residual  # the function, not only weight shapes
    # On the command line, a different model.* is an error naming the key; dropout is fine.
    proc = run_cli(
        "textgen.train",
        TINY,
        f"data.path={corpus}",
        f"train.init_from={source}",
        f"train.out_dir={tmp_path / 'x'}",
        "model.units=64",
        "model.dropout=0.3",
    )
    assert_one_line_error(proc, "model.units=64", "source run's 32")
    assert not (tmp_path / "x").exists()


def _damage(run: Path) -> None:
    """Truncates every checkpoint's data and removes model.keras: nothing restores."""
    (run / "model.keras").unlink()
    for data in (run / "checkpoints").glob("*.data-*"):
        data.write_bytes(data.read_bytes()[:100])


@pytest.mark.parametrize("case", ["missing", "not-a-run", "damaged", "locked", "tokenizer"])
def test_a_bad_source_is_one_line_and_is_not_written(source, tmp_path, case):
    corpus = write_corpus(tmp_path, NEW_TEXT)
    src = tmp_path / "src"
    shutil.copytree(source, src)
    words = [f"data.path={corpus}", f"data.index_dir={tmp_path / 'i'}",
             f"train.out_dir={tmp_path / 'ft'}"]  # fmt: skip
    expected = {"missing": "run dir not found", "not-a-run": "not a run dir",
                "damaged": "checkpoints restores", "locked": "is being trained by process",
                "tokenizer": "is 'char' but data.tokenizer is 'sentencepiece'"}  # fmt: skip
    init = {"missing": tmp_path / "nope", "not-a-run": tmp_path}.get(case, src)
    if case == "damaged":
        _damage(src)
    if case == "tokenizer":
        words.append("data.tokenizer=sentencepiece")
    lock = run_dir_lock(src).acquire() if case == "locked" else None  # a trainer holds it
    before = snapshot(src)
    try:
        proc = run_cli("textgen.train", TINY, *words, f"train.init_from={init}", timeout=300)
    finally:
        if lock:
            lock.release()
    assert_one_line_error(proc, "train.init_from", expected[case])
    if case != "locked":  # (the lock file itself is the holder's)
        assert snapshot(src) == before


def test_index_extends_a_base_tokenizer_and_rebuilds_when_it_changes(tmp_path):
    from textgen.data.tokenizers import CharTokenizer

    corpus = write_corpus(tmp_path, "abc abc abc\n" * 50)
    cfg = load_config(TINY, [f"data.path={corpus}", f"data.index_dir={tmp_path / 'i'}"])
    index, built = index_corpus(cfg.data, base=CharTokenizer("xyz"))
    assert built and index.tokenizer.chars == "\n abcxyz"
    _, built = index_corpus(cfg.data, base=CharTokenizer("xyz"))
    assert not built
    other, built = index_corpus(cfg.data, base=CharTokenizer("q"))
    assert built and other.tokenizer.chars == "\n abcq"
    with pytest.raises(TextgenError):  # a run dir is not a source when it is the run itself
        fine_tuning_plan(
            load_config(TINY, [f"train.init_from={tmp_path}", f"train.out_dir={tmp_path}"]),
            RunDir(tmp_path / "elsewhere"),
        )


@pytest.mark.parametrize("module", ["sample", "evaluate", "export", "serve"])
def test_the_best_checkpoint_is_the_default_and_help_says_so(module):
    proc = run_cli(f"textgen.{module}", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "best (the default: model.keras, the lowest val loss" in " ".join(proc.stdout.split())


def test_a_sentencepiece_source_keeps_its_pieces(tmp_path, sp_lines, sp_tokenizer):
    from run_fixtures import make_run

    from textgen.data.tokenizers import same_vocabulary

    src = make_run(tmp_path / "sp", "\n".join(sp_lines[:300]), tokenizer=sp_tokenizer, steps=5)
    corpus = write_corpus(tmp_path, "Ünïcode the source never saw: 東京 ✓\n" * 200)
    cfg = tiny(tmp_path, corpus, "ft", f"train.init_from={src}", "data.tokenizer=sentencepiece")
    cfg, source, base = fine_tuning_plan(cfg, RunDir(cfg.train.out_dir))
    index, _ = index_corpus(cfg.data, min_split_tokens=33, base=base)
    assert same_vocabulary(index.tokenizer, source.tokenizer)
    assert 0 not in np.asarray(index.train)  # byte fallback: nothing is unknown
    model = build_model(cfg.model, index.vocab_size)
    _, event = start_from(source, model, index.tokenizer)
    assert event["new_tokens"] == []
    ids = np.asarray(index.train)[:50]
    np.testing.assert_allclose(
        np.asarray(model(ids[None])), np.asarray(RunDir(src).load_model()(ids[None])), atol=1e-6
    )
