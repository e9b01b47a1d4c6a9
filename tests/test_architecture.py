"""The house plan as a test: import-linter's contracts (pyproject.toml) hold for the installed package.

import-linter reads a package from disk, and the source tree maps export/, runtime_py/ and devices/
onto ternarylm.* (pyproject's package-dir), so the check runs on a copy installed with pip --target.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A copy of the source (so no stale build/ folder leaks in, and none is left behind) installed
    with ``pip --target``: the wheel's layout, where ternarylm.export etc. are real subfolders."""
    src = tmp_path_factory.mktemp("src") / "ternarylm"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                            "runs", "exports", ".*cache"))
    target = tmp_path_factory.mktemp("installed")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--target", str(target), str(src)], capture_output=True, text=True, timeout=300,
                          cwd=target)
    assert proc.returncode == 0, proc.stderr
    return target


def _lint_imports(installed: Path, config: Path) -> subprocess.CompletedProcess:
    lint = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (it is in the dev extra: pip install -e '.[dev]')")
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run([lint, "--config", str(config), "--no-cache"], capture_output=True, text=True,
                          timeout=300, cwd=installed, env=env)


def test_import_contracts_hold(installed):
    proc = _lint_imports(installed, REPO / "pyproject.toml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_a_back_edge_breaks_the_contracts(installed, tmp_path):
    """The check can fail: a device-side module that imports torch inside a function is caught."""
    sneaky = installed / "ternarylm" / "devices" / "_sneaky_import.py"
    sneaky.write_text("def f():\n    import torch\n    from ternarylm.export import api\n")
    try:
        proc = _lint_imports(installed, REPO / "pyproject.toml")
    finally:
        sneaky.unlink()
    assert proc.returncode != 0
    assert "ternarylm.devices._sneaky_import -> torch" in proc.stdout
