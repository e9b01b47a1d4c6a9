"""Bad input found on a fresh machine: each is one line on stderr, a non-zero exit and nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clitools import cli, one_line_error

PLAIN_TEXT = "hello world, this is a note and not a checkpoint\n"  # torch's safe loader: KeyError 101


def _one_line_error(proc) -> str:
    return one_line_error(proc, code=None)


@pytest.mark.parametrize("tool", [("ternarylm.cli.evaluate",), ("ternarylm.cli.generate",),
                                  ("ternarylm.export.cli", "onnx")])
def test_plain_text_file_as_checkpoint(tool, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text(PLAIN_TEXT)
    out = tmp_path / "export"
    extra = ["--out", out] if tool[-1] == "onnx" else []
    proc = cli(*tool, notes, *extra, check=False)
    line = _one_line_error(proc)
    assert "notes.txt" in line and "not a readable checkpoint" in line and "ternary-train" in line, line
    assert proc.stdout == "", proc.stdout  # not even the export progress label
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.fixture
def few_words(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("Tom saw a cat.\n")
    return path


def _train_too_little(out, data, *extra):
    proc = cli("ternarylm.cli.train", "--out", out, "--data", data, "--preset", "tiny", "--seq-len", "64",
               "--no-progress", "--threads", "1", *extra, check=False)
    line = _one_line_error(proc)
    assert "fewer than one sequence" in line and "--seq-len" in line, line


def test_train_on_too_little_data_writes_nothing(tmp_path, few_words):
    out = tmp_path / "run"
    _train_too_little(out, few_words)
    assert not out.exists(), sorted(map(str, out.rglob("*")))


def test_train_on_too_little_data_keeps_what_was_there(tmp_path, few_words):
    out = tmp_path / "run"
    (out / "data").mkdir(parents=True)
    (out / "notes.md").write_text("mine")
    (out / "data" / "corpus.txt").write_text("mine too")
    _train_too_little(out, few_words)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["data", "data/corpus.txt", "notes.md"]


def test_refused_overwrite_keeps_the_old_run(tmp_path, tiny_run, few_words):
    """--overwrite deletes the old run only once the new one's setup has passed its checks."""
    out = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    _train_too_little(out, few_words, "--overwrite")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    assert (out / "ckpt.pt").is_file() and (out / "metrics.jsonl").is_file()
