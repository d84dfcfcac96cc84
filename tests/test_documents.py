"""Documents in the index (`data.documents`), the end-of-text id, and the novelty suffix array."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli, write_config, write_corpus

from textgen.core.config import load_config
from textgen.core.errors import ConfigError, TextgenError
from textgen.data.corpus import index_corpus
from textgen.data.novelty import NoveltyIndex
from textgen.data.suffix_array import is_built
from textgen.data.tokenizers import CharTokenizer, SentencePieceTokenizer, load_tokenizer

NAMES = ["Ada", "Bert", "Cleo", "Dara", "Emil", "Faye", "Gus", "Hana", "Ivo", "June"] * 3


def _cfg(tmp_path: Path, corpus: Path, mode: str, *more: str):
    words = [f"data.path={corpus}", f"data.index_dir={tmp_path / 'index'}"]
    return load_config(None, [*words, f"data.documents={mode}", "data.val_fraction=0.1", *more])


def _ids(index) -> np.ndarray:
    return np.concatenate([np.asarray(index.train[:]), np.asarray(index.val[:])])


def test_lines_end_each_document_with_end_of_text(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path, "\n".join(NAMES[:4]) + "\n\n  \r\nZed\r\n")
    index, built = index_corpus(_cfg(tmp_path, corpus, "lines").data)
    eot = index.tokenizer.end_of_text_id
    assert built and eot == index.vocab_size - 1
    ids = _ids(index)
    docs = [index.tokenizer.decode(d) for d in np.split(ids, np.flatnonzero(ids == eot) + 1)]
    assert docs[:-1] == ["Ada", "Bert", "Cleo", "Dara", "Zed"] and docs[-1] == ""
    meta = index.meta["documents"]
    assert meta["mode"] == "lines" and meta["count"] == 5
    assert meta["length_quantiles"]["p0"] == 3 and meta["length_quantiles"]["p100"] == 4


def test_paragraphs_and_files(tmp_path: Path) -> None:
    write_corpus(tmp_path / "c", "one\ntwo\n\n\nthree\n", name="a.txt")
    write_corpus(tmp_path / "c", "four\n\n", name="b.txt")
    para = index_corpus(_cfg(tmp_path, tmp_path / "c", "paragraphs").data)[0]
    eot = para.tokenizer.end_of_text_id
    assert para.tokenizer.decode(_ids(para)) == "one\ntwothreefour"
    assert (_ids(para) == eot).sum() == 3 == para.meta["documents"]["count"]
    files = index_corpus(_cfg(tmp_path, tmp_path / "c", "files").data)[0]  # a changed mode
    ids = _ids(files)
    assert files.meta["documents"]["count"] == 2 and (ids == eot).sum() == 2
    assert files.tokenizer.decode(ids[: np.flatnonzero(ids == eot)[0]]) == "one\ntwo\n\n\nthree"


def test_a_changed_mode_rebuilds_and_stream_is_unchanged(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path, "\n".join(NAMES) + "\n")
    stream, _ = index_corpus(_cfg(tmp_path, corpus, "stream").data)
    assert stream.tokenizer.end_of_text_id is None and "documents" not in stream.meta
    assert "documents" not in stream.meta["settings"]  # older stream indexes stay current
    assert stream.tokenizer.decode(_ids(stream)) == "\n".join(NAMES) + "\n"
    assert not json.loads((tmp_path / "index" / "tokenizer.json").read_text()).get("end_of_text")
    lines, built = index_corpus(_cfg(tmp_path, corpus, "lines").data)
    assert built and lines.meta["documents"]["count"] == len(NAMES)
    _, built = index_corpus(_cfg(tmp_path, corpus, "lines").data)
    assert not built


def test_char_tokenizer_without_end_of_text_loads_as_before(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text('{"kind": "char", "chars": "ab\\n"}')
    old = load_tokenizer(tmp_path, "char")
    assert old.vocab_size == 4 and old.end_of_text_id is None
    assert old.encode("ab\n").tolist() == [2, 3, 1]
    new = CharTokenizer("ab\n", end_of_text=True)
    assert new.encode("ab\n").tolist() == [2, 3, 1] and new.end_of_text_id == 4
    assert new.decode([2, 4, 3]) == "ab" and new.vocabulary_key != old.vocabulary_key
    new.save(tmp_path)
    assert load_tokenizer(tmp_path, "char").end_of_text_id == 4


def test_sentencepiece_reserves_eos(sp_lines: list[str]) -> None:
    plain = SentencePieceTokenizer.train(sp_lines, vocab_size=400)
    docs = SentencePieceTokenizer.train(sp_lines, vocab_size=400, end_of_text=True)
    assert plain.end_of_text_id is None and docs.end_of_text_id == 1
    text = sp_lines[0]
    assert 1 not in docs.encode(text).tolist()
    assert docs.decode([*docs.encode(text).tolist(), 1]) == text


def test_bad_documents_value_and_empty_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'stream', 'lines', 'paragraphs', 'files'"):
        load_config(None, ["data.documents=sentences"])
    corpus = write_corpus(tmp_path, "\n \n\n")
    data = {"path": str(corpus), "index_dir": str(tmp_path / "i"), "documents": "lines"}
    config = write_config(tmp_path, {"data": data})
    proc = run_cli("textgen.index", config)
    assert_one_line_error(proc, "no documents", str(corpus))


def test_index_cli_prints_document_counts(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path, "\n".join(NAMES) + "\n")
    data = {"path": str(corpus), "index_dir": str(tmp_path / "i"), "documents": "lines"}
    config = write_config(tmp_path, {"data": data, "windows": {"maxlen": 4, "step": 4}})
    proc = run_cli("textgen.index", config)
    assert proc.returncode == 0, proc.stderr
    assert "30 documents (lines; length in chars: median 4" in proc.stdout


def _brute_longest(train: str, text: str) -> int:
    return max(
        (j - i for i in range(len(text)) for j in range(i + 1, len(text) + 1)
         if text[i:j] in train),
        default=0,
    )  # fmt: skip


@pytest.mark.parametrize("vocab", ["small", "wide"])
def test_novelty_matches_brute_force(tmp_path: Path, vocab: str) -> None:
    rng = np.random.default_rng(0)
    letters = "abcde" if vocab == "small" else "".join(chr(0x4E00 + i) for i in range(300))
    body = "".join(rng.choice(list(letters), size=3000))  # wide: 2-byte ids in text.bin
    corpus = write_corpus(tmp_path, body)
    index = index_corpus(_cfg(tmp_path, corpus, "stream").data)[0]
    train = index.tokenizer.decode(np.asarray(index.train[:]))
    novelty = NoveltyIndex.open(index)
    assert is_built(index) and (novelty.single == 256) == (vocab == "small")  # wide: 2-byte codes
    for _ in range(5):
        sample = "".join(rng.choice(list(letters), size=40))
        report = novelty.report(sample)
        assert report["longest"] == _brute_longest(train, sample)
        at = report["longest_at"]
        assert train[at : at + report["longest"]] == report["longest_text"]
    copied = train[100:160]
    assert novelty.report(copied)["ngrams_found"] == 1.0
    # Copied stretches are located in the sample (character offsets): 25 and 30 chars copied
    # around 10 new ones (a letter outside the vocabulary cannot be in the training text).
    new = "Z" * 10 if vocab == "small" else "Ω" * 10
    sample = train[500:525] + new + train[900:930] + "Z"
    report = novelty.report(sample)
    assert report["copied_spans"] == [[0, 25], [35, 65]]
    start, end = report["longest_span"]
    assert (start, end) == (35, 65) and sample[start:end] == report["longest_text"]
    assert novelty.report(train[100:110])["copied_spans"] == []  # shorter than an n-gram
    novelty.close()


def test_novelty_whole_documents_and_rebuild(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path, "\n".join(NAMES) + "\n")
    index = index_corpus(_cfg(tmp_path, corpus, "lines").data)[0]
    novelty = NoveltyIndex.open(index)
    assert novelty.report("Ada")["in_training"]  # the first document
    assert novelty.report("Cleo")["in_training"]
    assert not novelty.report("Cle")["in_training"]  # a prefix, not a document
    assert not novelty.report("AdaBert")["in_training"]
    novelty.close()
    corpus.write_text("Kim\nLou\n" * 10)
    index, built = index_corpus(_cfg(tmp_path, corpus, "lines").data)
    assert built and not is_built(index)  # the rebuilt index has no stale suffix array
    assert NoveltyIndex.open(index).report("Lou")["in_training"]


def test_novelty_of_a_gone_index_says_how_to_rebuild(tmp_path: Path) -> None:
    from run_fixtures import make_run

    from textgen.run.rundir import RunDir

    run = make_run(tmp_path / "run", "\n".join(NAMES) + "\n", index=True, steps=1,
                   overrides=("data.documents=lines",))  # fmt: skip
    shutil.rmtree(tmp_path / "run-index")
    with pytest.raises(TextgenError, match="index, which is gone; rebuild it with"):
        NoveltyIndex.for_run(RunDir(run))
