"""What README.md shows works: its commands, its Python snippets, its names; every shipped config.

README paths are relative to a checkout, so nothing is rewritten: each command runs in a
sandbox laid out like one (`checkout`), whose parts are small stand-ins:
- `configs/`: copied from the repository, unchanged.
- `data/kjv.txt`: the first ~60 kB of the real corpus; `my_texts/`, `books/*.txt`, `other.txt`:
  more of it, for the README's examples of other corpora.
- `runs/base`: what `make train` makes (`python -m textgen.train configs/base.yaml`), with
  `train.max_steps=3`; `exported/base`: that run exported; `index/`: their index.
- `docs/`: empty, for `--plot docs/...`.
Each command gets a fresh directory linking those parts (but a command that writes runs, an
index or exports gets its own empty `runs/`, `index/` or `exported/`: nothing to resume or
overwrite), with the small budget of BUDGET appended (the last value of an option or key wins;
a sentencepiece command also gets SP_BUDGET). The commands run in this process as their
`python -m` entry does (`cli.run(module.main, args)`), to spare a TensorFlow import each;
`serve` runs as a process, asked once. A README command naming a module that no longer
exists, or exiting non-zero, fails its test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cli_env

from textgen.core.config import load_config

README = REPO_ROOT / "README.md"
CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))
# Programs of README code blocks that are not run here, and why.
NOT_RUN = {
    "make": "`make train` is a 10-minute run and `make test` this suite; runs/base is what "
    "`make train` makes, with train.max_steps=3",
    "curl": "asks a server: the README's serve command is started and asked once instead",
    "saved_model_cli": "TensorFlow's own tool; the README's Python snippet loads the export",
}
# Appended to each command of a module: a small budget, or a free port.
BUDGET = {
    "textgen.train": ["train.max_steps=3"],
    "textgen.index": [],
    "textgen.sample": ["--length", "20"],
    "textgen.evaluate": [],
    "textgen.compare": ["--sizes", "0.05", "--steps", "1"],
    "textgen.export": [],
    "textgen.serve": ["--port", "0"],
}
SP_BUDGET = ["data.sp_vocab_size=500"]  # 60 kB of text cannot hold the README's 4000 pieces
# What a command of a module writes: its sandbox gets its own (at first empty) dirs for these.
WRITERS = {"textgen.train": ("runs", "index"), "textgen.index": ("index",),
           "textgen.export": ("exported",)}  # fmt: skip
CORPUS_BYTES = 60_000  # data/kjv.txt: carried streams of 16 x 65 ids, and a 3 kB val split
SHELL_BLOCKS = ("", "sh", "bash", "shell", "console")


@dataclasses.dataclass(frozen=True)
class Command:
    """A `python -m textgen.X ...` or `textgen X ...` line of a README code block."""

    line: int  # README line number (of its first line, if continued)
    text: str  # as printed
    module: str  # the textgen.X module it runs
    args: tuple[str, ...]  # its arguments, comments dropped

    def __str__(self) -> str:
        return f"L{self.line}:{self.module.removeprefix('textgen.')}"


def code_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, line number of the first line, lines) of each fenced block of Markdown."""
    lang, start, lines = None, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            if lang is None:
                lang, start, lines = line[3:].strip(), number + 1, []
            else:
                yield lang, start, lines
                lang = None
        elif lang is not None:
            lines.append(line)


def logical_lines(start: int, lines: list[str]) -> Iterator[tuple[int, str]]:
    """Lines with `\\` continuations joined, each with its first line's number."""
    first, parts = start, []
    for number, line in enumerate(lines, start=start):
        if not parts:
            first = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        yield first, " ".join([*parts, line]).strip()
        parts = []
    if parts:
        yield first, " ".join(parts).strip()


def shell_lines(markdown: str) -> tuple[list[Command], list[tuple[int, str]]]:
    """The textgen commands of shell code blocks, and (line, program) of the NOT_RUN lines."""
    commands, skipped = [], []
    for lang, start, lines in code_blocks(markdown):
        if lang not in SHELL_BLOCKS:
            continue
        for number, line in logical_lines(start, lines):
            match = re.match(r"(python3? -m (textgen\S*)|textgen) ", line)
            if match is None:
                program = line.split(maxsplit=1)[0] if line else ""
                if program in NOT_RUN:
                    skipped.append((number, program))
                continue  # output shown in a block, not a command
            words = shlex.split(line, comments=True)
            module, args = (words[2], words[3:]) if match[2] else ("textgen", words[1:])
            if module == "textgen" and args:  # the console script or `python -m textgen`
                module, args = f"textgen.{args[0]}", args[1:]
            commands.append(Command(number, line, module, tuple(args)))
    return commands, skipped


README_COMMANDS, README_SKIPPED = shell_lines(README.read_text(encoding="utf-8"))


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """Runs the body in `path` (README paths are relative to a checkout)."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_entry(module: str, args: list[str], cwd: Path) -> int:
    """What `python -m module args` runs, in this process: cli.run(main); its exit status."""
    from textgen import cli

    try:
        entry = importlib.import_module(module)
    except ModuleNotFoundError as e:
        pytest.fail(f"{module} does not exist ({e})")
    assert 'if __name__ == "__main__":' in inspect.getsource(entry), f"{module} has no __main__"
    with working_dir(cwd):
        try:
            cli.run(entry.main, args)
        except SystemExit as e:
            return e.code
    return 0  # cli.run always exits; kept for type checkers


def run_ok(module: str, *args: str, cwd: Path, capfd=None) -> str:
    """run_entry that must exit 0; returns its stdout when `capfd` captures it."""
    code = run_entry(module, list(args), cwd)
    out, err = capfd.readouterr() if capfd is not None else ("", "")
    assert code == 0, f"{module} {' '.join(args)} exited {code}:\n{err[-3000:]}"
    return out


def cut(text: str, size: int) -> str:
    """The whole lines of `text` within its first `size` characters."""
    return text[: text.rfind("\n", 0, size) + 1]


@pytest.fixture(scope="session")
def checkout(tmp_path_factory) -> Path:
    """A sandbox laid out like a checkout after `make train` (see the module docstring)."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(REPO_ROOT / "configs", root / "configs")
    kjv = (REPO_ROOT / "data" / "kjv.txt").read_text(encoding="utf-8")
    parts = {
        "data/kjv.txt": (0, CORPUS_BYTES), "my_texts/a.txt": (1, 20_000),
        "my_texts/b.txt": (2, 20_000), "books/one.txt": (3, 20_000),
        "books/two.txt": (4, 20_000), "other.txt": (5, 5_000), "my.txt": (6, 20_000),
    }  # fmt: skip
    for name, (part, size) in parts.items():
        (root / name).parent.mkdir(exist_ok=True)
        start = kjv.find("\n", part * 100_000) + 1
        (root / name).write_text(cut(kjv[start:], size), encoding="utf-8")
    run_ok("textgen.train", "configs/base.yaml", *BUDGET["textgen.train"], cwd=root)
    run_ok("textgen.export", "runs/base", "exported/base", cwd=root)
    # `make finetune DATA=my.txt`: runs/mine, fine-tuned from runs/base, for the commands after it
    run_ok("textgen.train", "configs/finetune.yaml", *BUDGET["textgen.train"], cwd=root)
    return root


def sandbox(checkout: Path, where: Path, own: tuple[str, ...] = (), *, source=False) -> Path:
    """`where` linked to the checkout's parts, but for the dirs in `own` (its writes); with
    `source`, its own runs/ holds a link to runs/base (fine-tuning reads it, never writes it)."""
    for name in ("configs", "data", "my_texts", "books", "other.txt", "my.txt", "index", "runs",
                 "exported"):  # fmt: skip
        if name not in own:
            (where / name).symlink_to(checkout / name)
    if "runs" in own and source:
        (where / "runs").mkdir()
        (where / "runs" / "base").symlink_to(checkout / "runs" / "base")
    (where / "docs").mkdir()
    return where


def test_the_readme_shows_every_command_and_the_parser_finds_them():
    modules = {c.module for c in README_COMMANDS}
    assert {"textgen.sample", "textgen.evaluate", "textgen.train", "textgen.compare",
            "textgen.export", "textgen.serve"} <= modules  # fmt: skip
    assert set(BUDGET) >= modules, "a new README command needs its budget in BUDGET"
    assert {program for _, program in README_SKIPPED} == set(NOT_RUN)
    continued = [c for c in README_COMMANDS if "\\" in c.text]
    assert not continued, "a continued line was not joined"


def test_the_parser_joins_continued_lines_and_drops_comments_and_output():
    markdown = "\n".join([
        "text", "```", "python -m textgen.compare configs/base.yaml --sizes 0.25 \\",
        "    --steps 5   # a comment", "textgen train configs/tiny.yaml data.path='a b/*.txt'",
        "make test", "textgen: error: some output (here)", "And God said.", "```", "```python",
        "python -m textgen.sample runs/base", "```",
    ])  # fmt: skip
    commands, skipped = shell_lines(markdown)
    assert [(c.line, c.module, c.args) for c in commands] == [
        (3, "textgen.compare", ("configs/base.yaml", "--sizes", "0.25", "--steps", "5")),
        (5, "textgen.train", ("configs/tiny.yaml", "data.path=a b/*.txt")),
    ]
    assert skipped == [(6, "make")]


def test_a_command_whose_module_is_gone_fails(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"textgen\.generate does not exist"):
        run_entry("textgen.generate", [], tmp_path)


@pytest.mark.parametrize("command", README_COMMANDS, ids=str)
def test_readme_command_runs(command: Command, checkout, tmp_path, capfd):
    config = next((a for a in command.args if a.endswith(".yaml")), None)
    fine_tunes = config is not None and load_config(checkout / config).train.init_from is not None
    where = sandbox(checkout, tmp_path, WRITERS.get(command.module, ()), source=fine_tunes)
    args = [*command.args, *BUDGET.get(command.module, [])]
    if "data.tokenizer=sentencepiece" in args:
        args += SP_BUDGET
    if command.module == "textgen.serve":
        serve_once(args, where)
        return
    code = run_entry(command.module, args, where)
    _, err = capfd.readouterr()
    assert code == 0, f"README line {command.line} failed: {command.text}\n{err[-3000:]}"


def serve_once(args: list[str], cwd: Path) -> None:
    """Starts `python -m textgen.serve args`, asks /healthz and a short /v1/generate, stops it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "textgen.serve", *args], cwd=cwd, env=cli_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving "), f"{line}{proc.stderr.read()}"
        url = line.split(" on ")[1].split()[0].rstrip("/")
        with urllib.request.urlopen(f"{url}/healthz", timeout=60) as answer:
            assert answer.status == 200
        body = json.dumps({"prompt": "And God said", "length": 10, "seed": 5}).encode()
        ask = urllib.request.Request(f"{url}/v1/generate", body,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(ask, timeout=60) as answer:
            assert json.load(answer)["tokens"] == [10]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def python_blocks() -> list[str]:
    """The README's ```python blocks."""
    text = README.read_text(encoding="utf-8")
    return ["\n".join(lines) for lang, _, lines in code_blocks(text) if lang == "python"]


@pytest.mark.parametrize("number", range(len(python_blocks())))
def test_readme_python_snippet_runs(number, checkout, tmp_path, capsys):
    where = sandbox(checkout, tmp_path)
    with working_dir(where):
        exec(compile(python_blocks()[number], f"README.md python block {number}", "exec"), {})
    assert capsys.readouterr().out.strip()  # every snippet prints what it made


def test_every_textgen_name_the_readme_mentions_exists():
    names = set(re.findall(r"`(textgen(?:\.\w+)+)", README.read_text(encoding="utf-8")))
    assert names, "the README names no textgen module"
    for name in sorted(names):
        parts = name.split(".")
        for cut_at in range(len(parts), 0, -1):
            try:
                target = importlib.import_module(".".join(parts[:cut_at]))
                break
            except ModuleNotFoundError:
                continue
        for attribute in parts[cut_at:]:
            assert hasattr(target, attribute), f"README names {name}, which does not exist"
            target = getattr(target, attribute)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_config_indexes_trains_samples_evaluates_compares_and_exports(
    config: Path, checkout, tmp_path, capfd
):
    """The slowest test here: the whole pipeline at a small size, with each config's own
    structure (windows, carried state, layers, batch) and its data path and units made small."""
    fine_tunes = load_config(config).train.init_from is not None
    where = sandbox(checkout, tmp_path, ("runs", "exported", "index"), source=fine_tunes)
    name = config.stem
    small = ["data.path=data/kjv.txt", f"train.out_dir=runs/{name}-small",
             f"data.index_dir=index/{name}-small"]  # fmt: skip
    if not fine_tunes:  # a fine-tuned model has its source's shape
        small += ["model.units=32", "model.embedding_dim=16"]
    cfg = f"configs/{config.name}"
    run_ok("textgen.index", cfg, *small, cwd=where, capfd=capfd)
    run_ok("textgen.train", cfg, *small, "train.max_steps=3", cwd=where, capfd=capfd)
    run = f"runs/{name}-small"
    assert run_ok("textgen.sample", run, "--length", "20", "--seed", "1", cwd=where, capfd=capfd)
    scores = json.loads(run_ok("textgen.evaluate", run, cwd=where, capfd=capfd))
    assert scores["bpc"] > 0 and scores["method"] == "streamed"
    report = tmp_path / "compare.json"
    run_ok("textgen.compare", cfg, "data.path=data/kjv.txt", "--sizes", "0.05", "--steps", "1",
           "--available-mb", "1", "--json", str(report), cwd=where, capfd=capfd)  # fmt: skip
    compared = json.loads(report.read_text(encoding="utf-8"))
    [row] = compared["rows"]
    assert row["ids_train_peak_mb"] > 0 and row["onehot_status"] == "skipped"  # 1 MB: no room
    overridden = {o["key"]: o for o in compared["overridden"]}
    if load_config(config).windows.carry_state:
        assert overridden["windows.carry_state"]["used"] is False
    run_ok("textgen.export", run, f"exported/{name}-small", cwd=where, capfd=capfd)
    assert (where / "exported" / f"{name}-small" / "saved_model.pb").is_file()
