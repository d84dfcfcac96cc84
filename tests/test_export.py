"""`textgen.export`: the SavedModel's generate signature, without textgen, with TF's own tools."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, cli_env, run_cli, synthetic_text
from run_fixtures import make_run

from textgen.generation.generate import Generator

# Loads the export with TensorFlow alone: importing textgen fails in this process.
NO_TEXTGEN = """
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "textgen":
            raise ImportError("textgen must not be needed")
sys.meta_path.insert(0, Block())
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](
    prompt=tf.constant(["Café ", "", "東京"]), length=tf.constant([40, 12, 25]),
    temperature=tf.constant([0.0, 1.0, 0.7]), top_k=tf.constant([0, 0, 5]),
    top_p=tf.constant([1.0, 1.0, 0.9]), seed=tf.constant([1, 2, -3], tf.int64),
    stop=tf.constant([[""], [""], [""]]), stop_at_end=tf.constant([True, True, True]))
assert not any(m.split(".")[0] == "textgen" for m in sys.modules)
print(json.dumps({"text": [t.decode() for t in out["text"].numpy()],
                  "tokens": out["tokens"].numpy().tolist(),
                  "stopped": [t.decode() for t in out["stopped"].numpy()]}))
"""
FRESH_ARGS = (["Café ", "", "東京"], [40, 12, 25], [0.0, 1.0, 0.7], [0, 0, 5], [1.0, 1.0, 0.9],
              [1, 2, -3])  # fmt: skip


def fresh_process_call(export_dir: Path) -> dict:
    """NO_TEXTGEN's result: {text, tokens} for FRESH_ARGS, from a process without textgen."""
    env = {k: v for k, v in cli_env().items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", NO_TEXTGEN, str(export_dir)],
        cwd=str(export_dir.parent), env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def call(model, prompts, lengths, temperature=1.0, top_k=0, top_p=1.0, seeds=None) -> list[str]:
    """The export's serving_default on a batch, no stop strings; scalars apply to every row."""
    out = call_all(model, prompts, lengths, temperature, top_k, top_p, seeds)
    assert out["tokens"] == list(lengths) and out["stopped"] == ["length"] * len(prompts)
    return out["text"]


def call_all(
    model, prompts, lengths, temperature=1.0, top_k=0, top_p=1.0, seeds=None, *, stop=None,
    stop_at_end=True,
) -> dict:  # fmt: skip
    """The export's serving_default on a batch: {text, tokens, stopped} as Python lists.

    `stop`: one list of stop strings per row (padded with "" here); scalars apply to every row.
    """
    import tensorflow as tf

    rows = len(prompts)
    stop = stop or [[] for _ in range(rows)]
    width = max(1, *(len(s) for s in stop))
    out = model.signatures["serving_default"](
        prompt=tf.constant(prompts),
        length=tf.constant(lengths, tf.int32),
        temperature=tf.constant(np.broadcast_to(temperature, rows), tf.float32),
        top_k=tf.constant(np.broadcast_to(top_k, rows), tf.int32),
        top_p=tf.constant(np.broadcast_to(top_p, rows), tf.float32),
        seed=tf.constant(seeds if seeds is not None else list(range(rows)), tf.int64),
        stop=tf.constant([list(s) + [""] * (width - len(s)) for s in stop], tf.string),
        stop_at_end=tf.constant(np.broadcast_to(stop_at_end, rows), tf.bool),
    )
    return {
        "text": [t.decode("utf-8") for t in out["text"].numpy()],
        "tokens": out["tokens"].numpy().tolist(),
        "stopped": [t.decode() for t in out["stopped"].numpy()],
    }


@pytest.fixture(scope="module")
def loaded(small_export: Path):
    import tensorflow as tf

    return tf.saved_model.load(str(small_export))


@pytest.fixture(scope="module")
def generator(small_run: Path) -> Generator:
    return Generator.from_run(small_run)


@pytest.fixture(scope="module")
def docs_generator(docs_run: Path) -> Generator:
    return Generator.from_run(docs_run)


def test_reloads_in_a_fresh_process_without_textgen(small_export: Path, loaded) -> None:
    result = fresh_process_call(small_export)
    assert result["tokens"] == [40, 12, 25] and result["stopped"] == ["length"] * 3
    assert [len(t) for t in result["text"]] == [40, 12, 25]
    assert result["text"] == call(loaded, *FRESH_ARGS)  # same seed and inputs, same text


def test_greedy_text_equals_the_generators(loaded, generator: Generator) -> None:
    prompts = ["Café au ", "", "x" * 300]  # the last is longer than a block
    texts = call(loaded, prompts, [60, 30, 20], temperature=0.0)
    for prompt, text, length in zip(prompts, texts, [60, 30, 20], strict=True):
        assert generator.generate(prompt, length, temperature=0.0) == [text]


def test_a_seed_draws_the_generators_text_whatever_the_batch(loaded, generator) -> None:
    alone = call(loaded, ["The "], [80], temperature=0.9, top_p=0.95, seeds=[5])
    assert alone == generator.generate("The ", 80, temperature=0.9, top_p=0.95, seed=5)
    assert alone == call(loaded, ["The "], [80], temperature=0.9, top_p=0.95, seeds=[5])
    mixed = call(
        loaded, ["a", "The ", ""], [10, 80, 300], [0.0, 0.9, 1.3], [0, 0, 3],
        [1.0, 0.95, 1.0], [9, 5, 7],
    )  # fmt: skip
    assert mixed[1] == alone[0]  # the other rows' settings do not change a row's text
    assert call(loaded, ["The "], [80], temperature=0.9, top_p=0.95, seeds=[6]) != alone


def test_stops_give_the_generators_samples(docs_export: Path, docs_generator) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(docs_export))
    rows = [  # prompt, length, temperature, seed, stop strings, stop at end
        ("", 60, 1.0, 1, [], True),  # one name, then end-of-text
        ("", 60, 1.0, 2, [], False),  # names on, end-of-text read as "\n"
        ("Da", 60, 0.0, 0, ["a"], True),  # a stop string before the end
        ("", 400, 1.0, 4, ["Hana\nAda"], False),  # across tokens, and past a block
        ("", 300, 0.9, 5, ["Gus", "Gu", "G"], False),  # several at one place: the shortest
        ("Be", 2, 0.0, 6, ["zz"], True),  # the length cap
        ("", 0, 1.0, 7, ["a"], True),  # nothing asked
        ("", 50, 1.0, 8, ["Q" * 64] * 8, False),  # the most stop strings, never written
    ]
    got = call_all(
        loaded, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
        seeds=[r[3] for r in rows], stop=[r[4] for r in rows], stop_at_end=[r[5] for r in rows],
    )  # fmt: skip
    expected = [
        docs_generator.samples(prompt, length, temperature=t, seed=seed, stop=stop,
                               stop_at_end=at_end)[0] if length else None
        for prompt, length, t, seed, stop, at_end in rows
    ]  # fmt: skip
    for i, sample in enumerate(expected):
        want = (sample.text, sample.tokens, sample.stopped) if sample else ("", 0, "length")
        assert (got["text"][i], got["tokens"][i], got["stopped"][i]) == want, rows[i]
    assert got["stopped"][:6] == ["end", "length", "stop", "stop", "stop", "length"]
    assert "\n" not in got["text"][0] and got["text"][1].count("\n") >= 3
    assert got["tokens"][2] == len(got["text"][2]) + 1  # the stop string's token counted


def test_the_graph_rejects_bad_stop_inputs(docs_export: Path) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(docs_export))
    for stop, message in [
        ([["a"] * 9], "at most 8 stop strings per row"),
        ([["x" * 65]], "a stop string must be at most 64 characters"),
        ([["a"], ["b"]], "stop must have one row per prompt"),
    ]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
            loaded.signatures["serving_default"](
                prompt=tf.constant(["A"]), length=tf.constant([5]), temperature=tf.constant([1.0]),
                top_k=tf.constant([0]), top_p=tf.constant([1.0]), seed=tf.constant([1], tf.int64),
                stop=tf.constant(stop), stop_at_end=tf.constant([True]),
            )  # fmt: skip
    padded = call_all(loaded, ["A"], [5], stop=[["é" * 64, "", "", "", "", "", "", "", ""]])
    assert padded["stopped"][0] in ("end", "length")  # 9 columns, 1 string: "" is padding


def test_the_graph_rejects_bad_inputs(loaded) -> None:
    import tensorflow as tf

    for kwargs, message in [
        ({"lengths": [-1]}, "length must be >= 0"),
        ({"temperature": -0.5}, "temperature must be >= 0"),
        ({"top_p": 0.0}, "top_p must be in"),
        ({"top_k": -2}, "top_k must be >= 0"),
    ]:
        args = {"prompts": ["ab"], "lengths": [5], **kwargs}
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call(loaded, args.pop("prompts"), args.pop("lengths"), **args)


def test_saved_model_cli_show_and_run(small_export: Path) -> None:
    cli = Path(sys.executable).with_name("saved_model_cli")
    show = subprocess.run(
        [cli, "show", "--dir", small_export, "--all"],
        env=cli_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert show.returncode == 0, show.stderr[-2000:]
    names = ("prompt", "length", "temperature", "top_k", "top_p", "seed", "stop", "stop_at_end")
    for name in (*names, "text", "tokens", "stopped"):
        assert f"['{name}']" in show.stdout
    out = saved_model_cli_run(small_export)
    assert "Result for output key text" in out and "[30  8]" in out


def test_saved_model_cli_run_with_a_stop_string(docs_export: Path, docs_generator) -> None:
    exprs = (
        "prompt=['', 'Ad'];length=[300, 300];temperature=[1.0, 0.0];top_k=[0, 0];"
        "top_p=[1.0, 1.0];seed=[3, 1];stop=[['Gus', ''], ['Em', 'Fa']];stop_at_end=[False, False]"
    )
    out = saved_model_cli_run(docs_export, exprs)
    asked = [("", 1.0, 3, ["Gus"]), ("Ad", 0.0, 1, ["Em", "Fa"])]
    wanted = [
        docs_generator.samples(p, 300, temperature=t, seed=s, stop=stop, stop_at_end=False)[0]
        for p, t, s, stop in asked
    ]
    assert all(w.stopped == "stop" for w in wanted)  # the list repeats: both stops come
    results = cli_results(out)
    assert results["stopped"] == "[b'stop' b'stop']"
    assert results["tokens"].strip("[]").split() == [str(w.tokens) for w in wanted]
    for sample in wanted:  # each text, cut before its stop string, as numpy prints it
        assert repr(sample.text.encode()) in results["text"]
    assert "Gus" not in wanted[0].text


def cli_results(out: str) -> dict[str, str]:
    """`saved_model_cli run`'s printed outputs: key -> the array as printed."""
    parts = out.split("Result for output key ")[1:]
    return {p.split(":", 1)[0]: p.split(":", 1)[1].strip() for p in parts}


def test_export_cli(small_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    proc = run_cli("textgen", "export", small_run, out, "--checkpoint", "latest", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "serving_default" in proc.stdout and (out / "saved_model.pb").is_file()
    assert_one_line_error(run_cli("textgen.export", small_run, out), "output dir exists")
    assert not list(tmp_path.glob(".model.*"))  # nothing half-written left behind


def test_export_cli_bad_input(small_run: Path, tmp_path: Path, foreign_sp_tokenizer) -> None:
    assert_one_line_error(run_cli("textgen.export", tmp_path / "nope", tmp_path / "o"), "not found")
    assert_one_line_error(
        run_cli("textgen.export", small_run, tmp_path / "o", "--checkpoint", "bestest"),
        "unknown checkpoint",
    )
    text = synthetic_text(lines=60, seed=4)
    foreign = make_run(tmp_path / "foreign", text, tokenizer=foreign_sp_tokenizer, steps=1)
    assert_one_line_error(run_cli("textgen.export", foreign, tmp_path / "o"), "cannot be exported")
    assert not (tmp_path / "o").exists()


def saved_model_cli_run(export_dir: Path, exprs: str | None = None) -> str:
    """`saved_model_cli run` on two requests (`exprs`, or a default pair); returns its stdout."""
    exprs = exprs or (  # Python literals; each is cast to its input's dtype
        "prompt=['The ', ''];length=[30, 8];temperature=[0.0, 1.0];top_k=[0, 0];"
        "top_p=[1.0, 1.0];seed=[1, 2];stop=[[''], ['']];stop_at_end=[True, True]"
    )
    cli = Path(sys.executable).with_name("saved_model_cli")
    run = subprocess.run(
        [cli, "run", "--dir", export_dir, "--tag_set", "serve",
         "--signature_def", "serving_default", "--input_exprs", exprs],
        env=cli_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_a_sentencepiece_run_exports_with_its_tokenizer_in_the_graph(sp_run, sp_export) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(sp_export))
    generator = Generator.from_run(sp_run)
    prompts = ["Café au ", "", "unseen ∮ and 𝄞 ", "x" * 300]  # byte fallback; longer than a block
    texts = call(loaded, prompts, [60, 30, 20, 10], temperature=0.0)
    for prompt, text, length in zip(prompts, texts, [60, 30, 20, 10], strict=True):
        assert generator.generate(prompt, length, temperature=0.0) == [text]
    drawn = call(loaded, ["The "], [80], temperature=0.9, top_p=0.95, seeds=[5])
    assert drawn == generator.generate("The ", 80, temperature=0.9, top_p=0.95, seed=5)
    result = fresh_process_call(sp_export)  # pieces, not characters: tokens != len(text)
    assert result["tokens"] == [40, 12, 25] and result["text"] == call(loaded, *FRESH_ARGS)
    assert "Result for output key text" in saved_model_cli_run(sp_export)


def test_a_residual_runs_export_continues_as_the_keras_model_does(tmp_path: Path) -> None:
    # model.residual: the layers above the first add their input to their output. The export's
    # greedy text must be the whole Keras model's argmax, token by token, and a seed must draw
    # the Generator's text.
    import tensorflow as tf

    from textgen.run.rundir import RunDir
    from textgen.serving.export import export

    text = synthetic_text(lines=120, seed=5)
    run = make_run(tmp_path / "run", text, steps=20, layers=2, overrides=("model.residual=true",))
    model, tokenizer = RunDir(run).load_model(), RunDir(run).load_tokenizer()
    assert "residual_1" in [layer.name for layer in model.layers]
    loaded = tf.saved_model.load(str(export(run, tmp_path / "export")))
    [greedy] = call(loaded, ["Café au "], [30], temperature=0.0)
    ids = list(tokenizer.encode("Café au "))
    for _ in range(30):
        logits = np.array(model(np.array([ids], np.int32)))[0, -1]  # (vocab,)
        logits[0] = -np.inf  # the unknown id is never produced
        ids.append(int(np.argmax(logits)))
    assert greedy == tokenizer.decode(ids[-30:])
    generator = Generator.from_run(run)
    seeded = call(loaded, ["The "], [30], temperature=1.0, seeds=[3])
    assert seeded == generator.generate("The ", 30, seed=3)
