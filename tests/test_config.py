"""load_config: defaults, YAML + overrides, and errors that name the key at fault."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT, write_config

from textgen.core.config import Config, DataConfig, load_config
from textgen.core.errors import ConfigError, TextgenError


def test_defaults_load_and_are_frozen():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.data.tokenizer == "char"
    assert cfg.windows.target == "sequence"
    assert 0 < cfg.data.val_fraction < 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3  # type: ignore[misc]


def test_yaml_file_then_overrides(tmp_path):
    path = write_config(
        tmp_path,
        {"train": {"epochs": 5, "batch_size": 8}, "model": {"units": 16}},
    )
    cfg = load_config(
        path,
        [
            "train.epochs=2",
            "train.max_steps=null",
            "train.max_time=1.5",
            "sample.epoch_temperatures=[0.2, 1]",
            "data.path=some dir/with spaces.txt",
            "train.deterministic=true",
        ],
    )
    assert cfg.train.epochs == 2  # the command line wins over the file
    assert cfg.train.batch_size == 8  # the file wins over the defaults
    assert cfg.model.units == 16
    assert cfg.model.layers == Config().model.layers
    assert cfg.train.max_steps is None
    assert cfg.train.max_time == 1.5
    assert cfg.sample.epoch_temperatures == (0.2, 1.0)
    assert cfg.data.path == "some dir/with spaces.txt"
    assert cfg.train.deterministic is True


def test_null_override_clears_a_value_set_in_the_file(tmp_path):
    path = write_config(tmp_path, {"train": {"steps_per_epoch": 20}})
    assert load_config(path).train.steps_per_epoch == 20
    assert load_config(path, ["train.steps_per_epoch=null"]).train.steps_per_epoch is None


def test_integer_given_for_a_float_key_becomes_float():
    cfg = load_config(None, ["train.learning_rate=1", "model.dropout=0"])
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)
    assert isinstance(cfg.model.dropout, float)


@pytest.mark.parametrize(("text", "value"), [("1e-3", 1e-3), ("3E-4", 3e-4), ("2.5e+1", 25.0)])
def test_scientific_notation_is_a_number(text, value):
    # PyYAML reads `1e-3` as a string; users write learning rates like that all the time.
    assert load_config(None, [f"train.learning_rate={text}"]).train.learning_rate == value


def test_scientific_notation_in_a_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 3e-4\n", encoding="utf-8")
    assert load_config(path).train.learning_rate == 3e-4


def test_unknown_key_names_it_and_the_closest_spelling():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.unit=3"])
    message = str(e.value)
    assert "'model.unit'" in message
    assert "did you mean 'model.units'" in message
    assert "command line" in message


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = write_config(tmp_path, {"train": {"epoch": 3}})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "'train.epoch'" in str(e.value)
    assert "did you mean 'train.epochs'" in str(e.value)
    assert str(path) in str(e.value)


def test_unknown_key_without_close_match_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["windows.zzzzzz=1"])
    assert "'windows.zzzzzz'" in str(e.value)
    assert "windows.maxlen" in str(e.value) and "windows.step" in str(e.value)


@pytest.mark.parametrize("source", ["override", "file"])
def test_unknown_section_names_it_and_the_closest_spelling(tmp_path, source):
    if source == "override":
        path, overrides = None, ["trian.epochs=2"]
    else:
        path, overrides = write_config(tmp_path, {"trian": {"epochs": 2}}), []
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides)
    assert "'trian'" in str(e.value)
    assert "did you mean 'train'" in str(e.value)
    assert ("command line" if source == "override" else str(path)) in str(e.value)


def test_section_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="section 'train' must be a mapping"):
        load_config(path)


def test_top_level_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)


def test_empty_file_gives_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing but a comment\n", encoding="utf-8")
    assert load_config(path) == Config()


@pytest.mark.parametrize(
    ("override", "key", "expect"),
    [
        ("data.val_fraction=0", "data.val_fraction", "in (0, 1)"),
        ("data.val_fraction=1", "data.val_fraction", "in (0, 1)"),
        ("data.val_fraction=1.5", "data.val_fraction", "in (0, 1)"),
        ("data.val_fraction=-0.1", "data.val_fraction", "in (0, 1)"),
        ("train.batch_size=0", "train.batch_size", ">= 1"),
        ("windows.maxlen=0", "windows.maxlen", ">= 1"),
        ("model.dropout=1", "model.dropout", "in [0, 1)"),
        ("sample.top_p=0", "sample.top_p", "in (0, 1]"),
        ("sample.epoch_temperatures=[1, -1]", "sample.epoch_temperatures", ">= 0"),
        ("data.sp_vocab_size=4", "data.sp_vocab_size", ">= 8"),
        ("data.path=", "data.path", "non-empty"),
    ],
)
def test_out_of_range_value_names_the_key(override, key, expect):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert key in str(e.value)
    assert expect in str(e.value)
    assert "command line" in str(e.value)


@pytest.mark.parametrize(
    ("override", "key", "expect"),
    [
        ("data.tokenizer=bpe", "data.tokenizer", "one of 'char', 'sentencepiece'"),
        ("data.encoding_errors=ignore", "data.encoding_errors", "one of"),
        ("train.distribute=tpu", "train.distribute", "one of"),
        ("train.epochs=two", "train.epochs", "must be an integer"),
        ("train.epochs=2.5", "train.epochs", "must be an integer"),
        ("train.batch_size=true", "train.batch_size", "must be an integer"),
        ("train.learning_rate=fast", "train.learning_rate", "must be a number"),
        ("train.deterministic=1", "train.deterministic", "true or false"),
        ("data.path=[a, b]", "data.path", "must be a string"),
        ("sample.epoch_temperatures=0.5", "sample.epoch_temperatures", "must be a list"),
        ("sample.epoch_temperatures=[hot]", "sample.epoch_temperatures", "must be a number"),
        ("train.steps_per_epoch=all", "train.steps_per_epoch", "must be an integer"),
    ],
)
def test_mistyped_value_names_the_key(override, key, expect):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert key in str(e.value)
    assert expect in str(e.value)


def test_bad_value_in_a_file_names_the_file(tmp_path):
    path = write_config(tmp_path, {"data": {"val_fraction": 2}})
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "data.val_fraction" in str(e.value)
    assert str(path) in str(e.value)


def test_yaml_syntax_error_reports_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: 2\n  batch_size: [1, 2\nmodel:\n  units: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert "YAML syntax error" in message
    assert str(path) in message
    found = re.search(r"line (\d+), column (\d+)\)$", message)
    assert found, message
    assert 3 <= int(found.group(1)) <= 5  # the unclosed list starts on line 3; noticed soon after


def test_yaml_syntax_error_on_the_first_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: epochs: 2\n")
    with pytest.raises(ConfigError, match=r"line 1, column \d+\)"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("word", ["train.epochs", "epochs=2", "=2", "train.epochs:2"])
def test_override_without_equals_or_section(word):
    with pytest.raises(ConfigError) as e:
        load_config(None, [word])
    assert f"'{word}'" in str(e.value)
    assert "section.key=value" in str(e.value)


def test_config_errors_are_textgen_errors():
    # Entry points turn TextgenError into one line and exit 2; ConfigError must be one.
    with pytest.raises(TextgenError):
        load_config(None, ["model.unit=3"])


def test_dump_then_load_gives_an_equal_config(tmp_path):
    cfg = load_config(
        None,
        [
            "train.epochs=3",
            "train.max_time=12.5",
            "train.learning_rate=0.00001",
            "sample.epoch_temperatures=[0.25, 1.5]",
            "sample.prompt='ÉCLAIR: \"quoted\"\n'",
            "data.path=data/*.txt",
            "data.tokenizer=sentencepiece",
        ],
    )
    out = tmp_path / "resolved.yaml"
    cfg.dump(out)
    again = load_config(out)
    assert again == cfg
    assert again.sample.epoch_temperatures == (0.25, 1.5)
    assert again.sample.prompt == cfg.sample.prompt


def test_dump_of_defaults_loads_back_equal(tmp_path):
    out = tmp_path / "defaults.yaml"
    Config().dump(out)
    assert load_config(out) == Config()


def test_base_mapping_instead_of_a_file():
    cfg = load_config(base={"model": {"units": 7}}, overrides=["model.layers=3"])
    assert (cfg.model.units, cfg.model.layers) == (7, 3)


def test_replace_swaps_a_section():
    cfg = Config().replace(data=DataConfig(path="x.txt"))
    assert cfg.data.path == "x.txt"
    assert cfg.model == Config().model


@pytest.mark.parametrize("name", ["tiny.yaml", "base.yaml", "quick.yaml", "finetune.yaml"])
def test_shipped_configs_load(name):
    path = REPO_ROOT / "configs" / name
    if not path.is_file():
        pytest.skip(f"configs/{name} is not in the repository yet")
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # A shipped config must survive the dump/load round trip a run dir relies on.
    assert load_config(base=cfg.to_dict()) == cfg


def test_tiny_config_is_small():
    path = REPO_ROOT / "configs" / "tiny.yaml"
    cfg = load_config(Path(path))
    assert cfg.windows.maxlen <= 64
    assert cfg.model.units <= 64


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("600", 600.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("2.5m", 150.0),
    ],
)
def test_max_time_takes_seconds_or_a_duration(text, seconds):
    assert load_config(None, [f"train.max_time={text}"]).train.max_time == seconds


@pytest.mark.parametrize("text", ["10x", "m", "-5m", "ten minutes"])
def test_a_bad_duration_names_the_key_and_the_forms(text):
    with pytest.raises(ConfigError, match=r"train.max_time must be seconds or a duration like"):
        load_config(None, [f"train.max_time={text}"])


def test_precision_auto_is_bf16_on_a_bf16_cpu_without_gpu_and_the_old_key_still_loads():
    from textgen.core.config import precision_policy
    from textgen.core.hardware import cpu_bf16_units

    auto = load_config(None).train
    assert auto.precision == "auto"
    assert precision_policy(auto) == ("mixed_bfloat16" if cpu_bf16_units() else "float32")
    assert precision_policy(auto, gpus=1) == "float32"  # not measured on a GPU: the safe policy
    forced = load_config(None, ["train.precision=mixed_bfloat16"]).train
    assert precision_policy(forced) == "mixed_bfloat16"
    # A run dir saved before the key was renamed (train.mixed_precision) still loads.
    saved = load_config(None, (), base={"train": {"mixed_precision": "mixed_float16"}})
    assert saved.train.precision == "mixed_float16"


@pytest.mark.parametrize(
    "flags, units",
    [
        ("fpu sse avx2 avx512f", ()),
        ("fpu avx512f avx512_bf16 avx512_vnni", ("avx512_bf16",)),
        ("fpu avx512_bf16 amx_bf16 amx_tile", ("avx512_bf16", "amx_bf16")),
    ],
)
def test_bf16_units_are_read_from_the_cpu_flags(flags, units):
    from textgen.core.hardware import cpu_bf16_units

    cpuinfo = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\n"
    assert cpu_bf16_units(cpuinfo) == units


# --- memory estimate --------------------------------------------------------------------------

GIB = 1 << 30


@pytest.mark.parametrize(
    "overrides",
    [[], ["model.units=512"], ["model.layers=3"], ["model.units=512", "model.layers=3"]],
)
@pytest.mark.parametrize("config", ["base.yaml", "tiny.yaml"])
def test_normal_configs_fit_a_24_gib_machine(config, overrides):
    from textgen.core.config import check_fits_in_memory

    cfg = load_config(REPO_ROOT / "configs" / config, overrides)
    check_fits_in_memory(cfg, 200, available_bytes=24 * GIB)  # no error
    check_fits_in_memory(cfg, available_bytes=24 * GIB)  # before indexing: a lower bound


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.units=100000000", "model.units"),
        ("model.layers=1000000", "model.layers"),
        ("model.embedding_dim=100000000", "model.embedding_dim"),
        ("train.batch_size=10000000", "train.batch_size"),
    ],
)
def test_a_model_that_cannot_fit_is_refused_naming_the_key(override, key):
    from textgen.core.config import check_fits_in_memory

    cfg = load_config(REPO_ROOT / "configs" / "base.yaml", [override])
    with pytest.raises(ConfigError) as e:
        check_fits_in_memory(cfg, 100, available_bytes=24 * GIB)
    assert e.value.where == key
    assert f"lower {key}" in e.value.what and "GB" in e.value.what
