"""Shared fixtures: tiny synthetic corpora in tmp_path, configs, and a CLI runner."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def cli_env() -> dict[str, str]:
    """The environment for a textgen subprocess: quiet TensorFlow, the repo importable."""
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_cli(
    module: str, *args: Any, cwd: str | Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs `python -m module args...` and returns the finished process (text stdout/stderr).

    Args:
        module: e.g. "textgen.index" or "textgen".
        args: Command-line words (paths are converted with str()).
        cwd: Working directory; the repository root by default.
        timeout: Seconds before the run counts as hung.
    """
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=str(cwd or REPO_ROOT),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_corpus(directory: Path, text: str | bytes, name: str = "corpus.txt") -> Path:
    """Writes one corpus file (text as UTF-8, no newline translation; bytes as they are).

    Args:
        directory: Where to write it (created if needed; `name` may hold subdirectories).
        text: The file's content.
        name: The file name relative to `directory`.
    """
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def write_config(directory: Path, data: Mapping[str, Any], name: str = "config.yaml") -> Path:
    """Writes a YAML config file made of `data` (nested sections) and returns its path."""
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")
    return path


def synthetic_text(lines: int = 400, seed: int = 0) -> str:
    """Deterministic, varied text: random words, punctuation, accents, CJK and an emoji."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 9))) for _ in range(400)]
    words += ["café", "naïve", "Zürich", "東京", "😀", "É"]
    out = []
    for _ in range(lines):
        line = " ".join(rng.choice(words) for _ in range(rng.randint(2, 12)))
        out.append(line.capitalize() + rng.choice([".", ",", "!", "?", ";", ""]))
    return "\n".join(out) + "\n"


@pytest.fixture(scope="session")
def sp_lines() -> list[str]:
    """A few thousand synthetic lines, varied enough for a 400-piece sentencepiece model."""
    return synthetic_text(lines=3000, seed=1).splitlines()


@pytest.fixture(scope="session")
def sp_tokenizer(sp_lines: list[str]):
    """A sentencepiece tokenizer (unigram, 400 pieces) trained once per test worker."""
    from textgen.data.tokenizers import SentencePieceTokenizer

    return SentencePieceTokenizer.train(sp_lines, vocab_size=400)


@pytest.fixture(scope="session")
def foreign_sp_tokenizer(sp_lines: list[str]):
    """A sentencepiece model with sentencepiece's defaults (nmt_nfkc rules, a dummy prefix),
    which textgen never trains and cannot export."""
    import io

    import sentencepiece as spm

    from textgen.data.tokenizers import SentencePieceTokenizer

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sp_lines), model_writer=buffer, vocab_size=300, minloglevel=2
    )
    return SentencePieceTokenizer(buffer.getvalue())


def assert_one_line_error(
    proc: subprocess.CompletedProcess[str], *fragments: str, empty_stdout: bool = False
) -> str:
    """Exit 2 and exactly one `textgen: error:` line on stderr (with `fragments`), no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("textgen: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    if empty_stdout:
        assert proc.stdout == ""
    return lines[0]


# --- export and serve: one small char run, its export and a server per test worker ---
SERVE_TEXT_SEED = 3


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """A briefly trained char run (1 x 32 units) on varied text."""
    from run_fixtures import make_run

    text = synthetic_text(lines=200, seed=SERVE_TEXT_SEED)
    return make_run(tmp_path_factory.mktemp("serve") / "run", text, steps=30)


@pytest.fixture(scope="session")
def small_export(small_run: Path, tmp_path_factory) -> Path:
    """`small_run` exported as a SavedModel."""
    from textgen.serving.export import export

    return export(small_run, tmp_path_factory.mktemp("export") / "model")


@pytest.fixture(scope="session")
def sp_run(tmp_path_factory, sp_tokenizer) -> Path:
    """A briefly trained sentencepiece run (unigram, 400 pieces, 1 x 32 units)."""
    from run_fixtures import make_run

    text = synthetic_text(lines=200, seed=SERVE_TEXT_SEED)
    return make_run(tmp_path_factory.mktemp("sp") / "run", text, tokenizer=sp_tokenizer, steps=30)


@pytest.fixture(scope="session")
def sp_export(sp_run: Path, tmp_path_factory) -> Path:
    """`sp_run` exported as a SavedModel."""
    from textgen.serving.export import export

    return export(sp_run, tmp_path_factory.mktemp("sp_export") / "model")


NAMES = "\n".join(["Ada", "Bert", "Cleo", "Dara", "Emil", "Faye", "Gus", "Hana"] * 40) + "\n"


@pytest.fixture(scope="session")
def docs_run(tmp_path_factory) -> Path:
    """A lines run on a short list of names (an end-of-text id; its index beside it, at
    `run-index`)."""
    from run_fixtures import make_run

    path = tmp_path_factory.mktemp("docs") / "run"
    return make_run(path, NAMES, index=True, steps=200, overrides=("data.documents=lines",))


@pytest.fixture(scope="session")
def docs_export(docs_run: Path, tmp_path_factory) -> Path:
    """`docs_run` exported as a SavedModel."""
    from textgen.serving.export import export

    return export(docs_run, tmp_path_factory.mktemp("docs_export") / "model")


@contextlib.contextmanager
def start_server(model: Path, *flags: str):
    """`python -m textgen.serve MODEL --port 0 [FLAGS]` in a subprocess; (base URL, process)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "textgen.serve", str(model), "--port", "0",
         "--max-length", "1000000", "--max-samples", "4", *flags],
        cwd=str(REPO_ROOT), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        proc.kill()
        pytest.fail(f"the server did not start: {line}{proc.stderr.read()}")
    url = line.split(" on ")[1].split()[0].rstrip("/")
    try:
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="session")
def server(small_export: Path):
    """The char export served; yields (base URL, process)."""
    with start_server(small_export) as running:
        yield running


def tiny_lstm_model(vocab: int, *, seed: int):
    """An untrained 2 x 8 LSTM model (embedding 4): both layers' states must be carried."""
    import keras

    from textgen.core.config import load_config
    from textgen.model.build import build_model

    cfg = load_config(None, ["model.units=8", "model.layers=2", "model.embedding_dim=4"])
    keras.utils.set_random_seed(seed)
    return build_model(cfg.model, vocab)
