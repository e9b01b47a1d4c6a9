import json
import sys
import types

import pytest

from ternarylm.data import (
    DataError,
    fingerprint_sources,
    iter_documents,
    iter_hf_dataset,
    synthetic_stories,
)


def test_txt_paragraphs(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes("\ufeffFirst line\r\nstill first\r\n\r\n\r\n  \nSecond\n\nThird  \n".encode())
    assert list(iter_documents([f])) == ["First line\nstill first", "Second", "Third"]


def test_stories_round_trip_through_txt(tmp_path):
    stories = synthetic_stories(30, seed=2)
    (tmp_path / "s.txt").write_text("\n\n".join(stories) + "\n", encoding="utf-8")
    assert list(iter_documents([tmp_path / "s.txt"])) == stories


def test_jsonl_and_json_lines(tmp_path):
    lines = ['{"text": "one"}', "", '{"text": "  "}', '{"text": "two", "n": 2}']
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "b.json").write_text('{"text": "three"}\n')
    docs = iter_documents([tmp_path / "a.jsonl", str(tmp_path / "b.json")])
    assert list(docs) == ["one", "two", "three"]


def test_folder_recursive_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("z")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "a"}) + "\n")
    (tmp_path / "c.txt").write_text("c\n\nd")
    (tmp_path / "meta.json").write_text('{"not": "a corpus"}')
    (tmp_path / "notes.md").write_text("skip me")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("hidden")
    assert list(iter_documents([tmp_path])) == ["a", "z", "c", "d"]


def _error(paths) -> str:
    with pytest.raises(DataError) as e:
        list(iter_documents(paths))
    message = str(e.value)
    assert "\n" not in message
    return message


def test_missing_path_fails_before_iteration(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        iter_documents([tmp_path / "nope.txt"])


def test_folder_without_usable_files(tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    assert "has no .txt or .jsonl files" in _error([tmp_path])


def test_unsupported_suffix(tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    assert "unsupported data file" in _error([tmp_path / "x.csv"])


def test_empty_and_whitespace_files(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    message = _error([tmp_path / "empty.txt", tmp_path / "blank.jsonl"])
    assert "empty.txt" in message and "no text" in message


def test_non_utf8_names_file_and_offset(tmp_path):
    f = tmp_path / "latin.txt"
    f.write_bytes(b"hello\ncaf\xe9\n")
    message = _error([f])
    assert "latin.txt" in message and "offset 9" in message
    assert "iconv" in message and "-t utf-8" in message


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "ok"}\n{oops\n')
    assert "bad.jsonl:2" in _error([f])
    f.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    message = _error([f])
    assert "bad.jsonl:2" in message and '"text"' in message
    f.write_text('[{"text": "an array"}]\n')
    assert "JSON array" in _error([f])


def test_fingerprint_tracks_changes(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    first = fingerprint_sources([tmp_path])
    assert fingerprint_sources([tmp_path]) == first
    f.write_text("one and more")
    assert fingerprint_sources([tmp_path]) != first


def test_hf_dataset_without_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"pip install 'ternarylm\[datasets\]'"):
        iter_hf_dataset("roneneldan/TinyStories")


class _FakeDataset(list):
    column_names = ("text", "id")


def _fake_datasets(monkeypatch, load):
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load))


def test_hf_dataset_network_failure(monkeypatch):
    def load(*args, **kwargs):
        raise ConnectionError("Name or service not known\nsecond line of noise")

    _fake_datasets(monkeypatch, load)
    with pytest.raises(DataError) as e:
        iter_hf_dataset("roneneldan/TinyStories")
    assert "\n" not in str(e.value) and "TinyStories" in str(e.value) and "local" in str(e.value)


def test_hf_dataset_texts_and_missing_field(monkeypatch):
    calls = []

    def load(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        rows = [{"text": "a", "id": 1}, {"text": " ", "id": 2}, {"text": "b", "id": 3}]
        return _FakeDataset(rows)

    _fake_datasets(monkeypatch, load)
    assert list(iter_hf_dataset("x/y", split="validation")) == ["a", "b"]
    assert calls == [("x/y", None, "validation", True)]
    with pytest.raises(DataError, match="no field 'story'; choose one of: text, id"):
        iter_hf_dataset("x/y", text_field="story")
