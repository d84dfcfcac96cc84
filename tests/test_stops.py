"""Stop strings, stopping at end-of-text, and `sample` on a documents run."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from run_fixtures import make_run

from textgen.core.errors import TextgenError
from textgen.generation.generate import Generator
from textgen.generation.stops import StopScanner

NAMES = "\n".join(["Ada", "Bert", "Cleo", "Dara", "Emil", "Faye", "Gus", "Hana"] * 40) + "\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A lines run trained on a short list of names."""
    path = tmp_path_factory.mktemp("docs") / "run"
    return make_run(path, NAMES, index=True, steps=200, overrides=("data.documents=lines",))


@pytest.fixture(scope="module")
def generator(run: Path) -> Generator:
    return Generator.from_run(run)


def test_scanner_holds_back_a_possible_stop_across_chunks() -> None:
    scanner = StopScanner(["END"])
    assert scanner.feed("abcE") == ("abc", None)
    assert scanner.feed("Nd") == ("ENd", None)
    assert scanner.feed("xEN") == ("x", None)
    assert scanner.feed("Dmore") == ("", 1)  # the stop ends 1 char into this text


def test_each_sample_is_one_document(generator: Generator) -> None:
    samples = generator.samples(length=60, num_samples=8, seed=1, temperature=0.5)
    assert all(s.stopped == "end" and "\n" not in s.text and s.text for s in samples)
    assert all(s.tokens == len(s.text) + 1 for s in samples)  # chars + end-of-text
    going = generator.samples(length=60, num_samples=2, seed=1, temperature=0.5,
                              stop_at_end=False)  # fmt: skip
    assert all(s.stopped == "length" and s.text.count("\n") >= 3 for s in going)
    assert going[0].text.startswith(samples[0].text + "\n")  # the same seed, then more names


def test_stop_strings_stop_rows_independently(generator: Generator) -> None:
    free = generator.samples(length=40, num_samples=6, seed=2, stop_at_end=False)
    stopped = generator.samples(length=40, num_samples=6, seed=2, stop_at_end=False, stop=["a"])
    for before, after in zip(free, stopped, strict=True):
        if "a" in before.text:
            assert after.stopped == "stop" and after.text == before.text[: before.text.index("a")]
            assert after.tokens == before.text.index("a") + 1
        else:
            assert after.stopped == "length" and after.text == before.text
    chunks = list(generator.stream(length=40, num_samples=6, seed=2, stop_at_end=False,
                                   stop=["a"], chunk_size=3))  # fmt: skip
    assert ["".join(c[i] for c in chunks) for i in range(6)] == [s.text for s in stopped]


def test_bad_stops_are_refused(generator: Generator) -> None:
    with pytest.raises(TextgenError, match="at most 8 stop strings"):
        generator.samples(stop=[str(i) for i in range(9)])
    with pytest.raises(TextgenError, match="at most 64 characters"):
        generator.samples(stop=["x" * 65])


def test_stream_run_samples_exactly_as_before(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", NAMES, steps=50)  # a tokenizer file with no end-of-text
    generator = Generator.from_run(run)
    assert generator.end_of_text is None
    texts = generator.generate(length=50, num_samples=2, seed=5)
    samples = generator.samples(length=50, num_samples=2, seed=5)
    assert [s.text for s in samples] == texts and all(s.stopped == "length" for s in samples)
    assert samples[0].text.startswith(generator.generate(length=20, seed=5)[0])


def test_sample_cli_prints_documents_with_novelty(run: Path) -> None:
    proc = run_cli("textgen.sample", run, "--num-samples", 5, "--seed", 3, "--novelty",
                   "--temperature", 0.5)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 5 and all(lines)
    reports = [x for x in proc.stderr.splitlines() if x.startswith("textgen: novelty: sample")]
    assert len(reports) == 5 and all("longest copied span" in r for r in reports)
    assert "samples are not training documents" in proc.stderr


def test_sample_cli_bad_stop_is_one_line(run: Path) -> None:
    proc = run_cli("textgen.sample", run, "--stop", "x" * 65)
    assert_one_line_error(proc, "at most 64 characters", "--stop", empty_stdout=True)
