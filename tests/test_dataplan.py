"""`DataPlan`: the steps of an epoch and of a run, the targets per step, and a batch too large.

The corpus is 1,100 characters (100 lines of `abcdefghij`), split 990 train / 110 val, so every
count below can be worked out by hand.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO_ROOT, cli_env, write_corpus

from textgen.core.config import load_config
from textgen.core.errors import TextgenError
from textgen.data.corpus import index_corpus
from textgen.data.dataplan import DataPlan

TRAIN_TOKENS = 990


@pytest.fixture(scope="module")
def corpus_words(tmp_path_factory) -> list[str]:
    """Config words naming an index of the 1,100-character corpus (built once)."""
    root = tmp_path_factory.mktemp("dataplan")
    corpus = write_corpus(root, "abcdefghij\n" * 100)
    words = [f"data.path={corpus}", f"data.index_dir={root / 'idx'}", "data.val_fraction=0.1"]
    index, _ = index_corpus(load_config(None, words).data)
    assert len(index.train) == TRAIN_TOKENS
    return words


def plan(corpus_words: list[str], *words: str) -> DataPlan:
    """The data plan of maxlen 10, batch 4, 3 epochs, no step limits, and `words` on top."""
    base = ["windows.maxlen=10", "windows.step=10", "train.batch_size=4", "train.epochs=3",
            "train.steps_per_epoch=null", "train.max_steps=null"]  # fmt: skip
    cfg = load_config(None, [*corpus_words, *base, *words])
    index, built = index_corpus(cfg.data)
    assert not built  # the fixture's index is reused
    return DataPlan(cfg, index)


def test_an_epoch_is_every_full_batch_of_windows(corpus_words):
    # 11 ids per window, one every 10, the grid shifted by up to 9 per epoch:
    # (990 - 11 - 9) // 10 + 1 = 98 windows, 24 full batches of 4 (2 windows left over).
    p = plan(corpus_words)
    assert p.spec.count == 98
    assert p.steps_per_epoch == 24
    assert p.schedule_steps == p.total_steps == 3 * 24


def test_steps_per_epoch_caps_an_epoch_but_never_exceeds_the_data(corpus_words):
    assert plan(corpus_words, "train.steps_per_epoch=5").steps_per_epoch == 5
    assert plan(corpus_words, "train.steps_per_epoch=1000").steps_per_epoch == 24


def test_max_steps_limits_the_run_but_not_the_schedule(corpus_words):
    p = plan(corpus_words, "train.max_steps=30")
    assert (p.total_steps, p.schedule_steps) == (30, 72)  # the LR still decays over 72 steps
    assert plan(corpus_words, "train.max_steps=1000").total_steps == 72


def test_a_sequence_target_supervises_every_position(corpus_words):
    p = plan(corpus_words, "windows.target=sequence")
    assert (p.targets_per_step, p.targets_per_window) == (4 * 10, 10)


def test_a_next_target_supervises_one_position_per_window(corpus_words):
    # step 1: the grid has no offset, (990 - 11) // 1 + 1 = 980 windows, 245 batches of 4.
    p = plan(corpus_words, "windows.target=next", "windows.step=1")
    assert (p.targets_per_step, p.targets_per_window) == (4, 1)
    assert p.steps_per_epoch == 245


@pytest.mark.parametrize("step", [1, 3, 10])
def test_carried_state_streams_advance_by_whole_windows_whatever_the_step(corpus_words, step):
    # 4 streams of 990 // 4 = 247 ids, each starting up to 9 in: (247 - 9 - 1) // 10 = 23.
    p = plan(corpus_words, "windows.carry_state=true", f"windows.step={step}")
    assert p.steps_per_epoch == 23
    assert p.targets_per_step == 4 * 10


def test_carried_state_with_a_next_target_is_refused(corpus_words):
    with pytest.raises(TextgenError) as e:
        plan(corpus_words, "windows.carry_state=true", "windows.target=next")
    assert e.value.where == "windows.carry_state"
    assert "windows.target=sequence" in e.value.what


def test_the_characters_per_token_of_a_char_index_is_one(corpus_words):
    assert plan(corpus_words).chars_per_token == 1.0


@pytest.mark.parametrize(
    ("words", "what"),
    [
        (["train.batch_size=99"], "train.batch_size 99 is larger than the 98 training windows"),
        (
            ["train.batch_size=100", "windows.carry_state=true"],
            "train.batch_size 100 is too large: the train split cannot hold 100 streams of 11 ids",
        ),
    ],
)
def test_a_batch_larger_than_the_split_is_one_line(corpus_words, words, what):
    with pytest.raises(TextgenError) as e:
        plan(corpus_words, *words)
    line = e.value.line()
    assert line.startswith(what) and line.endswith("(train.batch_size)")
    assert "lower train.batch_size" in line and "\n" not in line


def test_a_batch_too_large_fails_before_tensorflow_is_loaded(corpus_words):
    # In a fresh process: the error must not wait for TensorFlow's start-up.
    code = (
        "import sys\n"
        "from textgen.core.config import load_config\n"
        "from textgen.core.errors import TextgenError\n"
        "from textgen.data.corpus import index_corpus\n"
        "from textgen.data.dataplan import DataPlan\n"
        f"cfg = load_config(None, {corpus_words!r} + ['train.batch_size=500'])\n"
        "try:\n"
        "    DataPlan(cfg, index_corpus(cfg.data)[0])\n"
        "except TextgenError as e:\n"
        "    print(e.where, 'tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.stdout == "train.batch_size False\n", proc.stderr
