"""Run one measurement in a fresh Python process and classify how it ended.

Every configuration gets its own process, so peak RSS (VmHWM) and load time are that model's alone,
and a crash or out-of-memory ends that configuration only: the sweep records it and goes on.
"""

from __future__ import annotations

import json
import signal
import os
import subprocess
import sys
from dataclasses import dataclass, field

from ternarylm.devices.measure import MARKER, looks_like_oom
from ternarylm.onnxrt.session import SLOW_FALLBACK_MARKER, SessionSettings


@dataclass
class MeasureRequest:
    """What to measure: session settings plus the workload (see measure.py for each figure)."""

    session: SessionSettings
    config: str | None = None
    prompt_len: int = 128
    decode_tokens: int = 64
    warmup: int = 1
    repeats: int = 3
    seed: int = 0
    logits_out: str | None = None
    memory_limit_mb: int | None = None
    kv_cache: str = "auto"  # OrtDecoder's: auto (in place on fused graphs) | in-place | growing
    op_profile: bool = False  # also time each operator type per decoded token (onnxruntime's profiler)
    timeout_s: float = 600.0
    extra: dict = field(default_factory=dict)  # labels carried into the result (model, candidate, ...)

    def spec(self) -> dict:
        return {"session": self.session.to_dict(), "config": self.config, "prompt_len": self.prompt_len,
                "decode_tokens": self.decode_tokens, "warmup": self.warmup, "repeats": self.repeats,
                "seed": self.seed, "logits_out": self.logits_out, "memory_limit_mb": self.memory_limit_mb,
                "kv_cache": self.kv_cache, "op_profile": self.op_profile}


# How a process dies when an allocation fails and nothing catches it: abort (std::bad_alloc) or a
# segfault on the null it got back. Any other failure under a memory limit is reported as an error.
ABORTS = (-signal.SIGABRT, -signal.SIGSEGV, 134, 139)


def _tail(text: str, n: int = 300) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[-n:]


def run_measurement(req: MeasureRequest, python: str = sys.executable) -> dict:
    """Measure in a subprocess. Always returns a dict with ``status`` (ok / oom / error / timeout)."""
    cmd = [python, "-m", "ternarylm.devices.measure", json.dumps(req.spec())]
    try:
        # PYTHONSAFEPATH (3.11+): the child imports the installed ternarylm, not a ./ternarylm source folder in
        # the current directory (running from a checkout after `pip install .` would otherwise break it)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=req.timeout_s,
                              env={**os.environ, "PYTHONSAFEPATH": "1"})
    except subprocess.TimeoutExpired:
        return {**req.extra, "status": "timeout", "message": f"no result within {req.timeout_s:.0f} s"}
    result = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER):])
            break
    if result is None:
        why = _tail(proc.stderr) or (f"killed by signal {signal.Signals(-proc.returncode).name}"
                                     if proc.returncode < 0 else f"exited with {proc.returncode}")
        limit = f" (memory limit {req.memory_limit_mb} MB)" if req.memory_limit_mb else ""
        if proc.returncode in (-signal.SIGKILL, 137):
            result = {"status": "oom", "message": "killed by the system (out of memory?)" + limit}
        elif looks_like_oom(proc.stderr) or (req.memory_limit_mb and proc.returncode in ABORTS):
            # an allocation that fails under an address-space limit aborts (std::bad_alloc) or segfaults
            result = {"status": "oom", "message": why + limit}
        else:
            result = {"status": "error", "message": why}
    result["slow_fallback"] = SLOW_FALLBACK_MARKER in proc.stderr
    result["returncode"] = proc.returncode
    return {**req.extra, **result}
