"""Readers, encoding and metrics (in-process, no model): MRPC's exact format, generic tables, clear
errors naming file and line, the input template and its truncation, GLUE metrics, the hub loader."""

from __future__ import annotations

import sys
import types
from typing import ClassVar

import numpy as np
import pytest
from synthetic_mrpc import HEADER, write_mrpc

from ternarylm.finetune import FinetuneError
from ternarylm.finetune.metrics import classification_metrics, majority_baseline
from ternarylm.finetune.tasks import carve_dev, load_mrpc, load_table_task, read_mrpc_file
from ternarylm.format.encoding import (
    EncodingSpec,
    encode,
    last_token_index,
    pad_batch,
    truncate_lengths,
)


def _mrpc(path, *rows, header=HEADER):
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_mrpc_exact_format(tmp_path):
    path = write_mrpc(tmp_path / "msr_paraphrase_train.txt", 50, seed=3)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # BOM, CRLF
    examples = read_mrpc_file(path)
    assert len(examples) == 50 and {e.label for e in examples} == {0, 1}
    assert all(len(e.texts) == 2 and "\t" not in e.texts[0] + e.texts[1] for e in examples)
    assert any('"' in e.texts[0] for e in examples)  # quotes kept verbatim (QUOTE_NONE)
    assert any(e.texts[1].count('"') % 2 for e in examples)  # unbalanced ones too
    assert examples[0].line == 2


def test_mrpc_quotes_are_plain_characters(tmp_path):
    path = _mrpc(tmp_path / "t.txt", '1\t1\t2\t"He said, "no\tHe said no."', '0\t3\t4\tA\t"B')
    a, b = read_mrpc_file(path)
    assert a.texts == ('"He said, "no', 'He said no."') and b.texts == ("A", '"B')


@pytest.mark.parametrize("rows, header, match", [
    (["1\t1\t2\tA\tB"], "Quality\t#1 ID\t#2 ID\t#1 String", r"t\.txt:1: no column '#2 String'"),
    (["2\t1\t2\tA\tB"], HEADER, r"t\.txt:2: Quality '2' is not 0 or 1"),
    (["1\t1\t2\tA\tB", "x\t1\t2\tA\tB"], HEADER, r"t\.txt:3: Quality 'x' is not 0 or 1"),
    (["1\t1\t2\tA"], HEADER, r"t\.txt:2: 4 tab-separated fields, the header has 5"),
    (["1\t1\t2\tA\tB\tC"], HEADER, r"t\.txt:2: 6 tab-separated fields"),
    ([], HEADER, "has a header but no examples"),
])
def test_mrpc_errors_name_file_and_line(tmp_path, rows, header, match):
    with pytest.raises(FinetuneError, match=match):
        read_mrpc_file(_mrpc(tmp_path / "t.txt", *rows, header=header))


def test_mrpc_folder(tmp_path):
    with pytest.raises(FinetuneError, match="holds neither msr_paraphrase_train.txt"):
        load_mrpc(tmp_path)
    (tmp_path / "msr_paraphrase_train.txt").write_text("")
    with pytest.raises(FinetuneError, match="is empty"):
        load_mrpc(tmp_path)
    write_mrpc(tmp_path / "msr_paraphrase_train.txt", 40, seed=1)
    data = load_mrpc(tmp_path, dev_fraction=0.25, seed=7)
    assert (len(data.train), len(data.dev), data.test) == (30, 10, None)
    assert any("no test split" in n for n in data.notes)
    again = load_mrpc(tmp_path, dev_fraction=0.25, seed=7)
    assert [e.line for e in again.dev.examples] == [e.line for e in data.dev.examples]  # seeded
    assert {e.line for e in data.dev.examples}.isdisjoint(e.line for e in data.train.examples)


def test_generic_tables(tmp_path):
    (tmp_path / "train.csv").write_text('q1,q2,label\n"a, b",c,dup\nd,"e ""x""",other\nf,g,dup\n')
    (tmp_path / "dev.tsv").write_text('q1\tq2\tlabel\n"h\ti\tother\n')
    data = load_table_task(tmp_path / "train.csv", "q1,q2", "label", dev=tmp_path / "dev.tsv")
    assert data.labels == ["dup", "other"] and data.text_columns == ("q1", "q2")
    assert [e.texts for e in data.train.examples] == [("a, b", "c"), ("d", 'e "x"'), ("f", "g")]
    assert [e.label for e in data.train.examples] == [0, 1, 0]
    assert data.dev.examples[0].texts == ('"h', "i")  # TSV: QUOTE_NONE
    explicit = load_table_task(tmp_path / "train.csv", "q1,q2", "label", dev=tmp_path / "dev.tsv",
                               labels="other,dup")
    assert explicit.labels == ["other", "dup"] and explicit.train.examples[0].label == 1

    (tmp_path / "ints.tsv").write_text("s\ty\nx\t0\ny\t2\nz\t1\n")
    (tmp_path / "bad.tsv").write_text("s\ty\nx\t3\n")
    ints = load_table_task(tmp_path / "ints.tsv", "s", "y", dev=tmp_path / "ints.tsv")
    assert ints.labels == ["0", "1", "2"] and [e.label for e in ints.train.examples] == [0, 2, 1]
    with pytest.raises(FinetuneError, match=r"bad\.tsv:2: label '3' is not one of the training labels 0\.\.2"):
        load_table_task(tmp_path / "ints.tsv", "s", "y", dev=tmp_path / "bad.tsv")
    with pytest.raises(FinetuneError, match=r"ints\.tsv:1: no column 'label'.*\('s', 'y'\)"):
        load_table_task(tmp_path / "ints.tsv", "s", "label")
    with pytest.raises(FinetuneError, match="one column .* or two"):
        load_table_task(tmp_path / "ints.tsv", "s,y,z", "y")
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(FinetuneError, match="cannot tell the delimiter"):
        load_table_task(tmp_path / "data.json", "s", "y")
    (tmp_path / "one.tsv").write_text("s\ty\nx\t1\ny\t1\n")
    with pytest.raises(FinetuneError, match="only label '1'"):
        load_table_task(tmp_path / "one.tsv", "s", "y", dev=tmp_path / "one.tsv")


def test_carve_dev_bounds():
    from ternarylm.finetune.tasks import Example

    with pytest.raises(FinetuneError, match="--dev-fraction"):
        carve_dev([Example(("a",), 0)] * 10, 1.5, 0)
    with pytest.raises(FinetuneError, match="too few"):
        carve_dev([Example(("a",), 0)] * 2, 0.5, 0)


class _Tok:
    """A whitespace tokenizer with the ``tokenizers`` API the encoder uses."""

    class _Enc:
        def __init__(self, ids):
            self.ids = ids

    def encode_batch(self, texts, add_special_tokens=True):
        assert add_special_tokens is False
        return [self._Enc([10 + len(w) for w in t.split()]) for t in texts]


def test_pair_template_and_longest_first_truncation():
    spec = EncodingSpec(("a", "b"), max_len=8, bos_token_id=1, sep_token_id=2, eos_token_id=3, pad_token_id=0)
    seqs, cut = encode(_Tok(), [("x yy", "zzz"), ("a b c d e f", "g"), ("a b c", "d e f g")], spec)
    assert seqs[0] == [1, 11, 12, 2, 13, 3] and cut == 2
    assert seqs[1] == [1, 11, 11, 11, 11, 2, 11, 3]  # the long text loses 2 tokens, the short one none
    assert seqs[2] == [1, 11, 11, 11, 2, 11, 11, 3] and all(len(s) <= 8 for s in seqs)
    assert truncate_lengths([5, 5], 6) == [3, 3] and truncate_lengths([5, 4], 6) == [3, 3]
    assert truncate_lengths([4, 5], 5) == [3, 2]  # ties: the later text first
    single = EncodingSpec(("s",), max_len=4, bos_token_id=1, sep_token_id=1, eos_token_id=1, pad_token_id=0)
    assert encode(_Tok(), [("a b c",)], single) == ([[1, 11, 11, 1]], 1)
    with pytest.raises(ValueError, match="too small"):
        EncodingSpec(("a", "b"), max_len=4, bos_token_id=1, sep_token_id=2, eos_token_id=3, pad_token_id=0)
    assert EncodingSpec.from_dict(spec.to_dict()) == spec
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and last_token_index(mask).tolist() == [2, 0]
    assert last_token_index(np.array([[0, 0, 1, 1], [0, 1, 0, 0]])).tolist() == [3, 1]


def test_metrics_as_glue():
    y = np.array([1, 1, 1, 0, 0, 1])
    p = np.array([1, 0, 1, 0, 1, 1])
    m = classification_metrics(y, p, 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # positive class: tp 3, fp 1, fn 1
    assert m["confusion"] == [[1, 1], [1, 3]]
    base = majority_baseline(y, np.array([0, 1, 1]), 2)
    assert base["label"] == 1 and base["accuracy"] == pytest.approx(2 / 3) and base["f1"] == pytest.approx(0.8)
    three = classification_metrics([0, 1, 2, 2], [0, 2, 2, 2], 3)
    assert three["f1_kind"] == "macro" and three["f1"] == pytest.approx((1 + 0 + 0.8) / 3)
    assert classification_metrics([0, 0], [0, 0], 2)["f1"] == 0.0  # no positives anywhere


def test_hub_loader_with_a_stand_in_datasets(monkeypatch):
    from ternarylm.finetune.hub import load_glue

    class Table(dict):
        column_names = property(lambda self: list(self))
        features: ClassVar[dict] = {"label": types.SimpleNamespace(names=["not_equivalent", "equivalent"])}

    def load_dataset(path, config):
        assert (path, config) == ("glue", "mrpc")
        rows = lambda n: Table(sentence1=[f"a{i}" for i in range(n)], sentence2=[f"b{i}" for i in range(n)],
                               label=[i % 2 for i in range(n)], idx=list(range(n)))
        return {"train": rows(20), "validation": rows(6), "test": Table(sentence1=["x"], sentence2=["y"], label=[-1])}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    data = load_glue("glue/mrpc", dev_fraction=0.2, seed=0, expect="mrpc")
    assert (len(data.train), len(data.dev), len(data.test)) == (16, 4, 6)
    assert data.labels == ["not_equivalent", "equivalent"] and data.test.examples[1].texts == ("a1", "b1")
    with pytest.raises(FinetuneError, match="is not mrpc"):
        load_glue("glue/sst2", expect="mrpc")

    def offline(path, config):
        raise ConnectionError("Couldn't reach 'glue' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(FinetuneError, match=r"cannot load glue/mrpc .*ConnectionError.*offline, download MRPC"):
        load_glue("glue/mrpc")
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(FinetuneError, match="needs the datasets package"):
        load_glue("glue/mrpc")
