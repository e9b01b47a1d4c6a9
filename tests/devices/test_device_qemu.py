"""Opt-in (``pytest -m qemu``): the export runs under qemu-aarch64 with the aarch64 onnxruntime wheel and
its logits match the x86 run; ORT's slow 2-bit path shows on a Cortex-A72 (Pi 4) and not on a Cortex-A76 (Pi 5).

Needs root (apt-get) and the Debian and PyPI registries the first time (about a minute), then ~10 s a case.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import devices_tinymodel

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "arm64_qemu.sh"

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module", autouse=True)
def _can_emulate():
    if os.uname().machine != "x86_64":
        pytest.skip("the ARM64 check emulates from an x86-64 host")
    if os.geteuid() != 0 and not shutil.which("qemu-aarch64-static"):
        pytest.skip("needs qemu-user-static and debootstrap installed, or root to install them")


@pytest.mark.parametrize("cpu, variant, bits, slow_on_arm", [
    ("cortex-a76", "nbits", 2, False),   # Pi 5: dotprod, 2-bit int8 kernel
    ("cortex-a72", "nbits", 2, True),    # Pi 4: no dotprod, 2-bit falls back to dequantize + fp32
    ("cortex-a72", "nbits", 4, False),   # Pi 4: 4-bit codes stay on a fast kernel
    ("cortex-a72", "dense", 2, False),   # the fp32 twin
])
def test_arm64_logits_match_x86(tmp_path, cpu, variant, bits, slow_on_arm):
    model = devices_tinymodel.write_folder(tmp_path / "model", variant, bits=bits)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), str(model), "--cpu", cpu, "--out", str(out)],
                          capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / f"compare-{cpu}.json").read_text())
    assert result["pass"] and result["b"]["machine"] == "aarch64" and result["a"]["machine"] == "x86_64"
    assert result["b"]["slow_fallback"] is slow_on_arm and result["a"]["slow_fallback"] is False
