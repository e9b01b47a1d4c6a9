"""The install a device gets: the wheel built from this repo, in a fresh venv, with core dependencies only.

An editable install maps export/, runtime_py/ and devices/ straight from the checkout, so it cannot show
a wheel that lacks them. Here the wheel alone runs ``ternary-run`` (both engines) and ``ternary-profile``
on an export made by the test environment, and torch, transformers and matplotlib are not even installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from clitools import cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Repo folder -> its path inside the wheel (pyproject's package-dir).
PACKAGE_ROOTS = {"ternarylm": "ternarylm", "export": "ternarylm/export", "runtime_py": "ternarylm/runtime_py",
                 "devices": "ternarylm/devices"}
HEAVY = ("torch", "transformers", "matplotlib")
PROMPT = "Once upon a time"
# Build from a copy: an in-tree build leaves build/ and egg-info behind and races with other builds.
NOT_SOURCE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".ruff_cache", "runs", "exports", ".whl", ".device")


def _env() -> dict:
    """Nothing of the test environment may leak into the device venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1"}


def _run(args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wheel")


@pytest.fixture(scope="module")
def wheel(work) -> Path:
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", work / "dist", src], cwd=work)
    (whl,) = (work / "dist").glob("ternarylm-*.whl")
    return whl


@pytest.fixture(scope="module")
def device_bin(work, wheel) -> Path:
    """bin/ of a fresh venv (no system site packages) holding the wheel and its core dependencies."""
    try:
        import ensurepip  # noqa: F401
        import venv  # noqa: F401
    except ImportError as e:
        pytest.skip(f"this Python cannot make a venv with pip ({e})")
    env_dir = work / "device-venv"
    _run([sys.executable, "-m", "venv", env_dir], cwd=work)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    _run([bin_dir / "python", "-m", "pip", "install", wheel], cwd=work, timeout=600)
    return bin_dir


@pytest.fixture(scope="module")
def export_dir(tiny_ckpt, work) -> Path:
    """An ort-cpu export and its fp32 twin (``<out>-fp32``), made where torch is."""
    out = work / "export" / "tiny"
    cli("ternarylm.export.cli", "onnx", tiny_ckpt, "--out", out, "--target", "ort-cpu", "--with-baseline", "--force")
    assert (out / "model.onnx").is_file() and (out.parent / "tiny-fp32" / "model.onnx").is_file()
    return out


def test_wheel_holds_every_module_and_profile(wheel):
    """A subpackage missing from pyproject's explicit package list would be missing here."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{dst}/{f.relative_to(ROOT / src).as_posix()}"
                for src, dst in PACKAGE_ROOTS.items()
                for f in (ROOT / src).rglob("*")
                if f.suffix in (".py", ".toml") and "__pycache__" not in f.parts}
    assert "ternarylm/devices/profiles/cpu.toml" in expected
    assert sorted(expected - names) == []


def test_device_venv_has_core_dependencies_only(device_bin, work):
    code = f"""
import importlib.metadata as md, importlib.util, ternarylm
print(ternarylm.__file__)
names = {{(d.metadata['Name'] or '').lower() for d in md.distributions()}}
print(sorted(m for m in {HEAVY!r} if m in names or importlib.util.find_spec(m)))
"""
    where, heavy = _run([device_bin / "python", "-c", code], cwd=work).stdout.splitlines()
    assert Path(where).is_relative_to(device_bin.parent), where  # the wheel, not the checkout
    assert heavy == "[]"


def test_device_imports_stay_light(device_bin, work):
    """The on-device modules import without torch, transformers or matplotlib (nor does a chart-less report)."""
    code = f"""
import sys
import ternarylm, ternarylm.runtime_py, ternarylm.runtime_py.cli, ternarylm.export, ternarylm.format.lowering
import ternarylm.devices, ternarylm.devices.cli, ternarylm.devices.measure, ternarylm.devices.tune
from ternarylm.devices import report
assert report.optional_pyplot() is None
print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))
"""
    assert _run([device_bin / "python", "-c", code], cwd=work).stdout.strip() == "[]"


def test_ternary_run_both_engines(device_bin, export_dir, work):
    texts = {}
    for engine in ("ort", "numpy"):
        proc = _run([device_bin / "ternary-run", export_dir, "--prompt", PROMPT, "--max-new-tokens", "8",
                     "--engine", engine], cwd=work, timeout=120)
        texts[engine] = proc.stdout.strip()
        assert texts[engine].startswith(PROMPT) and len(texts[engine]) > len(PROMPT), proc.stdout
        assert f"[{engine}]" in proc.stderr and "generated 8 tokens" in proc.stderr, proc.stderr
    assert texts["ort"] == texts["numpy"]  # greedy decoding: both engines pick the same tokens


def test_ternary_profile_without_matplotlib(device_bin, export_dir, work):
    out = work / "profile"
    proc = _run([device_bin / "ternary-profile", "--device", "cpu", "--model", export_dir,
                 "--baseline", export_dir.parent / "tiny-fp32", "--out", out, "--prompt-len", "16",
                 "--decode-tokens", "8", "--warmup", "0", "--repeats", "1"], cwd=work, timeout=300)
    assert "ratio (x better)" in proc.stdout
    notes = [ln for ln in proc.stdout.splitlines() if "matplotlib" in ln]
    assert notes == ['note: no PNG chart (matplotlib not installed); pip install "ternarylm[plots]"'], proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert {r["model"]: r["status"] for r in report["results"]} == {"ternary": "ok", "baseline": "ok"}
    assert not (out / "profile.png").exists()


def test_training_side_commands_name_the_missing_extra(device_bin, tiny_ckpt, work):
    """A device install has no torch: ternary-export says in one line which extra brings it."""
    proc = subprocess.run([str(device_bin / "ternary-export"), "onnx", str(tiny_ckpt), "--out", str(work / "x")],
                          cwd=work, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ['Error: torch is not installed and this command needs it; '
                                                'pip install "ternarylm[train]"']
    assert not (work / "x").exists()
