"""The fine-tuned classifier exports (packed ternary backbone, logits output) and PyTorch, onnxruntime,
onnx.reference and the NumPy runtime agree on it.

Tolerances (max |logit difference| / max |PyTorch logit| over the batch):
- portable: the same computation as training (exact trits, per-token int8 activations), so rows agree
  to float rounding (< 1e-4); an activation that rounding moves across an int8 boundary shifts a row by
  ~1e-3 of the logit range, hence 2e-3 for the worst row and < 1e-4 for 90% of them.
- ort-cpu: MatMulNBits quantises activations per block, not per token, and the embedding is int8:
  within 15% (as ternary-export verify), with the same predicted label on >= 90% of the inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from ternarylm.runtime_py.loader import load_classifier

from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint
from ternarylm.finetune.tasks import read_mrpc_file

TOLERANCE = {"portable": (2e-3, 1e-4), "ort-cpu": (0.15, None)}


@pytest.fixture(scope="module")
def torch_classifier(finetuned):
    return model_from_checkpoint(load_checkpoint(finetuned[0] / "ckpt.pt"), expect_kind="sequence-classification")


@pytest.fixture(scope="module")
def test_pairs(mrpc_dir):
    return [e.texts for e in read_mrpc_file(mrpc_dir / "msr_paraphrase_test.txt")[:48]]


def _torch_logits(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()


def _relative_rows(got, ref):
    return np.abs(got - ref).max(axis=1) / np.abs(ref).max()


def test_portable_graph_and_folder(classifier_export):
    folder = classifier_export("portable")
    model = onnx.load(folder / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == [
        ("input_ids", onnx.TensorProto.INT64), ("attention_mask", onnx.TensorProto.INT64)]
    (out,) = model.graph.output
    assert out.name == "logits" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch_size", 2]
    ops = {n.op_type for n in model.graph.node}
    assert "TernaryMatMul" in ops and "MatMulNBits" not in ops
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "model.onnx.data", "config.json", "tokenizer.json",
                                      "tokenizer_config.json"}
    assert manifest["kind"] == "sequence-classification"
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "sequence-classification" and config["num_labels"] == 2
    assert config["id2label"] == {"0": "not_equivalent", "1": "equivalent"}
    assert config["encoding"]["template"] == "[bos] s1 [sep] s2 [eos]"
    assert config["weights"]["score"]["kind"] == "dense"
    assert config["weights"]["model.layers.0.self_attn.qkv_proj"]["kind"] == "ternary"


@pytest.mark.parametrize("target", ["portable", "ort-cpu"])
def test_engines_agree_with_pytorch(classifier_export, torch_classifier, test_pairs, target):
    folder = classifier_export(target)
    engines = {name: load_classifier(folder, engine=name) for name in ("ort", "numpy")}
    ids, mask = engines["ort"].encode(test_pairs)
    assert (mask == 0).any()  # the batch is padded
    ref = _torch_logits(torch_classifier, ids, mask)
    worst, typical = TOLERANCE[target]
    for name, clf in engines.items():
        got = clf.engine.logits(ids, mask)
        rows = _relative_rows(got, ref)
        assert rows.max() < worst, (target, name, rows.max())
        if typical:
            assert np.quantile(rows, 0.9) < typical, (target, name, np.quantile(rows, 0.9))
        assert (got.argmax(1) == ref.argmax(1)).mean() >= (0.95 if typical else 0.9), (target, name)
    probs = engines["numpy"].predict(test_pairs[:3])
    assert probs.shape == (3, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    if target == "ort-cpu":
        ops = {n.op_type for n in onnx.load(folder / "model.onnx").graph.node}
        assert "MatMulNBits" in ops and "TernaryMatMul" not in ops


def test_left_padding_and_reference_runtime(classifier_export, torch_classifier, test_pairs):
    """Pooling takes the last non-pad token, so left padding gives the same logits; onnx.reference
    runs the portable graph (standard ops + the TernaryMatMul function body)."""
    from onnx.reference import ReferenceEvaluator

    folder = classifier_export("portable")
    clf = load_classifier(folder, engine="ort")
    ids, mask = clf.encode(test_pairs[:6])
    ref = _torch_logits(torch_classifier, ids, mask)
    left_ids, left_mask = np.full_like(ids, clf.spec.pad_token_id), np.zeros_like(mask)
    for i, n in enumerate(mask.sum(1)):
        left_ids[i, ids.shape[1] - n:], left_mask[i, ids.shape[1] - n:] = ids[i, :n], 1
    for engine in (clf.engine, load_classifier(folder, engine="numpy").engine):
        assert _relative_rows(engine.logits(left_ids, left_mask), ref).max() < 2e-3
    got = ReferenceEvaluator(onnx.load(folder / "model.onnx")).run(None, {"input_ids": ids[:3],
                                                                          "attention_mask": mask[:3]})[0]
    assert _relative_rows(got, ref[:3]).max() < 2e-3


def test_verify_and_predict_cli(classifier_export, finetuned):
    from ternarylm.export.verify import verify_export

    folder = classifier_export("portable")
    report = verify_export(folder, finetuned[0] / "ckpt.pt")
    assert report["passed"], report
    # the device side: no torch, through ternary-finetune predict and the Python API
    code = ("import sys; from ternarylm.runtime_py import load_classifier; "
            f"c = load_classifier({str(folder)!r}, engine='numpy'); p = c.predict([('Tom saw a dog.', 'Tom saw a dog.')]); "
            "assert p.shape == (1, 2); assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    pairs = [("Lily saw a ball in the park.", "In the park, Lily spotted a ball."),
             ("Ben found a box in the house.", "In the stream, Max discovered a cake.")]
    proc = subprocess.run([sys.executable, "-m", "ternarylm.cli.finetune", "predict", str(folder), "--engine", "numpy",
                           *[arg for a, b in pairs for arg in ("--text", a, "--text2", b)]],
                          capture_output=True, text=True, check=True)
    # one table row per pair, each the Python API's label and probabilities (printed to 4 decimals)
    clf = load_classifier(folder, engine="numpy")
    probs = clf.predict(pairs)
    header, rule, *rows = proc.stdout.strip().splitlines()
    assert header.split()[:3] == ["input", "label", "probability"] and set(rule) <= {"-", " "}
    assert len(rows) == len(pairs), proc.stdout
    for i, (row, p) in enumerate(zip(rows, probs)):
        cells = row.split()
        assert cells[:2] == [str(i), clf.labels[int(p.argmax())]], row
        assert [float(c) for c in cells[2:]] == pytest.approx([p.max(), *p], abs=5e-5), row


def test_export_is_deterministic_and_refuses_other_kinds(classifier_export, finetuned, tiny_ckpt, tmp_path):
    from ternarylm.export.api import build_model, export_checkpoint

    again = export_checkpoint(finetuned[0] / "ckpt.pt", tmp_path / "again", target="portable")
    assert (again / "model.onnx").read_bytes() == (classifier_export("portable") / "model.onnx").read_bytes()
    with pytest.raises(ValueError, match="causal-lm checkpoint, not a sequence-classification"):
        build_model(load_checkpoint(tiny_ckpt), "portable", expect_kind="sequence-classification")
    with pytest.raises(ValueError, match="not available for classifiers"):
        build_model(load_checkpoint(finetuned[0] / "ckpt.pt"), "ort-cuda")
    with pytest.raises(FileExistsError):
        export_checkpoint(finetuned[0] / "ckpt.pt", tmp_path / "again")


def test_fp_classifier_exports_dense(tmp_path):
    """A classifier fine-tuned from the full-precision twin exports as fp32 (and only as fp32)."""
    from ternarylm.export.api import build_model, export_checkpoint
    from tokenizers import Tokenizer

    from ternarylm.checkpoint import save_checkpoint
    from ternarylm.classification import TernaryLMForSequenceClassification
    from ternarylm.configuration import TernaryLMConfig
    from ternarylm.data.tokenizer import train_bpe_tokenizer
    from ternarylm.format.encoding import EncodingSpec

    tok: Tokenizer = train_bpe_tokenizer(["a b c d e f g h"] * 20, vocab_size=270)
    torch.manual_seed(0)
    cfg = TernaryLMConfig.from_preset("tiny", vocab_size=tok.get_vocab_size(), precision="fp", eos_token_id=0,
                                      pad_token_id=1, initializer_range=0.2)
    cfg.id2label, cfg.label2id = {0: "a", 1: "b", 2: "c"}, {"a": 0, "b": 1, "c": 2}
    model = TernaryLMForSequenceClassification(cfg).eval()
    spec = EncodingSpec.for_tokenizer(tok, ["text"], 32)
    ckpt = {"kind": "sequence-classification", "config": cfg.to_dict(), "tokenizer_json": tok.to_str(),
            "model": model.state_dict(), "task": {"name": "t", "text_columns": ["text"], "label_column": "y",
                                                  "labels": ["a", "b", "c"], "encoding": spec.to_dict()}}
    path = save_checkpoint(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="full precision"):
        build_model(load_checkpoint(path), "portable")
    folder = export_checkpoint(path, tmp_path / "fp32", target="fp32")
    texts = ["a b c", "d e f g h a b", "h"]
    for engine in ("ort", "numpy"):
        clf = load_classifier(folder, engine=engine)
        ids, mask = clf.encode(texts)
        ref = _torch_logits(model, ids, mask)
        assert _relative_rows(clf.engine.logits(ids, mask), ref).max() < 1e-4
        assert clf.labels == ["a", "b", "c"]


def test_mixed_precision_classifier_exports(tmp_path):
    """Kept 4/8-bit and full-precision layers go through the LM exporter's generic weight kinds."""
    from ternarylm.export.api import export_checkpoint

    from ternarylm.checkpoint import save_checkpoint
    from ternarylm.classification import TernaryLMForSequenceClassification
    from ternarylm.configuration import TernaryLMConfig
    from ternarylm.data.tokenizer import train_bpe_tokenizer
    from ternarylm.format.encoding import EncodingSpec

    tok = train_bpe_tokenizer(["a b c d e f g h"] * 20, vocab_size=270)
    torch.manual_seed(0)
    keep = {"model.layers.0.self_attn.q_proj": 8, "*.down_proj": 16, "model.layers.1.mlp.up_proj": 4}
    cfg = TernaryLMConfig.from_preset("tiny", vocab_size=tok.get_vocab_size(), eos_token_id=0, pad_token_id=1,
                                      initializer_range=0.2, quant={"keep_precision": keep})
    model = TernaryLMForSequenceClassification(cfg).eval()
    spec = EncodingSpec.for_tokenizer(tok, ["text"], 32)
    path = save_checkpoint({"kind": "sequence-classification", "config": cfg.to_dict(), "tokenizer_json": tok.to_str(),
                            "model": model.state_dict(), "task": {"name": "t", "text_columns": ["text"],
                                                                  "labels": ["a", "b"], "encoding": spec.to_dict()}},
                           tmp_path / "ckpt.pt")
    for target, tol in (("portable", 2e-3), ("ort-cpu", 0.15)):
        folder = export_checkpoint(path, tmp_path / target, target=target)
        kinds = {e["kind"] for e in json.loads((folder / "config.json").read_text())["weights"].values()}
        assert {"ternary", "int", "dense"} <= kinds if target == "portable" else {"nbits", "dense"} <= kinds
        for engine in ("ort", "numpy"):
            clf = load_classifier(folder, engine=engine)
            ids, mask = clf.encode(["a b c", "d e f g h a b", "h"])
            assert _relative_rows(clf.engine.logits(ids, mask), _torch_logits(model, ids, mask)).max() < tol
