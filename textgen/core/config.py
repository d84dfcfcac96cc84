"""Typed, frozen config sections; `load_config(path, overrides)`; errors that name the key.

Every default below is the one `configs/base.yaml` relies on, with the reason next to it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from textgen.core.errors import ConfigError
from textgen.core.filewrite import write_atomic
from textgen.core.hardware import auto_precision
from textgen.core.memory import available_memory_bytes
from textgen.core.sampling_settings import SamplingSettingError, SamplingSettings, check_sampling


@dataclass(frozen=True)
class DataConfig:
    """Where the corpus is, how it is tokenized and split."""

    path: str = "data/kjv.txt"  # a file, a directory (every text file below it) or a glob
    index_dir: str = "index/kjv"  # derived int32 memmaps; rebuilt when a source changes
    tokenizer: Literal["char", "sentencepiece"] = "char"  # chars: nothing is unknown, bpc is direct
    val_fraction: float = 0.05  # last 5% held out; contiguous, so no window spans both splits
    encoding_errors: Literal["strict", "replace"] = "strict"  # bad UTF-8 is an error unless asked
    sp_vocab_size: int = 2000  # sentencepiece only: small enough to train in seconds on 1 MB
    sp_model_type: Literal["bpe", "unigram", "char"] = "unigram"  # sentencepiece's own default
    sp_sample_lines: int = 300_000  # sentencepiece only: lines sampled, so its RAM is bounded
    # stream: the corpus is one text (a book). lines / paragraphs / files: a list of short
    # documents, one per non-empty line / blank-line-separated paragraph / source file, each
    # followed by an end-of-text token; sampling then stops at a document's end.
    documents: Literal["stream", "lines", "paragraphs", "files"] = "stream"


@dataclass(frozen=True)
class WindowsConfig:
    """How training windows are cut from the token stream."""

    maxlen: int = 64  # truncated-BPTT length: short windows, many cheap updates (600-s sweep)
    step: int = 64  # sequence target: every token is a target once per epoch with step = maxlen
    target: Literal["sequence", "next"] = "sequence"  # next: one target per window (classic)
    carry_state: bool = False  # true: each batch row is a contiguous stream (truncated BPTT):
    # its LSTM state carries from batch to batch; `step` is then maxlen. base.yaml turns it on (it
    # won the 600-s sweep); off here because `target: next` windows cannot carry state.


@dataclass(frozen=True)
class ModelConfig:
    """Embedding -> LSTM x layers -> Dense logits."""

    # 600-s sweep G: 128 beat 64 on prose, drama and code (mean -0.013 bpc) for 3% fewer steps
    embedding_dim: int = 128
    units: int = 384  # 600-s sweep on 2 cores: 2 x 384 beat 2 x 256 and 2 x 512 (benchmarks.md)
    layers: int = 2  # same sweep: 3 x 256 was far worse than 2 x 256
    # A few MB, few epochs: underfitting, not overfitting, is the risk. auto: 0.25 when the run
    # will see its text >= 6 times, else 0 (textgen/training/regularisation.py says why).
    dropout: float | Literal["auto"] = 0.0
    # auto: the lean kernel (textgen/model/lstm_kernel.py; same weights) on a CPU, where Keras' LSTM
    # spends its time on per-op overhead; Keras' own LSTM where a GPU is visible (cuDNN).
    lstm_kernel: Literal["auto", "keras", "lean"] = "auto"
    # Layers above the first add their input to their output: 600-s sweep H, -0.015 to -0.024 bpc
    # on prose, drama and code at the same step rate (an add per layer)
    residual: bool = True

    # The keys that make a model's weights and function: fixed by a resumed run or a source.
    SHAPE_KEYS: typing.ClassVar[tuple[str, ...]] = ("embedding_dim", "units", "layers", "residual")

    def count_params(self, vocab_size: int) -> int:
        """Parameters of `build_model(self, vocab_size)`, without building it."""
        total, width = vocab_size * self.embedding_dim, self.embedding_dim  # the embedding
        for _ in range(self.layers):
            total += 4 * self.units * (width + self.units + 1)  # 4 gates: input, recurrent, bias
            width = self.units
        return total + self.units * vocab_size + vocab_size  # the Dense logits


@dataclass(frozen=True)
class TrainConfig:
    """The training loop, its limits, checkpoints and evaluation."""

    batch_size: int = 16  # global batch (split across replicas): many small updates beat fewer
    # large ones in equal time (600-s sweep: 16 beat 32)
    epochs: int = 5  # the budget when max_time is null: the schedule ends after epochs x steps
    steps_per_epoch: int | None = None  # null: a full pass over the train windows
    max_steps: int | None = None  # null: no step limit
    max_time: float | None = None  # a time budget (seconds, or 10m / 1h): the schedule is fitted
    # to it and ends annealed when the time is up; null: train.epochs is the budget. base.yaml
    # sets 10m; a config that names no budget trains for `epochs`, not for a surprise duration
    learning_rate: float = 4e-3  # 600 s at batch 16, bf16: 4e-3 beat 3e-3 on 4 kinds of text
    adam_beta2: float = 0.999  # Keras' default; beat 0.99 at batch 16 (600-s sweep)
    lr_schedule: Literal["constant", "cosine", "linear"] = "cosine"  # decays to min_lr_ratio by
    # the end (linear: by equal steps; measured against cosine in docs/benchmarks.md)
    warmup_steps: int = 100  # linear warmup keeps the first Adam steps (at lr 3e-3) from blowing up
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of learning_rate
    clip_norm: float = 1.0  # global-norm clipping: LSTMs occasionally spike
    seed: int = 1337  # seeds weights, window order and dropout
    deterministic: bool = False  # true: op determinism, bitwise-reproducible resume (slower)
    out_dir: str = "runs/base"  # run dir: config, checkpoints, model.keras, metrics, samples
    checkpoint_every: int = 500  # steps (~45 s at base.yaml's rate on 2 cores): what a crash loses
    eval_every: int = 1000  # steps between evaluations on a bounded val sample (~90 s; each costs
    # training time)
    eval_windows: int = 256  # periodic evaluations score eval_windows x maxlen val tokens (as
    # streams); the final one scores all of val
    patience: int = 0  # evaluations without val improvement before stopping; 0: never stop early
    steps_per_call: int = 10  # train steps per tf.function call, to cut Python overhead
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = "auto"
    # auto: bf16 matmuls (float32 weights and gate math) on a CPU with AVX512-BF16 or AMX, where
    # they won the 600-s sweep on every corpus; float32 elsewhere (docs/benchmarks.md, "part 3").
    # The others force a policy.
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    fresh: bool = False  # true: ignore checkpoints in out_dir and start over
    # Fine-tuning: a run dir (its best weights), or RUN/checkpoints/ckpt-N, to start from instead
    # of random weights; null: random weights. The model shape and tokenizer come from it.
    init_from: str | None = None
    init_checkpoint: str = "best"  # with a run dir: best (model.keras) or latest (newest ckpt)


@dataclass(frozen=True)
class SampleConfig:
    """Defaults for `textgen.sample` and the samples written after each epoch."""

    prompt: str = ""  # empty: start from a newline
    length: int = 500  # characters (tokens for sentencepiece) per sample
    temperature: float = 0.8  # below 1: fewer typos, still varied
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    epoch_temperatures: tuple[float, ...] = (0.5, 1.0)  # samples.txt after each epoch
    epoch_length: int = 300  # characters per sample in samples.txt


@dataclass(frozen=True)
class OriginConfig:
    """Where a fine-tuned run's weights came from: written by the trainer, not set by hand."""

    run_dir: str | None = None  # the source run (train.init_from resolved); null: random init
    checkpoint: str | None = None  # the file or checkpoint prefix the weights were read from
    weights: str | None = None  # SHA-256 prefix of the source weights (as `stop` prints)


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of a run."""

    data: DataConfig = field(default_factory=DataConfig)
    windows: WindowsConfig = field(default_factory=WindowsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    origin: OriginConfig = field(default_factory=OriginConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Returns plain nested dicts (tuples as lists), ready for YAML or JSON."""
        out = dataclasses.asdict(self)
        for section in out.values():
            for key, value in section.items():
                if isinstance(value, tuple):
                    section[key] = list(value)
        return out

    def dump(self, path: str | Path) -> None:
        """Writes the resolved config as YAML, atomically (loads back equal with `load_config`)."""
        write_atomic(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))

    def replace(self, **sections: Any) -> Config:
        """Returns a copy with whole sections replaced."""
        return dataclasses.replace(self, **sections)


# Range rules: key -> (predicate, what the value must be).
_RULES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "data.path": (lambda v: v != "", "a non-empty path"),
    "data.index_dir": (lambda v: v != "", "a non-empty path"),
    "data.val_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "data.sp_vocab_size": (lambda v: v >= 8, ">= 8"),
    "data.sp_sample_lines": (lambda v: v >= 1, ">= 1"),
    "windows.maxlen": (lambda v: v >= 1, ">= 1"),
    "windows.step": (lambda v: v >= 1, ">= 1"),
    "model.embedding_dim": (lambda v: v >= 1, ">= 1"),
    "model.units": (lambda v: v >= 1, ">= 1"),
    "model.layers": (lambda v: v >= 1, ">= 1"),
    "model.dropout": (lambda v: v == "auto" or 0 <= v < 1, "in [0, 1) or auto"),
    "train.batch_size": (lambda v: v >= 1, ">= 1"),
    "train.epochs": (lambda v: v >= 1, ">= 1"),
    "train.steps_per_epoch": (lambda v: v is None or v >= 1, ">= 1 or null"),
    "train.max_steps": (lambda v: v is None or v >= 1, ">= 1 or null"),
    "train.max_time": (lambda v: v is None or v > 0, "> 0 or null"),
    "train.learning_rate": (lambda v: v > 0, "> 0"),
    "train.adam_beta2": (lambda v: 0 < v < 1, "in (0, 1)"),
    "train.warmup_steps": (lambda v: v >= 0, ">= 0"),
    "train.min_lr_ratio": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "train.clip_norm": (lambda v: v >= 0, ">= 0 (0: no clipping)"),
    "train.out_dir": (lambda v: v != "", "a non-empty path"),
    "train.checkpoint_every": (lambda v: v >= 1, ">= 1"),
    "train.eval_every": (lambda v: v >= 1, ">= 1"),
    "train.eval_windows": (lambda v: v >= 1, ">= 1"),
    "train.patience": (lambda v: v >= 0, ">= 0"),
    "train.steps_per_call": (lambda v: v >= 1, ">= 1"),
    "train.init_from": (lambda v: v is None or v != "", "a run dir, a checkpoint or null"),
    "train.init_checkpoint": (lambda v: v in ("best", "latest"), "best or latest"),
    # sample.length, temperature, top_k, top_p and epoch_temperatures: `_check_sampling`
    "sample.epoch_length": (lambda v: v >= 1, ">= 1"),
}


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    base: Mapping | None = None,
    saved: bool = False,
) -> Config:
    """Loads a YAML config, applies `dotted.key=value` overrides and validates every value.

    Args:
        path: A YAML file with any subset of the sections; None uses the defaults alone.
        overrides: Words like `train.epochs=2`; each value is parsed as YAML.
        base: A mapping used instead of reading `path` (e.g. a run's saved config).
        saved: `path` is a run's config.yaml (every key written out): a key it lacks was added
            after the run started, and takes the value that run's model was built with.

    Returns:
        The frozen, validated `Config`.

    Raises:
        ConfigError: naming the file or command line and the key at fault.
    """
    where = str(path) if path is not None else "defaults"
    raw: dict[str, Any] = dict(base) if base is not None else _read_yaml(path) if path else {}
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a mapping of sections", where)
    raw = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for section, old, new in _RENAMED:  # configs saved by earlier versions still load
        if isinstance(raw.get(section), dict) and old in raw[section]:
            raw[section].setdefault(new, raw[section].pop(old))
    for section, key, value in _ADDED_SINCE if saved else ():
        if isinstance(raw.get(section), dict):
            raw[section].setdefault(key, value)
    origin = {f"{s}.{k}": where for s, sec in raw.items() if isinstance(sec, dict) for k in sec}
    for word in overrides:
        key, value = _parse_override(word)
        section, _, name = key.partition(".")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"section '{section}' must be a mapping", where)
        raw[section][name] = value
        origin[key] = "command line"
        origin.setdefault(section, "command line")  # where an unknown section came from
    return _build(raw, origin, where)


_RENAMED = (("train", "mixed_precision", "precision"),)  # (section, old key, new key)
# (section, key, value): keys added after runs were first saved, with what an older run built.
_ADDED_SINCE = (("model", "residual", False),)


def precision_policy(train_cfg: TrainConfig, *, gpus: int = 0) -> str:
    """The Keras mixed-precision policy `train.precision` stands for on this machine.

    Args:
        train_cfg: The train section.
        gpus: GPUs TensorFlow sees; `auto` picks by them and the CPU (`auto_precision`).
    """
    if train_cfg.precision == "auto":
        return auto_precision(gpus=gpus)
    return train_cfg.precision


def _read_yaml(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config file not found", str(path))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(e.problem or e.context or "invalid YAML").split())
        raise ConfigError(f"YAML syntax error: {problem}", f"{path}{at}") from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"cannot parse YAML: {' '.join(str(e).split())}", str(path)) from None
    return {} if data is None else data


def _parse_override(word: str) -> tuple[str, Any]:
    key, eq, text = word.partition("=")
    if not eq or "." not in key or not key.strip():
        raise ConfigError(f"override '{word}' is not of the form section.key=value", "command line")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text  # an unparsable value is taken as a plain string, then type-checked
    return key.strip(), value


def _build(raw: dict[str, Any], origin: dict[str, str], where: str) -> Config:
    hints = typing.get_type_hints(Config)
    sections = {}
    for name, value in raw.items():
        if name not in hints:
            raise ConfigError(_unknown(name, list(hints)), origin.get(name, where))
        if not isinstance(value, dict):
            raise ConfigError(f"section '{name}' must be a mapping", where)
    for name, cls in hints.items():
        values = raw.get(name, {})
        fields = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            dotted = f"{name}.{key}"
            if key not in fields:
                full = [f"{name}.{k}" for k in fields]
                raise ConfigError(_unknown(dotted, full), origin.get(dotted, where))
            kwargs[key] = _coerce(value, fields[key], dotted, origin.get(dotted, where))
        section = cls(**kwargs)
        for key in fields:
            dotted = f"{name}.{key}"
            rule = _RULES.get(dotted)
            if rule and not rule[0](getattr(section, key)):
                raise ConfigError(
                    f"{dotted} must be {rule[1]}, got {getattr(section, key)!r}",
                    origin.get(dotted, where),
                )
        if name == "sample":
            _check_sampling(section, origin, where)
        sections[name] = section
    return Config(**sections)


def _check_sampling(sample: SampleConfig, origin: dict[str, str], where: str) -> None:
    """The sample section by the one sampling rule (`core.sampling_settings`)."""
    tried = [(SamplingSettings(sample.temperature, sample.top_k, sample.top_p, sample.length),
              lambda f: f"sample.{f}")]  # fmt: skip
    tried += [(SamplingSettings(temperature=t), lambda f: "sample.epoch_temperatures")
              for t in sample.epoch_temperatures]  # fmt: skip
    for settings, name in tried:
        try:
            check_sampling(settings, name=name)
        except SamplingSettingError as e:
            key = name(e.field)
            raise ConfigError(e.what, origin.get(key, where)) from None


def _unknown(key: str, valid: list[str]) -> str:
    # Compare names within the section: the shared `section.` prefix would make any key "close".
    by_name = {v.rpartition(".")[2]: v for v in valid}
    close = difflib.get_close_matches(key.rpartition(".")[2], list(by_name), n=1, cutoff=0.6)
    hint = (
        f"; did you mean '{by_name[close[0]]}'?" if close else f"; valid keys: {', '.join(valid)}"
    )
    return f"unknown key '{key}'{hint}"


_DURATION_KEYS = ("train.max_time",)
_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s?)?")


def parse_duration(text: str, key: str = "duration", where: str = "command line") -> float:
    """Seconds of a duration like `90`, `90s`, `10m`, `1h`, `1h30m` or `2.5m`.

    Raises:
        ConfigError: the text is not such a duration.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise ConfigError(
            f"{key} must be seconds or a duration like 90s, 10m, 1h or 1h30m, got {text!r}", where
        )
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """Checks `value` against the annotation `hint`; returns it in the field's type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for word in (a for a in inner if typing.get_origin(a) is Literal):
            if value in typing.get_args(word):  # e.g. model.dropout: auto
                return value
        return _coerce(value, inner[0], key, where)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key} must be one of {choices}, got {value!r}", where)
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}", where)
        return tuple(_coerce(v, args[0], key, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}", where)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}", where)
        return value
    if key in _DURATION_KEYS and isinstance(value, str):
        return parse_duration(value, key, where)
    if hint is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)  # PyYAML (YAML 1.1) reads `1e-3` as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}", where)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}", where)
        return value
    raise TypeError(f"unsupported config annotation {hint!r} for {key}")  # a bug, not user input


_FLOAT_BYTES = 4
_PARAMETER_COPIES = 4  # weights, gradients and Adam's two moments, float32 each
_SIZE_KEYS = ("model.units", "model.layers", "model.embedding_dim", "train.batch_size",
              "windows.maxlen")  # fmt: skip


def training_memory_bytes(cfg: Config, vocab_size: int) -> int:
    """A lower bound of the memory training needs, in bytes.

    Parameters x 4 bytes x 4 copies (weights, gradients, Adam's two moments), plus the
    activations kept for the backward pass (gates and states per time step and layer; logits,
    probabilities and their gradient per position).

    Args:
        cfg: The config.
        vocab_size: Tokens in the vocabulary (a lower bound is fine before indexing).
    """
    m = cfg.model
    params = m.count_params(vocab_size)
    per_position = m.layers * 8 * m.units + 3 * vocab_size
    activations = cfg.train.batch_size * cfg.windows.maxlen * per_position
    return (params * _PARAMETER_COPIES + activations) * _FLOAT_BYTES


def check_fits_in_memory(
    cfg: Config, vocab_size: int | None = None, *, available_bytes: int | None = None
) -> None:
    """Refuses a model whose training cannot fit in the available memory, before building it.

    Args:
        cfg: The config.
        vocab_size: The vocabulary; None uses a lower bound (sentencepiece's size, or 1).
        available_bytes: Memory available; None reads it (MemAvailable, cgroup limit).

    Raises:
        ConfigError: naming the key whose default would save the most, the estimate and what
            is available.
    """
    if available_bytes is None:
        available_bytes = available_memory_bytes()
    if available_bytes is None:
        return  # not Linux: nothing to compare with
    if vocab_size is None:
        vocab_size = cfg.data.sp_vocab_size if cfg.data.tokenizer == "sentencepiece" else 1
    total = training_memory_bytes(cfg, vocab_size)
    if total <= available_bytes:
        return
    key = min(_SIZE_KEYS, key=lambda k: training_memory_bytes(_with_default(cfg, k), vocab_size))
    section, _, name = key.partition(".")
    value = getattr(getattr(cfg, section), name)
    raise ConfigError(
        f"training would need at least {total / 1e9:,.1f} GB (weights, gradients, optimizer "
        f"state and activations with {key}={value:,}), more than the "
        f"{available_bytes / 1e9:,.1f} GB of memory available; lower {key}",
        key,
    )


def _with_default(cfg: Config, key: str) -> Config:
    """cfg with `key` at its default if that is smaller (the estimate's culprit is the rest)."""
    section, _, name = key.partition(".")
    values = getattr(cfg, section)
    default = getattr(type(values)(), name)
    if getattr(values, name) <= default:
        return cfg
    return cfg.replace(**{section: dataclasses.replace(values, **{name: default})})
