"""The measurement process, run for real: a fresh subprocess driving onnxruntime on the tiny decoders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ternarylm.devices.runner import MeasureRequest, run_measurement
from ternarylm.devices.session import SessionSettings


def _req(folder, **kw) -> MeasureRequest:
    session = kw.pop("session", {})
    return MeasureRequest(SessionSettings(str(folder / "model.onnx"), intra_op_threads=1, **session),
                          config=kw.pop("config", str(folder / "config.json")), prompt_len=kw.pop("prompt_len", 16),
                          decode_tokens=kw.pop("decode_tokens", 8), warmup=kw.pop("warmup", 0),
                          repeats=kw.pop("repeats", 2), **kw)


def test_measures_every_figure(tiny_exports, tmp_path):
    logits = tmp_path / "logits.npy"
    r = run_measurement(_req(tiny_exports["nbits"], logits_out=str(logits), extra={"model": "x"}))
    assert r["status"] == "ok", r
    assert r["model"] == "x" and r["io"] == {"layers": 2, "kv_heads": 2, "head_dim": 64, "past_dtype": "float32",
                                              "vocab": 256}
    assert r["providers_used"] == ["CPUExecutionProvider"] and r["threads"] == 1
    assert 0 < r["load_s"] < 30 and r["peak_rss_mb"] >= r["rss_after_load_mb"] > 10
    assert r["prefill_ms"] > 0 and len(r["prefill_ms_all"]) == 2
    assert r["decode_ms_p95"] >= r["decode_ms_p50"] > 0 and r["decode_tokens_per_s"] > 0
    assert r["prefill_tokens_per_s"] == pytest.approx(16 / (r["prefill_ms"] / 1000))
    assert r["slow_fallback"] is False and "device_memory_mb" not in r
    assert np.load(logits).shape == (1 + 8, 256)  # prefill last position + each decode step


def test_same_inputs_give_same_logits_across_engines(tiny_exports, tmp_path):
    """Fixed token sequence: the nbits and dense twins see identical inputs and agree closely."""
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    assert run_measurement(_req(tiny_exports["nbits"], logits_out=str(a)))["status"] == "ok"
    assert run_measurement(_req(tiny_exports["dense"], logits_out=str(b)))["status"] == "ok"
    la, lb = np.load(a), np.load(b)
    assert np.abs(la - lb).max() / np.abs(lb).max() < 0.05
    assert (la.argmax(-1) == lb.argmax(-1)).mean() >= 0.75


def test_past_dtype_read_from_graph(tiny_exports):
    r = run_measurement(_req(tiny_exports["fp16kv"]))
    assert r["status"] == "ok" and r["io"]["past_dtype"] == "float16"


def test_runs_without_config_json(tiny_exports):
    r = run_measurement(_req(tiny_exports["nbits"], config=None))
    assert r["status"] == "ok" and r["io"]["kv_heads"] == 2


class _Arg:
    def __init__(self, name, shape, type_="tensor(float)"):
        self.name, self.shape, self.type = name, shape, type_


class _Session:
    def get_inputs(self):
        return [_Arg("input_ids", ["b", "s"], "tensor(int64)"),
                _Arg("past_key_values.0.key", ["b", "kv", "p", "hd"], "tensor(float16)"),
                _Arg("past_key_values.0.value", ["b", "kv", "p", "hd"], "tensor(float16)")]

    def get_outputs(self):
        return [_Arg("logits", ["b", "s", "v"]), _Arg("present.0.key", []), _Arg("present.0.value", [])]


def test_symbolic_dims_come_from_config_architecture():
    from ternarylm.devices.measure import DecoderIO

    arch = {"num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64, "vocab_size": 99}
    io = DecoderIO(_Session(), arch)
    assert io.describe() == {"layers": 1, "kv_heads": 2, "head_dim": 16, "past_dtype": "float16", "vocab": 99}
    with pytest.raises(ValueError, match="symbolic"):
        DecoderIO(_Session(), {})


def test_slow_fallback_is_flagged(tiny_exports):
    r = run_measurement(_req(tiny_exports["slow"], session={"log_info": True}))
    assert r["status"] == "ok" and r["slow_fallback"] is True
    fast = run_measurement(_req(tiny_exports["nbits"], session={"log_info": True}))
    assert fast["slow_fallback"] is False


def test_out_of_memory_is_a_result(tiny_exports):
    r = run_measurement(_req(tiny_exports["nbits"], memory_limit_mb=100))
    assert r["status"] == "oom" and r["message"]


def test_broken_model_is_an_error_result(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    r = run_measurement(_req(tmp_path, config=None))
    assert r["status"] == "error" and "model" in r["message"].lower()


def test_not_a_decoder(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "model.onnx")
    r = run_measurement(_req(tmp_path, config=None))
    assert r["status"] == "error" and "input_ids" in r["message"]


def test_measure_module_cli(tiny_exports, tmp_path):
    """``python -m ternarylm.devices.measure @spec.json`` prints one marked JSON line."""
    import subprocess
    import sys

    spec = _req(tiny_exports["nbits"], repeats=1).spec()
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = subprocess.run([sys.executable, "-m", "ternarylm.devices.measure", f"@{tmp_path / 'spec.json'}"],
                         capture_output=True, text=True, check=False, timeout=120)
    line = out.stdout.strip().splitlines()[-1]
    assert out.returncode == 0 and line.startswith("TERNARYLM-MEASURE ")
    assert json.loads(line.split(" ", 1)[1])["status"] == "ok"
