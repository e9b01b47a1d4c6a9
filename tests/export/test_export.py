"""ternary-export onnx on a tiny trained checkpoint: every target exports, checks, runs in onnxruntime
and agrees with PyTorch; portable runs in onnx.reference; onnxruntime-genai loads the folder."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from clitools import cli
from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint
from ternarylm.export.verify import carrying, stored_quantization
from ternarylm.format.targets import TARGETS

RUNNABLE_HERE = list(TARGETS)  # ort-cuda's fp16 graph also runs on ORT's CPU provider


@pytest.fixture(scope="module")
def exports(tiny_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for target in RUNNABLE_HERE:
        out[target] = root / target
        cli("ternarylm.export.cli", "onnx", tiny_ckpt, "--out", out[target], "--target", target)
    out["portable-base3"] = root / "portable-base3"
    cli("ternarylm.export.cli", "onnx", tiny_ckpt, "--out", out["portable-base3"], "--target", "portable",
        "--packing", "base3")
    return out


@pytest.fixture(scope="module")
def torch_model(tiny_ckpt):
    return model_from_checkpoint(load_checkpoint(tiny_ckpt))


def _feeds(session, ids):
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(ids.shape[1])[None]}
    for inp in session.get_inputs():
        if inp.name.startswith("past_key_values"):
            dtype = np.float16 if "float16" in inp.type else np.float32
            feeds[inp.name] = np.zeros((1, inp.shape[1], 0, inp.shape[3]), dtype)
    return feeds


def _ids(n=12):
    return np.random.default_rng(0).integers(2, 400, size=(1, n)).astype(np.int64)


@pytest.mark.parametrize("target", RUNNABLE_HERE + ["portable-base3"])
def test_export_checks_and_matches_pytorch(exports, torch_model, target):
    folder = exports[target]
    model = onnx.load(folder / "model.onnx")
    onnx.checker.check_model(model, full_check=target.startswith("portable"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "model.onnx.data", "config.json", "tokenizer.json",
                                      "tokenizer_config.json", "genai_config.json"}
    # the weights live in the external-data file (memory-mapped by onnxruntime), the graph in model.onnx
    assert manifest["files"]["model.onnx.data"]["bytes"] > manifest["files"]["model.onnx"]["bytes"]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = _ids()
    logits = session.run(["logits"], _feeds(session, ids))[0]
    # PyTorch with the export's own int8/int4 head and embedding (the auto choice), as ternary-export verify holds it
    stored = stored_quantization(json.loads((folder / "config.json").read_text()))
    with torch.no_grad(), carrying(torch_model, stored):
        ref = torch_model(torch.from_numpy(ids)).logits.numpy()
    rel = np.abs(logits - ref).max() / np.abs(ref).max()
    if target.startswith("portable"):
        assert rel < 1e-5, rel  # the same computation as training
        return
    # the target's derived bound (ternarylm.format.targets.TOLERANCES), and the argmax may differ only
    # where PyTorch's top two logits are closer than twice that bound (a near tie the error can flip)
    bound = TARGETS[target].relative_tolerance
    assert rel < bound, (rel, bound)
    top2 = np.sort(ref, axis=-1)[..., -2:]
    flipped = logits.argmax(-1) != ref.argmax(-1)
    gap = (top2[..., 1] - top2[..., 0]) / np.abs(ref).max()
    assert (gap[flipped] <= 2 * bound).all(), (gap[flipped], bound)


def test_packed_sizes(exports):
    ops = {n.op_type for n in onnx.load(exports["portable"] / "model.onnx").graph.node}
    assert "TernaryMatMul" in ops and "MatMulNBits" not in ops
    ops = {n.op_type for n in onnx.load(exports["ort-cpu"] / "model.onnx").graph.node}
    assert {"MatMulNBits", "GroupQueryAttention", "SkipSimplifiedLayerNormalization"} <= ops
    config = json.loads((exports["portable"] / "config.json").read_text())
    qkv = config["weights"]["model.layers.0.self_attn.qkv_proj"]
    model = onnx.load(exports["portable"] / "model.onnx")
    packed = next(t for t in model.graph.initializer if t.name == qkv["packed"])
    assert packed.data_type == onnx.TensorProto.UINT8 and list(packed.dims) == [qkv["N"], qkv["K"] // 4]
    b3 = json.loads((exports["portable-base3"] / "config.json").read_text())["weights"]
    model3 = onnx.load(exports["portable-base3"] / "model.onnx")
    packed3 = next(t for t in model3.graph.initializer if t.name == b3["model.layers.0.self_attn.qkv_proj"]["packed"])
    assert list(packed3.dims) == [qkv["N"], -(-qkv["K"] // 5)]


def test_portable_runs_in_onnx_reference(exports, torch_model):
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(exports["portable"] / "model.onnx")
    session = ort.InferenceSession(str(exports["portable"] / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = _ids(6)
    got = ReferenceEvaluator(model).run(["logits"], _feeds(session, ids))[0]
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4


def test_kv_cache_decode_matches_full_pass(exports):
    session = ort.InferenceSession(str(exports["ort-cpu"] / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = _ids(10)
    full = session.run(["logits"], _feeds(session, ids))[0]
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, _feeds(session, ids[:, :9]))))
    feeds = {"input_ids": ids[:, 9:], "attention_mask": np.ones((1, 10), np.int64), "position_ids": np.array([[9]])}
    for name in out:
        if name.startswith("present."):
            feeds[name.replace("present.", "past_key_values.")] = out[name]
    step = session.run(["logits"], feeds)[0]
    np.testing.assert_allclose(step[0, -1], full[0, -1], atol=1e-3 * np.abs(full).max())


def test_export_is_deterministic(tiny_ckpt, exports, tmp_path):
    again = tmp_path / "again"
    cli("ternarylm.export.cli", "onnx", tiny_ckpt, "--out", again, "--target", "ort-cpu")
    for name in ("model.onnx", "model.onnx.data", "config.json", "genai_config.json", "tokenizer.json"):
        assert (again / name).read_bytes() == (exports["ort-cpu"] / name).read_bytes(), name


def test_onnxruntime_genai_generates_from_the_folder(exports):
    """onnxruntime-genai reads the folder (genai_config.json, tokenizer) and greedy-decodes the very
    tokens that the project's onnxruntime engine decodes from the same prompt: same graph, same kernels,
    so any difference is in what genai feeds it (positions, mask, KV cache) or in the tokenizer."""
    og = pytest.importorskip("onnxruntime_genai")
    from ternarylm.runtime_py import generate, load_ort, load_tokenizer

    model = og.Model(str(exports["ort-cpu"]))
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=24, do_sample=False)
    generator = og.Generator(model, params)
    prompt = tokenizer.encode("Once upon a time")
    generator.append_tokens(prompt)
    while not generator.is_done():
        generator.generate_next_token()
    seq = list(generator.get_sequence(0))
    prompt = list(prompt)
    assert len(seq) == 24 and seq[: len(prompt)] == prompt
    assert load_tokenizer(exports["ort-cpu"]).encode("Once upon a time").ids == prompt
    new, _ = generate(load_ort(exports["ort-cpu"]), prompt, max_new_tokens=24 - len(prompt))
    assert seq[len(prompt):] == new


def test_export_bad_input(tiny_ckpt, tmp_path, exports):
    def fails(*args, match):
        proc = cli("ternarylm.export.cli", *args, check=False)
        assert proc.returncode != 0 and match in proc.stderr and "Traceback" not in proc.stderr, proc.stderr

    fails("onnx", tiny_ckpt, "--out", exports["ort-cpu"], match="already exists")
    fails("onnx", tiny_ckpt, "--out", tmp_path / "x", "--target", "tpu", match="tpu")
    fails("onnx", tiny_ckpt, "--out", tmp_path / "y", "--block-size", "48", match="--block-size")
    fails("onnx", tiny_ckpt, "--out", tmp_path / "y", "--block-size", "128", match="does not divide K=64")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    fails("onnx", junk, "--out", tmp_path / "z", match="not a readable checkpoint")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("target", ["portable", "ort-cpu"])
def test_verify_cli_compares_pytorch_ort_and_numpy(exports, tiny_ckpt, tmp_path, target):
    report = tmp_path / "verify.json"
    proc = cli("ternarylm.export.cli", "verify", exports[target], "--ckpt", tiny_ckpt, "--json", report,
               "--max-new-tokens", "8")
    data = json.loads(report.read_text())
    assert data["passed"] and set(data["engines"]) == {"ort", "numpy"} and "verification passed" in proc.stdout
    for engine in data["engines"].values():
        assert engine["greedy_agreement"] >= 0.9
    if target == "portable":  # ORT runs the same op sequence as training; NumPy may flip an int8 rounding
        assert data["engines"]["ort"]["max_logit_diff"] < 1e-4
        assert data["engines"]["numpy"]["max_logit_diff"] < 1e-2
    strict = cli("ternarylm.export.cli", "verify", exports[target], "--ckpt", tiny_ckpt, "--logit-tol", "1e-12",
                 "--max-new-tokens", "4", check=False)
    assert strict.returncode != 0 and "verification failed" in strict.stderr


def test_portable_with_quantised_head_stays_standard_ops(tiny_ckpt, tmp_path, torch_model):
    """--lm-head int4 / --embedding int8 on portable keep onnx.reference able to run the graph."""
    from onnx.reference import ReferenceEvaluator

    from ternarylm.runtime_py import load_numpy

    folder = tmp_path / "portable-q"
    cli("ternarylm.export.cli", "onnx", tiny_ckpt, "--out", folder, "--target", "portable", "--lm-head", "int4",
        "--embedding", "int8")
    model = onnx.load(folder / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert {n.domain for n in model.graph.node} <= {"", "ai.ternarylm"}
    assert json.loads((folder / "config.json").read_text())["weights"]["lm_head"]["kind"] == "int"
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = _ids(6)
    feeds = _feeds(session, ids)
    got_ort = session.run(["logits"], feeds)[0]
    got_ref = ReferenceEvaluator(model).run(["logits"], feeds)[0]
    got_np = load_numpy(folder).forward(ids)
    scale = np.abs(got_ort).max()
    assert np.abs(got_ref - got_ort).max() / scale < 1e-4
    assert np.abs(got_np - got_ort).max() / scale < 1e-4
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(ids)).logits.numpy()
    assert (got_ort.argmax(-1) == ref.argmax(-1)).mean() >= 0.75  # int4 head: close to, not equal to, fp
