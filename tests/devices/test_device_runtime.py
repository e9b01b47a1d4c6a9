"""``runtime_settings``: what ternary-run gets from a device profile and plan; and the lean-import promise."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from ternarylm.devices import DeviceError, ProviderError, StalePlanError, runtime_settings
from ternarylm.devices.plan import plan_path
from ternarylm.devices.profile import load_profile
from ternarylm.devices.tune import run_tune

from ternarylm.format.folder import ModelFolder


def test_profile_settings_without_plan(tiny_exports, fixture_root):
    rs = runtime_settings(tiny_exports["nbits"], "auto", root=str(fixture_root("rpi5")))
    assert rs.resolution.profile.name == "rpi5" and rs.resolution.on_device and rs.plan is None
    assert rs.session.intra_op_threads == 4 and rs.session.providers == ["CPUExecutionProvider"]
    assert rs.session.model.endswith("model.onnx") and rs.note is None  # ort-cpu is what rpi5 wants
    session = rs.session.create_session()
    assert {i.name for i in session.get_inputs()} >= {"input_ids", "past_key_values.0.key"}


def test_note_when_export_target_is_not_the_recommended_one(tiny_exports, fixture_root):
    rs = runtime_settings(tiny_exports["nbits"], "rpi4", root=str(fixture_root("rpi4")))
    assert "ort-arm64-nodot" in rs.note and rs.session.session_config == {}


def test_plan_is_used_and_checked(export_copy, tmp_path, fixture_root):
    import onnxruntime as ort

    d = export_copy("nbits")
    run_tune(ModelFolder.open(d), load_profile("cpu"), providers=["CPUExecutionProvider"], workdir=tmp_path / "w",
             plan_file=plan_path(d, "cpu"), on_device=True, host_summary="h", ort_version=ort.__version__,
             prompt_len=8, decode_tokens=4, warmup=0, repeats=1, threads=[1], lower=None)
    rs = runtime_settings(d, "cpu", root=str(fixture_root("x86-avx512")))
    assert rs.plan is not None and rs.session.intra_op_threads == 1 and rs.plan_file == plan_path(d, "cpu")
    assert runtime_settings(d, "cpu", root=str(fixture_root("x86-avx512")), use_plan=False).plan is None
    data = json.loads(plan_path(d, "cpu").read_text())
    data["ort_version"] = "0.1"
    plan_path(d, "cpu").write_text(json.dumps(data))
    with pytest.raises(StalePlanError, match="re-tune"):
        runtime_settings(d, "cpu", root=str(fixture_root("x86-avx512")))


def test_device_and_provider_errors(tiny_exports, fixture_root):
    with pytest.raises(DeviceError):
        runtime_settings(tiny_exports["nbits"], "jetson", root=str(fixture_root("x86-avx512")))
    with pytest.raises(ProviderError, match="onnxruntime-gpu"):
        runtime_settings(tiny_exports["nbits"], "jetson", root=str(fixture_root("jetson-orin-nano")))
    rs = runtime_settings(tiny_exports["nbits"], "jetson", root=str(fixture_root("x86-avx512")), emulate=True,
                          providers=["cpu"])
    assert rs.resolution.on_device is False and rs.session.providers == ["CPUExecutionProvider"]


BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'matplotlib'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, _Block())
"""


def test_devices_need_neither_torch_nor_transformers(tiny_exports):
    """What a Pi has: numpy, onnxruntime, onnx, click, tqdm (no matplotlib). Detection, CLI and a measurement run."""
    spec = {"session": {"model": str(tiny_exports["nbits"] / "model.onnx"), "intra_op_threads": 1},
            "config": None, "prompt_len": 4, "decode_tokens": 2, "warmup": 0, "repeats": 1}
    code = BLOCK + f"""
import ternarylm.devices, ternarylm.devices.cli, ternarylm.devices.tune, ternarylm.devices.report
from ternarylm.devices import detect_device
from ternarylm.devices.measure import measure
detect_device('/')
assert measure({spec!r})['status'] == 'ok'
assert not {{'torch', 'transformers', 'matplotlib'}} & set(sys.modules)
print('lean')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0 and "lean" in out.stdout, out.stderr
