"""The one sampling rule, in the sampler's dtypes, and its users (config, the sample CLI)."""

from __future__ import annotations

import pytest

from textgen.core.config import load_config
from textgen.core.errors import ConfigError, TextgenError
from textgen.core.sampling_settings import (
    SamplingSettingError,
    SamplingSettings,
    check_sampling,
    draw_seed,
)  # fmt: skip
from textgen.generation.generate import check_sampling_args


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"top_p": 1e-50}, "top_p must be in (0, 1], got 1e-50 (0 in float32)"),
        ({"top_p": 0.0}, "top_p must be in (0, 1], got 0.0"),
        ({"temperature": 1e300}, "temperature must be 0 or in [1e-30, 1e+30] (float32)"),
        ({"temperature": 1e-45}, "temperature must be 0 or in"),
        ({"temperature": float("inf")}, "temperature must be finite"),
        ({"temperature": True}, "temperature must be a number"),
        ({"top_k": 2**31}, "top_k must be in [0, 2147483647]"),
        ({"top_k": 1.5}, "top_k must be an integer"),
        ({"seed": 2**63}, "seed must be in [-9223372036854775808, 9223372036854775807]"),
        ({"length": 0}, "length must be >= 1, got 0"),
        ({"num_samples": 9}, "num_samples must be in [1, 8], got 9"),
    ],
)
def test_values_the_sampler_cannot_take_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(SamplingSettingError) as e:
        check_sampling(SamplingSettings(**changes), max_samples=8)
    assert message in e.value.what and e.value.field == next(iter(changes))


def test_top_k_above_the_vocabulary_is_clamped_and_seeds_are_drawn() -> None:
    checked = check_sampling(SamplingSettings(top_k=10_000, temperature=0), vocab_size=65)
    assert checked.top_k == 65 and checked.temperature == 0.0 and checked.seed is None
    assert checked.resolved().seed is not None and 0 <= draw_seed() < 2**62
    assert SamplingSettings(seed=5).resolved().seed == 5


def test_the_config_and_the_cli_use_the_rule() -> None:
    with pytest.raises(ConfigError, match=r"sample.top_p must be .*0 in float32.*command line"):
        load_config(None, ["sample.top_p=1e-50"])
    with pytest.raises(ConfigError, match=r"sample\.temperature must be 0 or in"):
        load_config(None, ["sample.temperature=1e300"])
    with pytest.raises(TextgenError, match=r"--top-p must be .*0 in float32"):
        check_sampling_args(length=1, temperature=1.0, top_k=0, top_p=1e-50, num_samples=1,
                            prefix="--")  # fmt: skip
