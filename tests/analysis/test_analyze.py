"""ternary-analyze: per-layer statistics, sensitivity, plan, outputs and bad input (tiny model)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import pytest
import torch
from clitools import cli

from ternarylm.analysis.plan import make_plan, rank_layers
from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ternarylm.quantization import ternary_linears, ternary_weight

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--threads", "1", "--no-progress", "--batch-size", "4", "--eval-batches", "3"]


@pytest.fixture(scope="module")
def analysis(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis") / "out"
    proc = cli("ternarylm.cli.analyze", tiny_ckpt, "--out", out, "--keep", "3", "--bits", "8", *FAST)
    return proc, out, json.loads((out / "analysis.json").read_text())


def test_table_json_and_png(analysis, tiny_ckpt):
    proc, out, doc = analysis
    assert doc["format"] == "ternarylm-analysis" and doc["format_version"] == 1
    assert doc["checkpoint"]["sha256"] == hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    names = [f"model.layers.{i}.{'self_attn' if m[0] in 'qkvo' else 'mlp'}.{m}" for i in range(2) for m in MODULES]
    assert [r["name"] for r in doc["layers"]] == names  # 14 = 2 layers x q,k,v,o,gate,up,down
    assert [(r["layer"], r["module"]) for r in doc["layers"]][:8] == [
        (0, "q"), (0, "k"), (0, "v"), (0, "o"), (0, "gate"), (0, "up"), (0, "down"), (1, "q")]
    for line in ("dL fp-alone", "dL tern-alone", *names, "--keep-precision"):
        assert line in proc.stdout
    assert (out / "analysis.png").read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    assert matplotlib.image.imread(out / "analysis.png").shape[0] > 100
    assert not list(out.glob(".*tmp*"))


def test_statistics_match_the_checkpoint(analysis, tiny_ckpt):
    _, _, doc = analysis
    state = load_checkpoint(tiny_ckpt)["model"]
    for row in doc["layers"]:
        t = row["trits"]
        assert math.isclose(t["-1"] + t["0"] + t["+1"], 1.0, abs_tol=1e-9)
        w = state[row["name"] + ".weight"]
        trits, scales = ternary_weight(w)  # the tiny run uses per-tensor scales
        assert row["zero_fraction"] == pytest.approx(float((trits == 0).float().mean()), abs=1e-9)
        assert row["trits"]["0"] == row["zero_fraction"]
        assert row["gamma"]["mean"] == pytest.approx(float(scales.mean()), rel=1e-6)
        q = trits.float() * scales
        assert row["rel_error"] == pytest.approx(float((w - q).norm() / w.norm()), rel=1e-5)
        assert row["weight_bits"] == 2 and row["shape"] == list(w.shape)


def test_sensitivity_and_plan(analysis):
    _, _, doc = analysis
    base = doc["baselines"]
    assert math.isfinite(base["as_trained"]["loss"]) and math.isfinite(base["all_fp"]["loss"])
    assert doc["evaluation"]["tokens"] == 3 * 4 * 64  # 3 batches of 4 windows of the run's 64 tokens
    for row in doc["layers"]:
        s = row["sensitivity"]
        assert math.isfinite(s["fp_alone_delta"]) and math.isfinite(s["ternary_alone_delta"])
    plan = doc["plan"]
    # documented criterion (default --rank-by fp): largest |loss change| with the layer alone fp first
    size = {r["name"]: abs(r["sensitivity"]["fp_alone_delta"]) for r in doc["layers"]}
    top3 = sorted(size, key=lambda n: -size[n])[:3]
    assert list(plan["layers"]) == top3 and set(plan["layers"].values()) == {8}
    assert plan["keep"] == 3 and plan["rank_by"] == "fp" and len(plan["ranking"]) == 14
    assert plan["flags"] == " ".join(f"--keep-precision {n}=8" for n in top3)


def test_no_sensitivity_skips_evaluations_and_writes_next_to_the_checkpoint(tiny_ckpt, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_ckpt, run / "ckpt.pt")
    proc = cli("ternarylm.cli.analyze", run / "ckpt.pt", "--no-sensitivity", "--threads", "1")
    doc = json.loads((run / "analysis" / "analysis.json").read_text())
    assert doc["evaluation"] is None and doc["baselines"] is None and doc["plan"] is None
    assert all(r["sensitivity"] is None for r in doc["layers"]) and len(doc["layers"]) == 14
    assert "sensitivity" not in proc.stderr  # no progress bar: nothing was evaluated
    assert "plan: none" in proc.stdout
    assert (run / "analysis" / "analysis.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("case", ["fp", "classification", "truncated"])
def test_bad_input_is_one_line_and_writes_nothing(tiny_ckpt, tmp_path, case):
    bad = tmp_path / "bad.pt"
    if case == "truncated":
        data = tiny_ckpt.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        expect = "truncated"
    else:
        ckpt = load_checkpoint(tiny_ckpt)
        ckpt.pop("format"), ckpt.pop("format_version")
        if case == "fp":  # the full-precision twin: same weights, plain nn.Linear
            ckpt["config"] = {**ckpt["config"], "precision": "fp"}
            model_from_checkpoint(ckpt)  # a valid fp checkpoint
            expect = "no ternary layers"
        else:
            ckpt["kind"] = "sequence-classification"
            expect = "causal-LM"
        save_checkpoint(ckpt, bad)
    out = tmp_path / "out"
    proc = cli("ternarylm.cli.analyze", bad, "--out", out, *FAST, check=False)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and expect in lines[0], proc.stderr
    if case == "fp":
        assert "--precision ternary" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists() and not (tmp_path / "analysis").exists()


def test_fp_alone_equals_a_manual_evaluation(tiny_ckpt):
    """The fast path (cached block inputs, frozen weights) gives what flipping weight_bits gives."""
    from ternarylm.analysis.data import validation_windows
    from ternarylm.analysis.sensitivity import layer_sensitivity
    from ternarylm.evaluation import evaluate_nll

    torch.set_num_threads(1)
    ckpt = load_checkpoint(tiny_ckpt)
    model = model_from_checkpoint(ckpt)
    windows = validation_windows(ckpt, batch_size=4, eval_batches=2).windows
    result = layer_sensitivity(model, windows, progress=False)
    assert result.fast_path
    modules = dict(ternary_linears(model))
    base, _ = evaluate_nll(model, windows)
    assert result.baseline_loss == pytest.approx(base, abs=1e-6)
    for name in ("model.layers.0.self_attn.v_proj", "model.layers.1.mlp.down_proj"):
        modules[name].weight_bits = 16
        alone_fp, _ = evaluate_nll(model, windows)
        modules[name].weight_bits = 2
        assert result.fp_alone[name] == pytest.approx(alone_fp - base, abs=1e-6)
        for m in modules.values():
            m.weight_bits = 16
        all_fp, _ = evaluate_nll(model, windows)
        modules[name].weight_bits = 2
        alone_ternary, _ = evaluate_nll(model, windows)
        for m in modules.values():
            m.weight_bits = 2
        assert result.ternary_alone[name] == pytest.approx(alone_ternary - all_fp, abs=1e-6)
    assert all(m.weight_bits == 2 and "forward" not in m.__dict__ for m in modules.values())
    slow = layer_sensitivity(model, windows, progress=False, fast=False)
    for name in modules:
        assert slow.fp_alone[name] == pytest.approx(result.fp_alone[name], abs=1e-6)
        assert slow.ternary_alone[name] == pytest.approx(result.ternary_alone[name], abs=1e-6)


def _row(name, layer, module, fp_alone, ternary_alone, bits=2, in_features=64):
    return {"name": name, "layer": layer, "module": module, "weight_bits": bits, "parameters": 64 * in_features,
            "shape": [64, in_features],
            "sensitivity": {"fp_alone_delta": fp_alone, "ternary_alone_delta": ternary_alone}}


def test_plan_ranking_rules():
    rows = [_row("a", 0, "q", -0.10, 0.01), _row("b", 0, "k", 0.30, -0.02), _row("c", 0, "v", 0.10, -0.05),
            _row("d", 1, "q", -0.50, 0.90, bits=8), _row("e", 1, "down", 0.05, 0.40, in_features=48)]
    # magnitudes rank; the tie |a| = |c| is broken by |ternary_alone|; d is already kept (8 bits)
    assert rank_layers(rows, "fp") == ["b", "c", "a", "e"]
    assert rank_layers(rows, "ternary") == ["e", "c", "b", "a"]
    plan = make_plan(rows, keep=2, bits=4, rank_by="ternary", existing={"model.layers.1.*": 8})
    assert plan["layers"] == {"e": 16, "c": 4}  # 48 input columns cannot be 4-bit blocks of 32
    assert plan["flags"].startswith("--keep-precision 'model.layers.1.*=8' --keep-precision e=16")
    assert make_plan([{**r, "sensitivity": None} for r in rows], keep=2) is None
    assert make_plan(rows, keep=9)["keep"] == 4
