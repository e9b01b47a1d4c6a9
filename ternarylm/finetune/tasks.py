"""Labelled examples from files: MRPC's TSV files and any sentence / sentence-pair TSV or CSV table.

MRPC (Microsoft Research Paraphrase Corpus) ships ``msr_paraphrase_train.txt`` and
``msr_paraphrase_test.txt``: UTF-8 (often with a BOM), tab-separated, header
``Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String``, one sentence pair per line, Quality 1 =
paraphrase, 0 = not. The strings contain unbalanced double quotes, so the files are read with
``csv.QUOTE_NONE`` (a quote is just a character). GLUE's copy (``train.tsv`` / ``dev.tsv``) has the
same header and is read the same way.

Generic tables (``ternary-finetune classify``): a header row naming the columns; ``--text-cols a`` or
``--text-cols a,b`` (a sentence pair) and ``--label-col c``. The delimiter comes from the extension
(``.tsv`` / ``.txt`` / ``.tab``: tab, read with QUOTE_NONE like GLUE's TSVs; ``.csv``: comma, with
standard CSV quoting) or ``--delimiter``. Labels: when every training label is an integer they are
the class ids ``0..max``; otherwise the distinct strings in sorted order (or ``--labels a,b,c`` to fix
names and order). Dev and test labels must be labels seen in training.

Every mistake is one ``FinetuneError`` line naming the file, the line and the fix.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ternarylm.finetune import FinetuneError

MRPC_COLUMNS = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
MRPC_TEXT_COLUMNS = ("#1 String", "#2 String")
MRPC_LABEL_COLUMN = "Quality"
MRPC_LABELS = ("not_equivalent", "equivalent")  # GLUE's names for 0 and 1
MRPC_TRAIN, MRPC_TEST = "msr_paraphrase_train.txt", "msr_paraphrase_test.txt"
GLUE_MRPC_TRAIN, GLUE_MRPC_DEV = "train.tsv", "dev.tsv"
TAB_EXTENSIONS = (".tsv", ".txt", ".tab")
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


@dataclass
class Example:
    texts: tuple[str, ...]
    label: int
    line: int = 0  # 1-based line in the source file (0: not from a file)


@dataclass
class Split:
    name: str  # train, dev or test
    source: str  # file path, or "<file> (carved: ...)", or a hub name
    examples: list[Example]

    def __len__(self) -> int:
        return len(self.examples)

    def labels(self) -> np.ndarray:
        return np.array([e.label for e in self.examples], np.int64)


@dataclass
class TaskData:
    name: str  # "mrpc" or "classify"
    text_columns: tuple[str, ...]
    label_column: str
    labels: list[str]  # label names; index = class id
    train: Split
    dev: Split
    test: Split | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def splits(self) -> list[Split]:
        return [s for s in (self.train, self.dev, self.test) if s is not None]


# ---- reading tables ----------------------------------------------------------------------------
def resolve_delimiter(path: Path, delimiter: str | None) -> str:
    if delimiter:
        d = DELIMITER_NAMES.get(delimiter.lower(), delimiter)
        if len(d) != 1:
            raise FinetuneError(f"--delimiter {delimiter!r} must be one character (or tab, comma, semicolon, pipe)")
        return d
    ext = path.suffix.lower()
    if ext in TAB_EXTENSIONS:
        return "\t"
    if ext == ".csv":
        return ","
    raise FinetuneError(f"{path}: cannot tell the delimiter from the extension {ext or '(none)'!r}; "
                        "name the file .tsv or .csv, or pass --delimiter tab|comma|...")


def read_rows(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """``(header, [(line, fields), ...])``; blank lines are skipped. Tab files use QUOTE_NONE."""
    path = Path(path)
    if not path.is_file():
        raise FinetuneError(f"{path} does not exist or is not a file")
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    rows = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter, quoting=quoting, strict=quoting != csv.QUOTE_NONE)
            for fields in reader:
                if not fields or all(not x.strip() for x in fields):
                    continue
                rows.append((reader.line_num, fields))
    except UnicodeDecodeError as e:
        raise FinetuneError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except csv.Error as e:
        raise FinetuneError(f"{path}: not a valid {'CSV' if delimiter == ',' else 'delimited'} file ({e}); "
                            "check the quoting or pass --delimiter") from None
    if not rows:
        raise FinetuneError(f"{path} is empty; it needs a header row naming the columns and one row per example")
    (_, header), body = rows[0], rows[1:]
    header = [h.strip() for h in header]
    if not body:
        raise FinetuneError(f"{path} has a header but no examples")
    return header, body


def _column_index(path: Path, header: list[str], columns, fix: str) -> list[int]:
    missing = [c for c in columns if c not in header]
    if missing:
        raise FinetuneError(f"{path}:1: no column {', '.join(repr(c) for c in missing)} in the header "
                            f"({', '.join(repr(h) for h in header)}); {fix}")
    return [header.index(c) for c in columns]


def read_labelled(path: Path, text_columns, label_column: str, delimiter: str, fix: str,
                  required=()) -> list[tuple[tuple[str, ...], str, int]]:
    """``[(texts, raw label, line), ...]`` of a table; errors name the file, line and ``fix``.
    ``required``: columns that must be in the header besides the text and label columns."""
    header, body = read_rows(path, delimiter)
    _column_index(path, header, list(dict.fromkeys([*required, *text_columns, label_column])), fix)
    text_idx = _column_index(path, header, text_columns, fix)
    (label_idx,) = _column_index(path, header, [label_column], fix)
    out = []
    for line, fields in body:
        if len(fields) != len(header):
            sep = "tab" if delimiter == "\t" else repr(delimiter)
            raise FinetuneError(f"{path}:{line}: {len(fields)} {sep}-separated fields, the header has "
                                f"{len(header)}; every row needs one value per column (a {sep} inside a text "
                                "splits it)")
        label = fields[label_idx].strip()
        if not label:
            raise FinetuneError(f"{path}:{line}: empty label in column {label_column!r}; label every row or "
                                "remove it")
        out.append((tuple(fields[i] for i in text_idx), label, line))
    return out


# ---- labels ------------------------------------------------------------------------------------
def _is_int(s: str) -> bool:
    return s.lstrip("+").isdigit()


def label_names(raw_train: list[str], explicit: list[str] | None = None) -> tuple[list[str], bool]:
    """``(names, integer_ids)`` from the training labels (see the module docstring)."""
    if explicit:
        if len(set(explicit)) != len(explicit) or len(explicit) < 2:
            raise FinetuneError("--labels must name at least two distinct labels, e.g. --labels negative,positive")
        return list(explicit), False
    distinct = sorted(set(raw_train))
    if all(_is_int(x) for x in distinct):
        n = max(int(x) for x in distinct) + 1
        if len(distinct) < 2:
            raise FinetuneError(f"the training data has only label {distinct[0]!r}; a classifier needs at least "
                                "two classes")
        return [str(i) for i in range(n)], True
    if len(distinct) < 2:
        raise FinetuneError(f"the training data has only label {distinct[0]!r}; a classifier needs at least two "
                            "classes")
    return distinct, False


def map_labels(path, rows, names: list[str], integer_ids: bool) -> list[Example]:
    index = {n: i for i, n in enumerate(names)}
    out = []
    for texts, raw, line in rows:
        if integer_ids:
            if not _is_int(raw) or int(raw) >= len(names):
                raise FinetuneError(f"{path}:{line}: label {raw!r} is not one of the training labels "
                                    f"0..{len(names) - 1}; fix the label or remove the row")
            label = int(raw)
        else:
            if raw not in index:
                raise FinetuneError(f"{path}:{line}: label {raw!r} is not one of the labels "
                                    f"{', '.join(map(repr, names))}; fix the label or remove the row")
            label = index[raw]
        out.append(Example(texts, label, line))
    return out


def carve_dev(train: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded random ``fraction`` of ``train`` as the dev split (train keeps its file order)."""
    if not 0 < fraction < 1:
        raise FinetuneError(f"--dev-fraction must be between 0 and 1, got {fraction}")
    n_dev = max(1, round(fraction * len(train)))
    if len(train) - n_dev < 2:
        raise FinetuneError(f"{len(train)} training examples are too few to carve a dev split from; pass --dev FILE")
    order = np.random.default_rng(seed).permutation(len(train))
    dev_idx = set(order[:n_dev].tolist())
    return ([e for i, e in enumerate(train) if i not in dev_idx], [train[i] for i in sorted(dev_idx)])


def _assemble(name, text_columns, label_column, labels, train_path, train, dev_path, dev, test_path, test,
              dev_fraction, seed) -> TaskData:
    notes = []
    if dev is None:
        train, dev = carve_dev(train, dev_fraction, seed)
        dev_source = f"{train_path} ({dev_fraction:g} carved, seed {seed})"
        notes.append(f"dev split: {len(dev)} examples carved from {train_path} (--dev-fraction {dev_fraction:g}, "
                     f"seed {seed})")
    else:
        dev_source = str(dev_path)
    return TaskData(name=name, text_columns=tuple(text_columns), label_column=label_column, labels=list(labels),
                    train=Split("train", str(train_path), train), dev=Split("dev", dev_source, dev),
                    test=Split("test", str(test_path), test) if test is not None else None, notes=notes)


# ---- MRPC ---------------------------------------------------------------------------------------
MRPC_FIX = ("MRPC files need the header 'Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String'; for other "
            "tables use ternary-finetune classify --text-cols ... --label-col ...")


def read_mrpc_file(path) -> list[Example]:
    """One MRPC-format file (labels must be 0 or 1)."""
    path = Path(path)
    rows = read_labelled(path, MRPC_TEXT_COLUMNS, MRPC_LABEL_COLUMN, "\t", MRPC_FIX, required=MRPC_COLUMNS)
    for _, raw, line in rows:
        if raw not in ("0", "1"):
            raise FinetuneError(f"{path}:{line}: Quality {raw!r} is not 0 or 1 (MRPC: 1 = paraphrase, "
                                "0 = not a paraphrase); fix the label or remove the row")
    return map_labels(path, rows, list(MRPC_LABELS), integer_ids=True)


def find_mrpc_files(data_dir) -> tuple[Path, Path | None, Path | None]:
    """``(train, dev, test)`` in ``data_dir``: MRPC's own files or GLUE's copy (whose dev.tsv is used as
    the test split, since GLUE's test.tsv has no labels)."""
    d = Path(data_dir)
    if not d.is_dir():
        raise FinetuneError(f"--data {d} is not a folder; pass the folder holding {MRPC_TRAIN} (and {MRPC_TEST})")
    if (d / MRPC_TRAIN).is_file():
        return d / MRPC_TRAIN, None, d / MRPC_TEST if (d / MRPC_TEST).is_file() else None
    if (d / GLUE_MRPC_TRAIN).is_file():
        return d / GLUE_MRPC_TRAIN, None, d / GLUE_MRPC_DEV if (d / GLUE_MRPC_DEV).is_file() else None
    raise FinetuneError(f"--data {d} holds neither {MRPC_TRAIN} nor GLUE's {GLUE_MRPC_TRAIN}; download MRPC "
                        "(msr_paraphrase_train.txt / _test.txt) into it, or use --dataset glue/mrpc online")


def load_mrpc(data_dir, dev: str | None = None, test: str | None = None, dev_fraction: float = 0.1,
              seed: int = 0) -> TaskData:
    train_path, _, test_path = find_mrpc_files(data_dir)
    test_path = Path(test) if test else test_path
    train = read_mrpc_file(train_path)
    dev_examples = read_mrpc_file(dev) if dev else None
    test_examples = read_mrpc_file(test_path) if test_path else None
    data = _assemble("mrpc", MRPC_TEXT_COLUMNS, MRPC_LABEL_COLUMN, MRPC_LABELS, train_path, train, dev,
                     dev_examples, test_path, test_examples, dev_fraction, seed)
    if test_path is None:
        data.notes.append(f"no test split: {Path(data_dir) / MRPC_TEST} not found (evaluating dev only)")
    return data


# ---- generic tables ---------------------------------------------------------------------------
def parse_columns(value: str, what: str) -> tuple[str, ...]:
    cols = tuple(c.strip() for c in (value or "").split(",") if c.strip())
    if what == "--text-cols" and len(cols) not in (1, 2):
        raise FinetuneError(f"--text-cols takes one column (a sentence) or two (a pair), comma-separated, "
                            f"got {value!r}")
    return cols


def load_table_task(train, text_cols: str, label_col: str, dev: str | None = None, test: str | None = None,
                    dev_fraction: float = 0.1, seed: int = 0, delimiter: str | None = None,
                    labels: str | None = None) -> TaskData:
    text_columns = parse_columns(text_cols, "--text-cols")
    if not label_col:
        raise FinetuneError("--label-col is required: the column that holds each row's class")
    if label_col in text_columns:
        raise FinetuneError(f"--label-col {label_col!r} is also a text column")
    fix = "pass the right --text-cols / --label-col (names from the header row)"
    paths = {"train": Path(train), "dev": Path(dev) if dev else None, "test": Path(test) if test else None}
    raw = {k: read_labelled(p, text_columns, label_col, resolve_delimiter(p, delimiter), fix)
           for k, p in paths.items() if p is not None}
    names, integer_ids = label_names([r[1] for r in raw["train"]], parse_columns(labels, "--labels") or None)
    ex = {k: map_labels(paths[k], rows, names, integer_ids) for k, rows in raw.items()}
    return _assemble("classify", text_columns, label_col, names, paths["train"], ex["train"], paths["dev"],
                     ex.get("dev"), paths["test"], ex.get("test"), dev_fraction, seed)
