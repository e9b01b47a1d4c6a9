"""``--tune`` re-lowering to a MatMulNBits block larger than the export's scale group: exact when the
scales inside each block agree, otherwise that candidate is refused with the reason recorded (never a
silently different model), and tuning goes on with the other candidates."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import onnx
from onnx import numpy_helper
from ternarylm.devices.plan import plan_path
from ternarylm.devices.profile import Lowering, TuneSpec, load_profile
from ternarylm.devices.tune import run_tune

from ternarylm.format.folder import ModelFolder

LOWERINGS = (Lowering("ort-cpu", 32, 4), Lowering("ort-cpu", 64, 4), Lowering("ort-cpu", 128, 4))


def _tune(folder_dir, tmp_path):
    profile = dataclasses.replace(load_profile("cpu"), tune=TuneSpec(lowerings=LOWERINGS))
    folder = ModelFolder.open(folder_dir)
    res = run_tune(folder, profile, providers=["CPUExecutionProvider"], workdir=tmp_path / "work",
                   plan_file=plan_path(folder_dir, profile.name), on_device=True, host_summary="test host",
                   ort_version="test", prompt_len=16, decode_tokens=8, warmup=0, repeats=1, threads=[1])
    return res, {r["lowering"]: r for r in res.rows}


def _vary_block_scales(folder_dir):
    """Give each block of 32 of every ternary layer its own scale (x1, x2, x0.5, x1.5): the export now
    holds a group-32 checkpoint whose scales differ inside any block of 64 or 128; manifest re-hashed."""
    model = onnx.load(str(folder_dir / "model.onnx"))
    weights = json.loads((folder_dir / "config.json").read_text())["weights"]
    names = {e["scales"] for e in weights.values() if e["kind"] == "nbits"}
    for t in model.graph.initializer:
        if t.name in names:
            s = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array((s * np.array([1.0, 2.0, 0.5, 1.5], np.float32)).astype(s.dtype),
                                               t.name))
    onnx.save(model, str(folder_dir / "model.onnx"))
    manifest = json.loads((folder_dir / "manifest.json").read_text())
    data = (folder_dir / "model.onnx").read_bytes()
    manifest["files"]["model.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return len(names)


def test_differing_scales_refuse_larger_blocks_and_tuning_goes_on(export_copy, tmp_path):
    d = export_copy("nbits")  # bits 2, block 32
    assert _vary_block_scales(d) == 2
    res, by = _tune(d, tmp_path)
    for bs in (64, 128):
        row = by[f"ort-cpu 2b bs{bs} acc4"]
        assert row["status"] == "skipped" and row["passed"] is False and not row["chosen"], row
        assert (f"block_size {bs} is larger than the checkpoint's scale group 32" in row["message"]
                and "use block size 32 or less" in row["message"]), row["message"]
        assert "\n" not in row["message"]
        assert not list((tmp_path / "work").glob(f"*bs{bs}*.onnx"))  # nothing half-lowered was written
    same = by["ort-cpu 2b bs32 acc4"]  # re-lowering at the export's own block is exact
    assert same["status"] == "ok" and same["passed"] and same["max_rel_diff"] <= 1e-5, same
    assert res.winner is not None and res.winner["block_size"] in (None, 32)


def test_equal_scales_inside_a_block_lower_exactly(export_copy, tmp_path):
    """The pristine export's scales are per row (equal across its blocks of 32), so blocks of 64 and
    128 carry them exactly; only MatMulNBits' per-block activation quantisation moves the logits."""
    _, by = _tune(export_copy("nbits"), tmp_path)
    for bs in (64, 128):
        row = by[f"ort-cpu 2b bs{bs} acc4"]
        assert row["status"] == "ok" and row["passed"], row
        assert row["max_rel_diff"] < 0.05 and row["argmax_agreement"] >= 0.9, row
