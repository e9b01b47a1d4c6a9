"""Documents from local files and Hugging Face datasets, streamed: a corpus never sits in memory.

Local inputs: ``.txt`` files (one document per paragraph: blank lines separate documents),
``.jsonl`` (or ``.json`` in JSON-lines form) with a ``"text"`` field per line, and folders (read
recursively in sorted order, ``.txt`` and ``.jsonl`` only, hidden files skipped). Paths are checked
when ``iter_documents`` is called; file contents as they are read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from ternarylm.data.errors import DataError, first_line

TEXT_SUFFIXES = (".txt",)
JSONL_SUFFIXES = (".jsonl", ".json")
FOLDER_SUFFIXES = (".txt", ".jsonl")  # a folder's .json files are often metadata, not corpora
JSONL_HINT = 'each line must be one object like {"text": "..."}'


def iter_documents(paths: list[str | Path]) -> Iterator[str]:
    """The non-blank documents of ``paths`` in order; ``DataError`` for unusable input."""
    files = resolve_files(paths)
    return _documents(files)


def resolve_files(paths: list[str | Path]) -> list[Path]:
    """The files ``paths`` name, folders expanded; ``DataError`` for a missing or unusable path."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DataError("no data paths given; pass .txt/.jsonl files or folders")
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise DataError(f"data path {p} does not exist; check the spelling")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in FOLDER_SUFFIXES
                           and f.is_file() and not _hidden(f.relative_to(p)))
            if not found:
                raise DataError(f"folder {p} has no .txt or .jsonl files; put the corpus there "
                                "as .txt or .jsonl")
            files.extend(found)
        elif p.suffix.lower() in TEXT_SUFFIXES + JSONL_SUFFIXES:
            files.append(p)
        else:
            raise DataError(f"unsupported data file {p} ({p.suffix or 'no suffix'}); use .txt, or "
                            '.jsonl with one {"text": "..."} object per line')
    return files


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def fingerprint_sources(paths: list[str | Path]) -> str:
    """sha256 over (path, size, mtime) of every input file: a token-cache key that reads nothing."""
    h = hashlib.sha256()
    for f in resolve_files(paths):
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _documents(files: list[Path]) -> Iterator[str]:
    n = 0
    for f in files:
        read = _jsonl_documents if f.suffix.lower() in JSONL_SUFFIXES else _txt_documents
        for doc in read(f):
            n += 1
            yield doc
    if n == 0:
        names = ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
        raise DataError(f"no text in {names}: the data is empty or whitespace only; "
                        "pass files with text")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline); ``DataError`` at the first non-UTF-8 byte."""
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path} is not UTF-8 (bad byte at offset {offset + e.start}, line "
                                f"{number}); convert it: iconv -f <its encoding> -t utf-8 "
                                f"{path.name} > {path.stem}.utf8{path.suffix}") from None
            if number == 1:
                line = line.removeprefix("\ufeff")
            offset += len(raw)
            yield number, line.rstrip("\r\n")


def _txt_documents(path: Path) -> Iterator[str]:
    """Paragraphs: runs of non-blank lines, separated by blank lines."""
    para: list[str] = []
    for _, line in _lines(path):
        if line.strip():
            para.append(line.rstrip())
        elif para:
            yield "\n".join(para)
            para = []
    if para:
        yield "\n".join(para)


def _jsonl_documents(path: Path) -> Iterator[str]:
    """The ``"text"`` field of every line; blank lines and blank texts are skipped."""
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number} is not valid JSON ({e.msg})"
                            f"{_array_hint(number, line)}; {JSONL_HINT}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f'{path}:{number} has no string "text" field'
                            f"{_array_hint(number, line)}; {JSONL_HINT}")
        if record["text"].strip():
            yield record["text"]


def _array_hint(number: int, line: str) -> str:
    if number == 1 and line.lstrip().startswith("["):
        return " (it looks like a JSON array, not JSON lines)"
    return ""


def iter_hf_dataset(name: str, split: str = "train", text_field: str = "text",
                    config: str | None = None, streaming: bool = True) -> Iterator[str]:
    """``text_field`` of each row of a Hugging Face dataset; ``DataError`` if it cannot be read."""
    try:
        import datasets
    except ImportError:
        raise DataError("reading a Hugging Face dataset needs the datasets package: "
                        "pip install 'ternarylm[datasets]'") from None
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as e:  # noqa: BLE001 -- network, auth, name, split: one line for the user
        raise DataError(f"cannot load Hugging Face dataset {name!r} (split {split!r}): "
                        f"{first_line(e)}; offline, download it elsewhere and pass local "
                        ".txt/.jsonl files") from None
    columns = getattr(ds, "column_names", None)
    if columns is not None and text_field not in columns:
        raise DataError(f"dataset {name!r} has no field {text_field!r}; "
                        f"choose one of: {', '.join(columns)}")
    return _hf_texts(ds, name, text_field)


def _hf_texts(ds, name: str, text_field: str) -> Iterator[str]:
    it = iter(ds)
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 -- a stream can fail mid-way when the network drops
            raise DataError(f"reading Hugging Face dataset {name!r} failed: {first_line(e)}; "
                            "check the connection or use local files") from None
        if text_field not in row:
            raise DataError(f"dataset {name!r} has no field {text_field!r}; "
                            f"choose one of: {', '.join(row)}")
        text = row[text_field]
        if isinstance(text, str) and text.strip():
            yield text
