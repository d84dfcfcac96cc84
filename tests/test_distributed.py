"""tf.distribute: two real workers on loopback, and mirrored replicas equal to one device."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, cli_env, run_cli, synthetic_text, write_corpus

STEPS = 12
_WEIGHTS = re.compile(r"weights ([0-9a-f]{16})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(tmp_path: Path, corpus: Path, out: str, **extra: object) -> list[str]:
    words = {
        "data.path": corpus,
        "data.index_dir": tmp_path / "index",
        "train.out_dir": tmp_path / out,
        "train.max_steps": STEPS,
        "train.steps_per_epoch": 100,
        "train.deterministic": "true",
        **extra,
    }
    return [f"{key}={value}" for key, value in words.items()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("distributed")
    return write_corpus(directory, synthetic_text(lines=1500, seed=3))


def test_two_workers_on_loopback_end_with_identical_weights(tmp_path: Path, corpus: Path) -> None:
    # Index once first: the two workers share this machine's index dir.
    args = _overrides(tmp_path, corpus, "run", **{"train.distribute": "multi_worker"})
    assert run_cli("textgen.index", "configs/tiny.yaml", *args[:2]).returncode == 0
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    workers = []
    for i in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": i}}
        env = dict(cli_env(), TF_CONFIG=json.dumps(tf_config))
        command = [sys.executable, "-m", "textgen.train", "configs/tiny.yaml", *args]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        workers.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True, **pipes))
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-2000:]
    fingerprints = [_WEIGHTS.search(out).group(1) for out, _ in outputs]
    assert fingerprints[0] == fingerprints[1]

    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == STEPS and metrics[-1]["final"]
    assert len([m for m in metrics if m["final"]]) == 1  # the chief alone wrote metrics
    assert (run / "checkpoints" / f"ckpt-{STEPS}.index").exists()
    assert (run / "model.keras").exists()


_MIRRORED = """
import sys
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from textgen.core.config import load_config
from textgen.training.trainer import train
result = train(load_config("configs/tiny.yaml", sys.argv[1:]))
print(result.stop_reason, result.step)
"""


@pytest.mark.parametrize("carry_state", ["false", "true"], ids=["windows", "carried-state"])
def test_mirrored_over_two_devices_equals_one_device(
    tmp_path: Path, corpus: Path, carry_state: str
) -> None:
    import tensorflow as tf

    for kind in ("none", "mirrored"):
        # float32: bf16 rounds the two replicas' halves apart; equal sums are a float32 promise.
        extra = {"train.distribute": kind, "windows.carry_state": carry_state,
                 "train.precision": "float32"}  # fmt: skip
        args = _overrides(tmp_path, corpus, kind, **extra)
        done = subprocess.run(
            [sys.executable, "-c", _MIRRORED, *args], cwd=REPO_ROOT, env=cli_env(),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split()[-2:] == ["max_steps", str(STEPS)]
    one = tf.train.load_checkpoint(str(tmp_path / "none" / "checkpoints"))
    two = tf.train.load_checkpoint(str(tmp_path / "mirrored" / "checkpoints"))
    names = [n for n, shape in one.get_variable_to_shape_map().items() if len(shape) >= 2]
    assert len(names) >= 4  # embedding, LSTM kernels, dense kernel (and the carried states)
    # Each replica carried its own rows: all the streams' states equal one device's.
    assert any(n.startswith("carried_states/") for n in names) == (carry_state == "true")
    for name in names:
        # rtol too: the cell states of the carried streams grow past 10 in magnitude.
        np.testing.assert_allclose(one.get_tensor(name), two.get_tensor(name), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "tf_config",
    [None, "{not json", json.dumps({"cluster": {"worker": []}, "task": {"type": "worker"}})],
)
def test_bad_tf_config_is_one_line(
    tmp_path: Path, corpus: Path, tf_config: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config is not None:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    args = _overrides(tmp_path, corpus, "bad", **{"train.distribute": "multi_worker"})
    done = run_cli("textgen.train", "configs/tiny.yaml", *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("textgen: error:")
    assert "TF_CONFIG" in done.stderr


def test_mixed_bfloat16_trains_with_float32_logits(tmp_path: Path, corpus: Path) -> None:
    import keras

    from textgen.core.config import load_config
    from textgen.run.rundir import RunDir
    from textgen.training.trainer import train

    args = _overrides(tmp_path, corpus, "bf16", **{"train.precision": "mixed_bfloat16"})
    result = train(load_config(REPO_ROOT / "configs" / "tiny.yaml", args))
    assert result.stop_reason == "max_steps"
    assert np.isfinite(result.last_metrics["val_bpc"])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    model = RunDir(tmp_path / "bf16").load_model()
    logits = model(np.zeros((1, 8), np.int32))
    assert logits.dtype == "float32"
