"""Helpers for tests that drive the real CLIs in subprocesses (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys

TINY_TRAIN = ["--preset", "tiny", "--stories", "400", "--max-steps", "40", "--eval-every", "20",
              "--batch-size", "8", "--seq-len", "64", "--warmup-steps", "5", "--no-progress", "--threads", "1"]


def cli(module: str, *args, check: bool = True, timeout: int = 300, env: dict | None = None):
    """Run one of the package's CLIs in a real subprocess; returns CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def one_line_error(proc, code: int | None = 1) -> str:
    """A CLI's refusal: exit ``code`` (any non-zero when None), no traceback, exactly one stderr line."""
    assert (proc.returncode != 0) if code is None else (proc.returncode == code), \
        (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]
