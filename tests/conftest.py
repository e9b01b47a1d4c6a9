"""Fixtures shared across the suite: a tiny model trained once through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY_TRAIN = ["--preset", "tiny", "--stories", "400", "--max-steps", "40", "--eval-every", "20",
              "--batch-size", "8", "--seq-len", "64", "--warmup-steps", "5", "--no-progress", "--threads", "1"]


def cli(module: str, *args, check: bool = True, timeout: int = 300, env: dict | None = None):
    """Run one of the package's CLIs in a real subprocess; returns CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder with a ternary `tiny` model trained for a few steps on the synthetic stories."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    cli("ternarylm.cli.train", "--out", out, *TINY_TRAIN)
    return out


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_run) -> Path:
    return tiny_run / "ckpt.pt"
