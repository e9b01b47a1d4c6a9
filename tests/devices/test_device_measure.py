"""The measurement process, run for real: a fresh subprocess driving onnxruntime on the tiny decoders."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from ternarylm.devices.runner import MeasureRequest, run_measurement
from ternarylm.onnxrt import SessionSettings


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
    m = r["memory_mb"]  # the peak, broken down: the parts add up to it
    assert m["imports"] + m["session"] + m["generation"] == pytest.approx(m["peak"], abs=0.01)
    assert m["imports"] == r["rss_after_import_mb"] and m["peak"] == r["peak_rss_mb"]
    # 2 layers x (key, value) x 2 kv heads x 64 dims x (16 prompt + 8 decoded) tokens x 4 bytes
    assert m["kv_cache"] == pytest.approx(2 * 2 * 2 * 64 * 24 * 4 / 2**20)


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
    from ternarylm.onnxrt import DecoderIO

    arch = {"num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64, "vocab_size": 99}
    io = DecoderIO(_Session(), arch)
    assert io.describe() == {"layers": 1, "kv_heads": 2, "head_dim": 16, "past_dtype": "float16", "vocab": 99}
    with pytest.raises(ValueError, match="symbolic"):
        DecoderIO(_Session(), {})


def ort_logs_slow_fallback(accuracy_level: int, session_config: dict | None = None) -> bool:
    """Whether this onnxruntime on this CPU logs the slow-path line (``SLOW_FALLBACK_MARKER``, at INFO)
    running a MatMulNBits shaped like the tiny exports' (bits 2, block 32, K = N = 128), asked
    directly in a fresh process (ORT logs to the process's stderr), without the runner. Which
    configurations fall back, and the wording, depend on the ORT version and the CPU (dotprod)."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from ternarylm.onnxrt import SLOW_FALLBACK_MARKER

    from ternarylm.format.codecs import to_matmul_nbits

    k = 128
    b, s, z = to_matmul_nbits(np.zeros((k, k), np.int8), np.ones((k, 1), np.float32), 2, 32)
    node = helper.make_node("MatMulNBits", ["A", "B", "s", "z"], ["Y"], domain="com.microsoft", K=k, N=k, bits=2,
                            block_size=32, accuracy_level=accuracy_level)
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, k])],
                              [numpy_helper.from_array(b, "B"), numpy_helper.from_array(s.reshape(-1), "s"),
                               numpy_helper.from_array(z, "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(model, path)
        code = ("import numpy as np, onnxruntime as ort\n"
                "so = ort.SessionOptions()\nso.log_severity_level = 1\n"
                f"for key, value in {dict(session_config or {})!r}.items():\n"
                "    so.add_session_config_entry(key, value)\n"
                f"sess = ort.InferenceSession({str(path)!r}, so, providers=['CPUExecutionProvider'])\n"
                f"sess.run(None, {{'A': np.ones((1, {k}), np.float32)}})\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return SLOW_FALLBACK_MARKER in proc.stderr


def test_slow_fallback_is_flagged(tiny_exports):
    """The runner flags exactly the runs whose ORT log has the slow-path line, as this ORT on this CPU
    logs it when asked directly (accuracy_level 0 falls back; 4 does not where MLAS has int8 kernels).
    Skipped where this ORT never logs the line the runner looks for (another version's wording)."""
    import onnxruntime as ort
    from ternarylm.onnxrt import SLOW_FALLBACK_MARKER

    if not ort_logs_slow_fallback(0):
        pytest.skip(f"onnxruntime {ort.__version__} logs no {SLOW_FALLBACK_MARKER!r} for an accuracy_level 0 "
                    "2-bit MatMulNBits, so the slow-path flag cannot be observed here")
    r = run_measurement(_req(tiny_exports["slow"], session={"log_info": True}))
    assert r["status"] == "ok" and r["slow_fallback"] is True
    fast = run_measurement(_req(tiny_exports["nbits"], session={"log_info": True}))
    assert fast["status"] == "ok" and fast["slow_fallback"] is ort_logs_slow_fallback(4)


# What an allocation failure says: Python's MemoryError, the dynamic loader unable to map a shared
# library (what a 100 MB address-space limit hits first: importing onnxruntime), C++ and libc.
ALLOCATION_FAILURE = re.compile(r"MemoryError|failed to map segment|allocation still failed|bad_alloc|cannot allocate memory|"
                                r"out of memory|failed to allocate|unable to allocate", re.IGNORECASE)


def test_out_of_memory_is_a_result(tiny_exports):
    """Under a 100 MB address-space limit the run really runs out of memory: status oom, and the message
    is the allocation failure itself (not just "it died while a limit was set")."""
    r = run_measurement(_req(tiny_exports["nbits"], memory_limit_mb=100))
    assert r["status"] == "oom" and ALLOCATION_FAILURE.search(r["message"]), r


def test_broken_model_is_an_error_result(tmp_path):
    """A bad model is an error, with or without a memory limit: a limit does not turn failures into oom."""
    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    r = run_measurement(_req(tmp_path, config=None))
    assert r["status"] == "error" and "model" in r["message"].lower()
    limited = run_measurement(_req(tmp_path, config=None, memory_limit_mb=2048))
    assert limited["status"] == "error" and "model" in limited["message"].lower(), limited


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


def test_op_profile_splits_a_decoded_token_by_operator(tiny_exports):
    """``op_profile``: onnxruntime's profiler on a second session, decode steps only, per operator type; the
    timed figures come from the unprofiled session as before."""
    r = run_measurement(_req(tiny_exports["nbits"], op_profile=True))
    assert r["status"] == "ok", r
    profile = r["op_profile"]
    assert profile["tokens"] == 8 and profile["run_ms"] > 0  # one profiled run per decode step, prefill left out
    ms = profile["ms_per_token"]
    assert "MatMulNBits" in ms and all(v > 0 for v in ms.values())
    assert list(ms.values()) == sorted(ms.values(), reverse=True)  # largest first
    assert sum(ms.values()) <= profile["run_ms"]  # node kernels fit inside their runs
    assert "op_profile" not in run_measurement(_req(tiny_exports["nbits"]))
