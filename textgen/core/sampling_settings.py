"""The one owner of the sampling settings rule: what temperature, top-k, top-p, length,
number of samples and seed may be, checked in the dtypes the compiled sampler gets.

The sampler takes temperature and top-p as float32, top-k, length and positions as int32 and
the seed as int64. A value that is fine as a Python float can break there: a top-p of 1e-50
rounds to 0 in float32 (no candidate token: the call fails), a temperature of 1e300 becomes
inf (every token equally likely). `check_sampling` refuses those; the config, `Generator`,
`textgen.sample`, the server and the export's graph checks all use it (or its constants).

Rules (documented in the README):
- temperature: 0 (greedy) or in [MIN_TEMPERATURE, MAX_TEMPERATURE] after float32 conversion.
- top_k: an integer in [0, 2^31 - 1] (0: off); a top-k above the vocabulary is clamped to the
  vocabulary (sampling among more tokens than exist is sampling among all of them).
- top_p: in (0, 1] after float32 conversion (1: off).
- length, num_samples: integers in [1, the caller's limit] (at most 2^31 - 1).
- seed: None (a fresh one is drawn by `draw_seed`) or an integer in the int64 range; the
  sampler takes it modulo SEED_MODULUS.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from textgen.core.errors import TextgenError

INT32_MAX = (1 << 31) - 1
INT64 = (-(1 << 63), (1 << 63) - 1)
SEED_MODULUS = 1 << 62  # seeds are taken modulo this, in Python and in the graph alike
MIN_TEMPERATURE = 1e-30  # below it 1 / temperature times a logit can overflow float32
MAX_TEMPERATURE = 1e30  # above it every logit / temperature is 0 in float32: all tokens alike


@dataclass(frozen=True)
class SamplingSettings:
    """How one request samples (the fields a config, a CLI or an HTTP body gives).

    Attributes:
        temperature: Softmax temperature; 0 is greedy.
        top_k: Sample among the k likeliest tokens; 0 is off.
        top_p: Sample among the likeliest tokens whose probability sums to p; 1 is off.
        length: Tokens per sample.
        num_samples: Samples drawn side by side.
        seed: The same seed gives the same text; None: `resolved` draws one.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    length: int = 500
    num_samples: int = 1
    seed: int | None = None

    def resolved(self) -> SamplingSettings:
        """A copy with a seed: this one's, or a fresh random one."""
        return self if self.seed is not None else dataclasses.replace(self, seed=draw_seed())


class SamplingSettingError(TextgenError):
    """A sampling setting out of range; `field` names it (e.g. `top_p`)."""

    def __init__(self, what: str, field: str) -> None:
        super().__init__(what, field)
        self.field = field


def draw_seed() -> int:
    """A fresh random seed, as the sampler takes it: the one place one is drawn."""
    return secrets.randbits(62)


def seed_value(seed: int | None) -> int:
    """A seed as the sampler takes it (an int64 in [0, SEED_MODULUS)); None draws one."""
    return draw_seed() if seed is None else int(seed) % SEED_MODULUS


def check_sampling(
    settings: SamplingSettings,
    *,
    vocab_size: int | None = None,
    max_length: int = INT32_MAX,
    max_samples: int = INT32_MAX,
    name: Callable[[str], str] = str,
) -> SamplingSettings:
    """Checks every setting as the sampler will see it.

    Args:
        settings: The settings (any Python values: types are checked too).
        vocab_size: The vocabulary, when known: top-k is clamped to it.
        max_length: Most tokens per sample the caller allows.
        max_samples: Most samples the caller allows.
        name: A field's name as the caller's user knows it (`--top-p`, `sample.top_p`).

    Returns:
        The settings with plain Python types and top-k clamped to the vocabulary.

    Raises:
        SamplingSettingError: naming the first setting at fault.
    """
    s = settings
    temperature = _number(s.temperature, "temperature", name)
    t32 = _float32(temperature)
    if temperature < 0:
        _fail("temperature", f"must be >= 0, got {temperature}", name)
    if temperature > 0 and not MIN_TEMPERATURE <= t32 <= MAX_TEMPERATURE:
        must = f"must be 0 or in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}] (float32)"
        _fail("temperature", f"{must}, got {temperature}", name)
    top_p = _number(s.top_p, "top_p", name)
    if not 0 < _float32(top_p) <= 1:
        rounds = " (0 in float32)" if 0 < top_p <= 1 else ""
        _fail("top_p", f"must be in (0, 1], got {top_p}{rounds}", name)
    top_k = _integer(s.top_k, "top_k", 0, INT32_MAX, name)
    if vocab_size is not None:
        top_k = min(top_k, vocab_size)
    seed = None if s.seed is None else _integer(s.seed, "seed", *INT64, name)
    return SamplingSettings(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        length=_integer(s.length, "length", 1, min(max_length, INT32_MAX), name),
        num_samples=_integer(s.num_samples, "num_samples", 1, min(max_samples, INT32_MAX), name),
        seed=seed,
    )


def _float32(value: float) -> float:
    """`value` as the graph sees it (inf past float32's range, 0 below its smallest)."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


def _fail(field: str, must: str, name: Callable[[str], str]):
    raise SamplingSettingError(f"{name(field)} {must}", field)


def _number(value, field: str, name: Callable[[str], str]) -> float:
    """A finite real number (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        _fail(field, f"must be a number, got {_shown(value)}", name)
    value = float(value)
    if not math.isfinite(value):
        _fail(field, f"must be finite, got {value}", name)
    return value


def _integer(value, field: str, low: int, high: int, name: Callable[[str], str]) -> int:
    """An integer in [low, high] (bool refused); "must be >= low" while high is a dtype's."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        _fail(field, f"must be an integer, got {_shown(value)}", name)
    value = int(value)
    if not low <= value <= high:
        dtype_limit = high in (INT32_MAX, INT64[1])
        must = f">= {low}" if dtype_limit and value < low else f"in [{low}, {high}]"
        _fail(field, f"must be {must}, got {value}", name)
    return value


def _shown(value) -> str:
    """A short rendering of a bad value."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
