"""Sampling speed and memory: textgen's Generator against the two ways users sample today.

    python scripts/bench_sample.py            # the model size of configs/base.yaml
    python scripts/bench_sample.py --quick    # small sizes, seconds

Same weights for all (an untrained model over the KJV alphabet, saved as a run dir; weights
do not change the speed):
  (a) classic: the Keras example's loop, `model(x)` on the last maxlen characters per new one;
  (b) tutorial: the TF text-generation tutorial's per-character `tf.function` step carrying the
      LSTM states, called from a Python loop (text in and out through StringLookup, as written);
      step_ids: the same loop fed ids, without the string work (a stricter baseline);
  ours: `Generator.generate`; ours_xla: the same with `jit_compile=True`.
Chars/s is the best of --repeats runs (other processes only ever slow a run down).
Then 1000 generate calls with varying prompts, lengths, temperatures and seeds: RSS growth and
the time of the last 100 calls against the first 100 (each uses the same arguments).
Prints ONE JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
REPO = Path(__file__).resolve().parents[1]

from textgen.core.memory import rss_mb  # noqa: E402  (after the sys.path line above)


def make_run(directory: Path, text: str, args: argparse.Namespace) -> None:
    """Saves an untrained run dir (config, tokenizer, model.keras) of the requested size."""
    import keras

    from textgen.core.config import load_config
    from textgen.data.tokenizers import CharTokenizer
    from textgen.model.build import build_model
    from textgen.run.rundir import RunDir

    cfg = load_config(
        None,
        [
            f"model.units={args.units}",
            f"model.layers={args.layers}",
            f"model.embedding_dim={args.embedding_dim}",
            f"windows.maxlen={args.maxlen}",
            f"train.out_dir={directory}",
        ],
    )
    tokenizer = CharTokenizer(text)
    keras.utils.set_random_seed(0)
    model = build_model(cfg.model, tokenizer.vocab_size)
    run = RunDir(directory)
    run.prepare()
    run.save_config(cfg)
    tokenizer.save(directory)
    model.save(run.best_model)


def classic(model, ids: np.ndarray, maxlen: int, chars: int, samples: int) -> float:
    """(a) The Keras example: re-run the model on the last maxlen ids for every new id."""
    rng = np.random.default_rng(0)
    window = np.tile(ids[-maxlen:], (samples, 1)).astype(np.int32)  # (samples, maxlen)
    model(window[:, :8], training=False)  # build outside the timing
    start = time.perf_counter()
    for _ in range(chars):
        logits = np.asarray(model(window, training=False))[:, -1].astype(np.float64)
        logits[:, 0] = -np.inf  # (samples, vocab)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        nxt = [rng.choice(len(p), p=p) for p in probs]
        window = np.concatenate([window[:, 1:], np.array(nxt, np.int32)[:, None]], axis=1)
    return chars * samples / (time.perf_counter() - start)


def step_model_of(model):
    """The tutorial's model: LSTM layers with return_state, the same weights, layer for layer."""
    import keras

    from textgen.model.build import lstm_layers

    lstms = lstm_layers(model)
    units = lstms[0].units
    inp = keras.Input((None,), dtype="int32")
    state_in = [keras.Input((units,)) for _ in range(2 * len(lstms))]
    x = keras.layers.Embedding(*model.get_layer("embedding").embeddings.shape)(inp)
    state_out = []
    for i, _ in enumerate(lstms):
        x, h, c = keras.layers.LSTM(units, return_sequences=True, return_state=True)(
            x, initial_state=state_in[2 * i : 2 * i + 2]
        )
        state_out += [h, c]
    logits = keras.layers.Dense(model.get_layer("logits").units)(x)
    step_model = keras.Model([inp, *state_in], [logits, *state_out])
    step_model.set_weights(model.get_weights())
    return step_model, units, 2 * len(lstms)


def tutorial(model, tokenizer, prompt: str, chars: int, samples: int, strings: bool) -> float:
    """(b) The TF text-generation tutorial: a per-character tf.function step with carried state.

    strings=True is the tutorial as written (text in, text out through StringLookup layers);
    strings=False feeds ids straight in: the same loop without the string work (a stricter
    baseline).
    """
    import keras
    import tensorflow as tf

    step_model, units, n_states = step_model_of(model)
    vocab = model.get_layer("logits").units
    mask = tf.constant(np.r_[-np.inf, np.zeros(vocab - 1)], tf.float32)  # [UNK] never predicted
    ids_from_chars = keras.layers.StringLookup(vocabulary=list(tokenizer.chars), mask_token=None)
    chars_from_ids = keras.layers.StringLookup(
        vocabulary=ids_from_chars.get_vocabulary(), invert=True, mask_token=None
    )

    @tf.function
    def generate_one_step(inputs, states):
        if strings:
            input_chars = tf.strings.unicode_split(inputs, "UTF-8")
            inputs = tf.ragged.map_flat_values(ids_from_chars, input_chars).to_tensor()
        logits, *states = step_model([inputs, *states], training=False)
        logits = logits[:, -1, :] / 1.0 + mask  # the last prediction, temperature 1
        predicted = tf.random.categorical(logits, num_samples=1, dtype=tf.int32)
        if strings:
            return chars_from_ids(predicted[:, 0]), states
        return predicted, states

    states = [tf.zeros((samples, units)) for _ in range(n_states)]
    if strings:
        nxt, states = generate_one_step(tf.constant([prompt] * samples), states)
    else:
        ids = np.tile(tokenizer.encode(prompt), (samples, 1))
        nxt, states = generate_one_step(tf.constant(ids), states)
    generate_one_step(nxt, states)  # trace the one-character step outside the timing
    result = []
    start = time.perf_counter()
    for _ in range(chars):
        nxt, states = generate_one_step(nxt, states)
        result.append(nxt)
    if strings:
        tf.strings.join(result)  # the tutorial joins the characters at the end
    else:
        np.concatenate([t.numpy() for t in result], axis=1)
    return chars * samples / (time.perf_counter() - start)


def ours(generator, prompt: str, chars: int, samples: int) -> float:
    """textgen: `generate` (one compiled loop; up to `BLOCK` tokens per call)."""
    generator.generate(prompt, length=16, num_samples=samples, seed=0)  # trace (and compile)
    start = time.perf_counter()
    generator.generate(prompt, length=chars, num_samples=samples, seed=1)
    return chars * samples / (time.perf_counter() - start)


def best_of(repeats: int, fn, *args) -> float:
    """The best chars/s of `repeats` runs: other processes on the machine only slow a run down."""
    return max(fn(*args) for _ in range(repeats))


def leak_test(generator, text: str, calls: int, max_length: int) -> dict:
    """Many generate calls with varying arguments: RSS growth and first-vs-last timing."""
    generator.generate("warm", length=8, seed=0)
    traces = generator.trace_count
    rss_start = rss_mb()
    times = []
    for i in range(calls):
        rng = random.Random(i % 100)  # calls i and i + 100k take the same arguments
        start = rng.randrange(len(text) - 100)
        kwargs = dict(
            prompt=text[start : start + rng.randrange(0, 64)],
            length=rng.randint(1, max_length),
            temperature=rng.choice([0.0, 0.5, 0.8, 1.0, 1.3]),
            top_k=rng.choice([0, 0, 5, 20]),
            top_p=rng.choice([1.0, 1.0, 0.9, 0.5]),
            seed=rng.randrange(1 << 30),
        )
        t0 = time.perf_counter()
        generator.generate(**kwargs)
        times.append(time.perf_counter() - t0)
    first, last = sum(times[:100]), sum(times[-100:])
    return {
        "calls": calls,
        "max_length": max_length,
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_end": round(rss_mb(), 1),
        "rss_growth_mb": round(rss_mb() - rss_start, 1),
        "first_100_s": round(first, 3),
        "last_100_s": round(last, 3),
        "last_over_first": round(last / first, 3),
        "retraces": generator.trace_count - traces,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Sizes default to configs/base.yaml; --quick shrinks everything."""
    from textgen.core.config import load_config

    base = load_config(REPO / "configs" / "base.yaml")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="seconds: sets units, length, samples and counts small, over any given",
    )
    p.add_argument("--units", type=int, default=base.model.units)
    p.add_argument("--layers", type=int, default=base.model.layers)
    p.add_argument("--embedding-dim", type=int, default=base.model.embedding_dim)
    p.add_argument("--maxlen", type=int, default=base.windows.maxlen)
    p.add_argument("--length", type=int, default=2000, help="chars per sample (ours, tutorial)")
    p.add_argument("--samples", type=int, default=32, help="the batched case")
    p.add_argument("--classic-chars", type=int, default=30, help="chars for (a): ~1 s each")
    p.add_argument("--calls", type=int, default=1000, help="leak-test calls (< 200: skip it)")
    p.add_argument("--call-length", type=int, default=100, help="max length per leak-test call")
    p.add_argument("--repeats", type=int, default=3, help="best of N runs (ours, tutorial)")
    args = p.parse_args(argv)
    if args.quick:
        args.units, args.length, args.classic_chars = 128, 300, 20
        args.calls, args.call_length, args.samples = 300, 40, 8
    return args


def main(argv: list[str] | None = None) -> None:
    """Runs every measurement and prints one JSON object."""
    args = parse_args(argv)
    import tensorflow as tf

    from textgen.generation.generate import Generator

    text = (REPO / "data" / "kjv.txt").read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        make_run(Path(tmp), text, args)
        generator = Generator.from_run(tmp)
        model, tokenizer = generator.model, generator.tokenizer
    xla = Generator(model, tokenizer, jit_compile=True)
    prompt = text[1000 : 1000 + args.maxlen]
    ids = tokenizer.encode(prompt)
    n, r = args.samples, args.repeats
    result: dict = {
        "model": {
            "units": args.units,
            "layers": args.layers,
            "embedding_dim": args.embedding_dim,
            "vocab": tokenizer.vocab_size,
            "maxlen": args.maxlen,
        },
        "machine": {"cpus": os.cpu_count(), "tensorflow": tf.__version__},
        "chars_per_sec": {
            "ours_1": best_of(r, ours, generator, prompt, args.length, 1),
            f"ours_{n}": best_of(r, ours, generator, prompt, args.length, n),
            "ours_xla_1": best_of(r, ours, xla, prompt, args.length, 1),
            f"ours_xla_{n}": best_of(r, ours, xla, prompt, args.length, n),
            "tutorial_1": best_of(r, tutorial, model, tokenizer, prompt, args.length, 1, True),
            f"tutorial_{n}": best_of(r, tutorial, model, tokenizer, prompt, args.length, n, True),
            "step_ids_1": best_of(r, tutorial, model, tokenizer, prompt, args.length, 1, False),
            f"step_ids_{n}": best_of(r, tutorial, model, tokenizer, prompt, args.length, n, False),
            "classic_1": classic(model, ids, args.maxlen, args.classic_chars, 1),
            f"classic_{n}": classic(model, ids, args.maxlen, max(args.classic_chars // 5, 3), n),
        },
        "lengths": {"ours": args.length, "tutorial": args.length, "classic": args.classic_chars},
    }
    cps = result["chars_per_sec"]
    result["speedup"] = {
        f"{ours}_vs_{way}_{k}": round(cps[f"{ours}_{k}"] / cps[f"{way}_{k}"], 1)
        for ours in ("ours", "ours_xla")
        for way in ("classic", "tutorial", "step_ids")
        for k in (1, n)
    }
    result["targets_met"] = {
        "ours_vs_classic_1 >= 100": result["speedup"]["ours_vs_classic_1"] >= 100,
        "ours_vs_tutorial_1 >= 5": result["speedup"]["ours_vs_tutorial_1"] >= 5,
    }
    result["chars_per_sec"] = {k: round(v, 1) for k, v in cps.items()}
    if args.calls >= 200:
        leak = leak_test(generator, text, args.calls, args.call_length)
        result["repeated_calls"] = leak
        result["targets_met"]["rss_growth_mb <= 20"] = leak["rss_growth_mb"] <= 20
        result["targets_met"]["last_100 <= 1.2 x first_100"] = leak["last_over_first"] <= 1.2
    print(json.dumps(result))


if __name__ == "__main__":
    main()
