"""``--tune``: candidates from the profile, lowerings built lazily, logits checked, plan written and checked."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from ternarylm.devices.plan import PlanError, StalePlanError, load_plan, plan_path
from ternarylm.devices.profile import Lowering, TuneSpec, load_profile
from ternarylm.devices.tune import (
    THREADS_ONLY,
    call_lower,
    candidates,
    compare_logits,
    lowering_candidates,
    run_tune,
    thread_candidates,
)
from test_device_measure import ort_logs_slow_fallback

from ternarylm.format.folder import ModelFolder

ORT = "1.32.0-test"


def _tune(folder_dir, profile, tmp_path, **kw):
    folder = ModelFolder.open(folder_dir)
    return run_tune(folder, profile, providers=["CPUExecutionProvider"], workdir=tmp_path / "work",
                    plan_file=plan_path(folder_dir, profile.name), on_device=True, host_summary="test host",
                    ort_version=ORT, prompt_len=16, decode_tokens=8, warmup=0, repeats=1, **kw)


def test_candidates_come_from_the_profile():
    cpu = load_profile("cpu")
    assert thread_candidates(cpu, cores=2) == [1, 2] and thread_candidates(cpu, cores=16) == [1, 2, 4, 8]
    lws = lowering_candidates(cpu)
    assert lws[0].target == "as-exported" and lws[1:] == list(cpu.tune.lowerings)
    assert len(candidates(cpu, cores=2)) == 2 * len(lws)
    assert thread_candidates(dataclasses.replace(cpu, thread_candidates=(64,)), cores=2) == [2]


def test_compare_logits():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]])
    assert compare_logits(ref, ref) == (0.0, 1.0)
    rel, agree = compare_logits(ref, ref + [[0, 0, 0], [0, 3.3, 0]])
    assert rel == pytest.approx(1.1) and agree == 0.5
    assert compare_logits(ref, ref[:1]) == (float("inf"), 0.0)


def test_thread_only_tune_without_exporter(export_copy, tmp_path):
    d = export_copy("nbits")
    res = _tune(d, load_profile("cpu"), tmp_path, lower=None, threads=[1, 2])
    ok = [r for r in res.rows if r["status"] == "ok"]
    assert [r["threads"] for r in ok] == [1, 2] and all(r["passed"] for r in ok)
    # same graph, other thread counts: only the fp32 summation order may change (not bit-equal on every host)
    assert all(r["max_rel_diff"] <= 1e-5 and r["argmax_agreement"] == 1.0 for r in ok), ok
    skipped = [r for r in res.rows if r["status"] == "skipped"]
    assert skipped and all(r["message"] == THREADS_ONLY for r in skipped)
    plan = load_plan(plan_path(d, "cpu"), ort_version=ORT, manifest_sha256=ModelFolder.open(d).manifest_sha256)
    assert plan.lowering.target == "as-exported" and plan.model_file is None and plan.threads in (1, 2)
    assert plan.on_device and len(plan.tried) == len(res.rows) and res.winner["chosen"]


def _fake_lower(model, config_json, *, bits, block_size, accuracy_level):
    """A stand-in for the rewrite: re-sets MatMulNBits accuracy_level; refuses 4 bits; crashes on block 64."""
    if bits == 4:
        raise ValueError("4-bit not supported by this fake")
    if block_size == 64:
        raise RuntimeError("a bug in the rewrite")
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for a in node.attribute:
                if a.name == "accuracy_level":
                    a.i = accuracy_level
    return model, config_json


def test_lowering_candidates_built_lazily_and_flagged(export_copy, tmp_path):
    d = export_copy("nbits")
    profile = dataclasses.replace(load_profile("cpu"), tune=TuneSpec(lowerings=(
        Lowering("ort-cpu", 32, 4, {"mlas.use_lut_gemm": "1"}), Lowering("ort-cpu", 32, 0),
        Lowering("ort-arm64-nodot", 32, 4), Lowering("ort-cpu", 64, 4))))
    res = _tune(d, profile, tmp_path, lower=_fake_lower, threads=[1])
    by = {r["lowering"]: r for r in res.rows}
    # flagged exactly when this ORT on this CPU logs its slow path for that configuration
    assert by["ort-cpu 2b bs32 acc0"]["slow_fallback"] is ort_logs_slow_fallback(0)
    assert by["ort-cpu 2b bs32 acc4 +lut"]["slow_fallback"] is ort_logs_slow_fallback(4, {"mlas.use_lut_gemm": "1"})
    assert by["ort-cpu 2b bs32 acc4 +lut"]["session_config"] == {"mlas.use_lut_gemm": "1"}
    # a refusal (ValueError) is a skipped candidate with its reason; a crash is an error
    assert by["ort-arm64-nodot 4b bs32 acc4"]["status"] == "skipped"
    assert by["ort-arm64-nodot 4b bs32 acc4"]["message"] == "skipped: 4-bit not supported by this fake"
    assert by["ort-cpu 2b bs64 acc4"]["status"] == "error"
    assert by["ort-cpu 2b bs64 acc4"]["message"] == "lowering failed: RuntimeError: a bug in the rewrite"
    assert res.winner is not None and res.winner["status"] == "ok"
    if res.plan.model_file:  # a lowered winner travels with the plan, its sha256 recorded
        assert (d / res.plan.model_file).is_file() and res.plan.model_sha256


def test_call_lower_takes_the_bits_from_the_target_registry():
    seen = {}

    def lower(model, config_json, *, bits, block_size, accuracy_level):
        seen["args"] = (bits, block_size, accuracy_level, config_json["x"])
        return model, {**config_json, "lowered": True}

    assert call_lower(lower, "M", {"x": 1}, Lowering("ort-arm64-nodot", 64, 4)) == ("M", {"x": 1, "lowered": True})
    assert seen["args"] == (4, 64, 4, 1)
    call_lower(lower, "M", {"x": 2}, Lowering("ort-cpu", 128, 4))
    assert seen["args"] == (2, 128, 4, 2)
    with pytest.raises(ValueError, match="target portable has no MatMulNBits lowering"):
        call_lower(lower, "M", {}, Lowering("portable"))


def test_real_exporter_lowering(export_copy, tmp_path):
    """With the real rewrite (``ternarylm.format.relower.lower``, the default): the portable export
    lowered to MatMulNBits variants."""
    d = export_copy("portable")
    profile = dataclasses.replace(load_profile("cpu"), tune=TuneSpec(lowerings=(
        Lowering("ort-cpu", 32, 4), Lowering("ort-arm64-nodot", 32, 4))))
    res = _tune(d, profile, tmp_path, threads=[1])
    lowered = [r for r in res.rows if r["target"] != "as-exported"]
    assert all(r["status"] == "ok" and r["passed"] for r in lowered), lowered
    assert all(r["max_rel_diff"] < 0.05 for r in lowered)
    plan = load_plan(plan_path(d, "cpu"), ort_version=ORT, manifest_sha256=ModelFolder.open(d).manifest_sha256)
    if plan.model_file:
        assert (d / plan.model_file).is_file() and (d / plan.config_file).is_file()


def test_stale_and_broken_plans(export_copy, tmp_path):
    d = export_copy("nbits")
    _tune(d, load_profile("cpu"), tmp_path, lower=None, threads=[1])
    pfile = plan_path(d, "cpu")
    sha = ModelFolder.open(d).manifest_sha256
    with pytest.raises(StalePlanError, match=r"tuned with onnxruntime 1.32.0-test, this is 9.9; re-tune: "
                                             r"ternary-profile --device cpu --model .* --tune"):
        load_plan(pfile, ort_version="9.9", manifest_sha256=sha)
    with pytest.raises(StalePlanError, match="re-exported since"):
        load_plan(pfile, ort_version=ORT, manifest_sha256="0" * 64)
    data = json.loads(pfile.read_text())
    data["model_file"], data["model_sha256"] = "model.cpu.onnx", "1" * 64
    pfile.write_text(json.dumps(data))
    with pytest.raises(PlanError, match="missing or modified"):
        load_plan(pfile)
    pfile.write_text("{not json")
    with pytest.raises(PlanError, match="not a device plan"):
        load_plan(pfile)
    with pytest.raises(PlanError, match="no such plan"):
        load_plan(tmp_path / "nope.json")
