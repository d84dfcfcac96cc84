"""`textgen.evaluate`: bpc against hand computations (windowed, streamed), the methods, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, synthetic_text
from run_fixtures import make_run, remove_checkpoints

from textgen import cli
from textgen.core.errors import TextgenError
from textgen.data.tokenfile import TokenFile
from textgen.evaluate import evaluate, main
from textgen.run.rundir import RunDir


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run with maxlen 3 and an index (val split) of varied text."""
    text = synthetic_text(lines=120, seed=5)
    return make_run(tmp_path_factory.mktemp("eval") / "run", text, maxlen=3, steps=30, index=True)


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def hand_bpc(run: Path, text: str, maxlen: int) -> tuple[float, int]:
    """Nats summed by hand: char t (t >= 1) is predicted from its window's chars before it."""
    model, tokenizer = RunDir(run).load_model(), RunDir(run).load_tokenizer()
    ids = tokenizer.encode(text)
    nats = 0.0
    for t in range(1, len(ids)):
        window_start = (t - 1) // maxlen * maxlen  # windows of maxlen inputs, back to back
        logits = np.array(model(ids[None, window_start:t]), np.float64)[0, -1]  # (vocab,)
        log_probs = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        nats -= log_probs[ids[t]]
    return nats / (len(ids) - 1) / math.log(2), len(ids) - 1


def test_windowed_bpc_equals_a_hand_computation(run: Path, tmp_path: Path) -> None:
    text = "Cabé東"  # 5 chars, 4 predictions: one full window of 3, then a tail of 1
    expected, predictions = hand_bpc(run, text, maxlen=3)
    result = evaluate(run, write(tmp_path / "t.txt", text), method="windowed")
    assert result["method"] == "windowed" and "streams" not in result
    assert result["bpc"] == pytest.approx(expected, rel=1e-4)
    assert result["nats_per_char"] == pytest.approx(expected * math.log(2), rel=1e-4)
    assert (result["tokens"], result["chars"], result["unknown_chars"]) == (predictions, 4, 0)


def test_streamed_bpc_equals_one_stream_by_hand(run: Path, tmp_path: Path) -> None:
    text = "Cabé東 abc, déf.\nGhi"  # 19 chars: 18 predictions in chunks of 3 (maxlen)
    model, tokenizer = RunDir(run).load_model(), RunDir(run).load_tokenizer()
    ids = tokenizer.encode(text)
    nats = 0.0
    for t in range(1, len(ids)):  # all the text before each char is its context
        logits = np.array(model(ids[None, :t]), np.float64)[0, -1]  # (vocab,)
        nats -= logits[ids[t]] - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    result = evaluate(run, write(tmp_path / "t.txt", text), streams=1)
    assert (result["method"], result["streams"], result["segment"]) == ("streamed", 1, 3)
    assert result["tokens"] == 18
    assert result["bpc"] == pytest.approx(nats / 18 / math.log(2), rel=1e-4)


def test_three_methods_on_the_val_split(run: Path) -> None:
    model_bytes = RunDir(run).best_model.read_bytes()
    windowed, streamed = evaluate(run, method="windowed"), evaluate(run)
    dynamic = evaluate(run, method="dynamic", segment=8)
    assert windowed["tokens"] == streamed["tokens"] == dynamic["tokens"]
    assert streamed["method"] == "streamed" and streamed["streams"] > 1
    assert (dynamic["method"], dynamic["streams"], dynamic["segment"]) == ("dynamic", 1, 8)
    assert dynamic["bpc"] == dynamic["dynamic_bpc"] != dynamic["static_bpc"]
    one_stream = evaluate(run, streams=1, segment=8)  # the static score of the same layout
    assert dynamic["static_bpc"] == pytest.approx(one_stream["bpc"], rel=1e-5)
    assert RunDir(run).best_model.read_bytes() == model_bytes  # nothing written


def test_unknown_characters_are_counted(run: Path, tmp_path: Path) -> None:
    result = evaluate(run, write(tmp_path / "t.txt", "abc\u0416def\u0416"))  # Ж: not in the text
    assert result["unknown_chars"] == 2 and result["chars"] == 7
    # An unknown id stands for one character: per char and per token are the same here.
    assert result["nats_per_char"] == pytest.approx(result["nats_per_token"])


def test_val_split_equals_the_same_text_from_a_file(run: Path, tmp_path: Path) -> None:
    cfg, tokenizer = RunDir(run).load_config(), RunDir(run).load_tokenizer()
    val = TokenFile(Path(cfg.data.index_dir) / "val.npy")
    ids = val.read(np.array([0]), len(val))[0]
    from_val = evaluate(run)
    from_file = evaluate(run, write(tmp_path / "val.txt", tokenizer.decode(ids)))
    assert from_val["tokens"] == len(ids) - 1 == from_file["tokens"]
    assert from_val["streams"] == from_file["streams"] > 1
    assert from_val["bpc"] == pytest.approx(from_file["bpc"], rel=1e-5)
    assert from_val["source"].startswith("val split")


def test_latest_checkpoint_scores_like_best(run: Path) -> None:
    best, latest = evaluate(run), evaluate(run, checkpoint="latest")
    assert latest["bpc"] == pytest.approx(best["bpc"], rel=1e-6)


def test_cli_prints_one_json_object(run: Path, tmp_path: Path) -> None:
    proc = run_cli("textgen.evaluate", run, "--text", write(tmp_path / "t.txt", "Cabé東 abc"))
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    result = json.loads(line)
    assert {"bpc", "nats_per_char", "tokens", "chars", "unknown_chars", "method"} <= set(result)
    assert result["tokens"] == 8


def test_cli_in_process_on_the_val_split(run: Path, capsys) -> None:
    assert main([str(run)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bpc"] > 0 and result["checkpoint"] == "best"
    assert main([str(run), "--dynamic", "--dynamic-lr", "0.01", "--segment", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["method"], result["dynamic_lr"], result["segment"]) == ("dynamic", 0.01, 8)
    assert {"static_bpc", "dynamic_bpc", "seconds", "static_seconds"} <= set(result)


def cli_error(argv: list[str], capsys) -> str:
    """Runs the entry point as `python -m` would; returns its one stderr line (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("textgen: error: ")
    return line


def test_bad_inputs(run: Path, tmp_path: Path, capsys) -> None:
    bad = write(tmp_path / "latin1.txt", "caf\xe9".encode("latin-1"))
    assert "not UTF-8 (invalid byte at offset 3)" in cli_error(
        [str(run), "--text", str(bad)], capsys
    )
    missing = str(tmp_path / "missing.txt")
    assert "text file not found" in cli_error([str(run), "--text", missing], capsys)
    assert "run dir not found" in cli_error([str(tmp_path / "nope")], capsys)
    assert "unknown checkpoint" in cli_error([str(run), "--checkpoint", "worst"], capsys)
    assert "too short" in cli_error([str(run), "--text", str(write(tmp_path / "1", "a"))], capsys)
    assert "--batch-size" in cli_error([str(run), "--batch-size", "0"], capsys)
    for flags, message in [
        (["--dynamic", "--dynamic-lr", "0"], "--dynamic-lr must be > 0, got 0.0 (--dynamic-lr)"),
        (["--dynamic", "--dynamic-decay", "1"], "--dynamic-decay must be in [0, 1)"),
        (["--segment", "0"], "--segment must be >= 1, got 0 (--segment)"),
        (["--dynamic", "--streams", "0"], "--streams must be >= 1"),
        (["--windowed", "--dynamic"], "--windowed and --dynamic exclude each other"),
        (["--windowed", "--segment", "8"], "--segment does not apply to --windowed"),
        (["--dynamic-lr", "0.001"], "needs --dynamic (--dynamic-lr)"),
    ]:
        assert message in cli_error([str(run), *flags], capsys)
    empty = remove_checkpoints(make_run(tmp_path / "untrained", "abab\n", steps=1))
    assert "no checkpoint yet" in cli_error([str(empty)], capsys)
    with pytest.raises(TextgenError, match="not UTF-8"):
        evaluate(run, bad)


def test_bad_input_in_a_real_process_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("textgen.evaluate", tmp_path / "nope", "--text", tmp_path / "x.txt")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"textgen: error: run dir not found ({tmp_path / 'nope'})"]
