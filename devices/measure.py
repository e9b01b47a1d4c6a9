"""One measurement, in a fresh process: ``python -m ternarylm.devices.measure SPEC``.

SPEC is a JSON object (or ``@file.json``)::

    {"session": SessionSettings dict, "config": "DIR/config.json" | null,
     "prompt_len": 128, "decode_tokens": 64, "warmup": 1, "repeats": 3, "seed": 0,
     "logits_out": "x.npy" | null, "memory_limit_mb": null}

The last stdout line is ``TERNARYLM-MEASURE {json}`` with ``status`` ``ok`` / ``oom`` / ``error``.
Needs only numpy and onnxruntime: it drives the decoder through the standard IO names
(input_ids, attention_mask, position_ids, past_key_values.N.key|value -> logits, present.N.key|value),
reading the layer count, KV heads, head_dim and past dtype from the session's own inputs
(config.json ``architecture`` fills in symbolic dimensions).

Method (what every figure means)::

    load_s           InferenceSession construction
    peak_rss_mb      VmHWM of this process at the end (python + numpy + onnxruntime + model)
    prefill_ms       median over repeats of one run on prompt_len tokens with an empty cache,
                     logits fetched to host memory
    decode_ms_*      per-token latency of decode_tokens single-token steps fed with the previous
                     step's present.* (p50 / p95 / mean over every step of every repeat)
    *_tokens_per_s   prompt_len / prefill_s and 1000 / decode mean ms
Tokens are a fixed seeded sequence (not sampled), so every configuration sees identical inputs and
their logits (prefill last position + each decode step, saved to ``logits_out``) compare position by position.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

MARKER = "TERNARYLM-MEASURE "
OOM_PATTERNS = ("bad_alloc", "failed to allocate", "out of memory", "cannot allocate memory",
                "memoryerror", "unable to allocate", "failed to map segment", "cudaerrormemoryallocation",
                "memory allocation still failed")
_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")


def looks_like_oom(text: str) -> bool:
    t = text.lower()
    return any(p in t for p in OOM_PATTERNS)


def proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def mem_available_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def nvidia_used_mb() -> float | None:
    """Device memory in use on GPU 0 per nvidia-smi (None without one)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, check=False, timeout=20)
        return float(out.stdout.split()[0]) if out.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


class DecoderIO:
    """The decoder's IO as the session declares it."""

    def __init__(self, session, architecture: dict):
        import numpy as np

        inputs = {i.name: i for i in session.get_inputs()}
        self.input_names = set(inputs)
        for need in ("input_ids",):
            if need not in inputs:
                raise ValueError(f"model has no {need!r} input; not a decoder with the standard IO names")
        layers = sorted({int(m.group(1)) for n in inputs if (m := _PAST.match(n))})
        self.layers = len(layers)
        self.past_names = [(f"past_key_values.{i}.key", f"past_key_values.{i}.value") for i in layers]
        self.present_names = [(f"present.{i}.key", f"present.{i}.value") for i in layers]
        outputs = [o.name for o in session.get_outputs()]
        if "logits" not in outputs:
            raise ValueError("model has no 'logits' output")
        missing = [n for pair in self.present_names for n in pair if n not in outputs]
        if missing:
            raise ValueError(f"model lacks outputs {missing[:2]}... for its past_key_values inputs")
        self.output_names = ["logits"] + [n for pair in self.present_names for n in pair]
        arch = architecture or {}
        kv_default = arch.get("num_key_value_heads") or arch.get("num_attention_heads")
        hd_default = arch.get("head_dim") or (
            arch["hidden_size"] // arch["num_attention_heads"] if arch.get("hidden_size") else None)
        self.kv_heads = self.head_dim = None
        self.past_dtype = np.float32
        if self.past_names:
            first = inputs[self.past_names[0][0]]
            shape = list(first.shape)
            self.kv_heads = shape[1] if isinstance(shape[1], int) else kv_default
            self.head_dim = shape[3] if isinstance(shape[3], int) else hd_default
            if self.kv_heads is None or self.head_dim is None:
                raise ValueError("past_key_values shapes are symbolic and config.json has no architecture")
            self.past_dtype = {"tensor(float16)": np.float16, "tensor(bfloat16)": np.float32}.get(
                first.type, np.float32)
        logits_shape = next(o.shape for o in session.get_outputs() if o.name == "logits")
        self.vocab = logits_shape[-1] if isinstance(logits_shape[-1], int) else arch.get("vocab_size")
        if not self.vocab:
            raise ValueError("vocab size is symbolic in the graph and config.json has no architecture")

    def describe(self) -> dict:
        import numpy as np

        return {"layers": self.layers, "kv_heads": self.kv_heads, "head_dim": self.head_dim,
                "past_dtype": np.dtype(self.past_dtype).name, "vocab": self.vocab}


def _ov(array):
    import onnxruntime as ort

    return ort.OrtValue.ortvalue_from_numpy(array)


def generate_timed(session, io: DecoderIO, tokens, prompt_len: int, decode_tokens: int, keep_logits: bool):
    """Prefill ``tokens[:prompt_len]`` then feed the next ``decode_tokens`` one by one.

    Returns ``(prefill_ms, [step_ms...], logits [1 + decode_tokens, vocab] or None)``.
    """
    import numpy as np

    feeds = {name: _ov(np.zeros((1, io.kv_heads, 0, io.head_dim), io.past_dtype))
             for pair in io.past_names for name in pair}
    kept, steps, prefill_ms = [], [], 0.0
    past = 0
    for step in range(decode_tokens + 1):
        cur = tokens[:prompt_len] if step == 0 else tokens[prompt_len + step - 1: prompt_len + step]
        n = len(cur)
        t0 = time.perf_counter()
        feeds["input_ids"] = _ov(np.asarray(cur, np.int64).reshape(1, n))
        if "attention_mask" in io.input_names:
            feeds["attention_mask"] = _ov(np.ones((1, past + n), np.int64))
        if "position_ids" in io.input_names:
            feeds["position_ids"] = _ov(np.arange(past, past + n, dtype=np.int64).reshape(1, n))
        outs = session.run_with_ort_values(io.output_names, feeds)
        logits = outs[0].numpy()
        ms = (time.perf_counter() - t0) * 1000
        if keep_logits:
            kept.append(logits[0, -1].astype(np.float32))
        for (pk, pv), k, v in zip(io.past_names, outs[1::2], outs[2::2]):
            feeds[pk], feeds[pv] = k, v
        past += n
        if step == 0:
            prefill_ms = ms
        else:
            steps.append(ms)
    return prefill_ms, steps, (np.stack(kept) if keep_logits else None)


def measure(spec: dict) -> dict:
    """Run the measurement described by ``spec`` in this process and return the result dict."""
    import numpy as np
    import onnxruntime as ort
    from ternarylm.devices.session import SessionSettings

    settings = SessionSettings.from_dict(spec["session"])
    arch = {}
    if spec.get("config") and Path(spec["config"]).is_file():
        arch = json.loads(Path(spec["config"]).read_text()).get("architecture", {})
    prompt_len, decode = int(spec.get("prompt_len", 128)), int(spec.get("decode_tokens", 64))
    warmup, repeats = int(spec.get("warmup", 1)), max(1, int(spec.get("repeats", 3)))
    wants_gpu = any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in settings.providers)
    gpu_before = nvidia_used_mb() if wants_gpu else None
    avail_before = mem_available_mb()
    rss_import = proc_status_mb("VmRSS")

    t0 = time.perf_counter()
    session = settings.create_session()
    load_s = time.perf_counter() - t0
    rss_load = proc_status_mb("VmRSS")
    io = DecoderIO(session, arch)
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    tokens = rng.integers(0, io.vocab, size=prompt_len + decode).tolist()

    for _ in range(warmup):
        generate_timed(session, io, tokens, prompt_len, min(decode, 4), keep_logits=False)
    prefills, steps, logits = [], [], None
    for r in range(repeats):
        p, s, lg = generate_timed(session, io, tokens, prompt_len, decode, keep_logits=(r == 0))
        prefills.append(p)
        steps += s
        logits = lg if r == 0 else logits
    if spec.get("logits_out"):
        np.save(spec["logits_out"], logits)

    used = session.get_providers()
    result = {
        "status": "ok",
        "ort_version": ort.__version__,
        "providers_requested": settings.providers,
        "providers_used": used,
        "threads": settings.threads,
        "session_config": settings.session_config,
        "io": io.describe(),
        "prompt_len": prompt_len,
        "decode_tokens": decode,
        "warmup": warmup,
        "repeats": repeats,
        "load_s": load_s,
        "rss_after_import_mb": rss_import,
        "rss_after_load_mb": rss_load,
        "peak_rss_mb": proc_status_mb("VmHWM"),
        "prefill_ms": float(np.median(prefills)),
        "prefill_ms_all": prefills,
        "prefill_tokens_per_s": prompt_len / (float(np.median(prefills)) / 1000) if prefills else None,
    }
    if steps:
        a = np.asarray(steps)
        result.update(decode_ms_p50=float(np.percentile(a, 50)), decode_ms_p95=float(np.percentile(a, 95)),
                      decode_ms_mean=float(a.mean()), decode_tokens_per_s=float(1000 / a.mean()))
    if "CUDAExecutionProvider" in used or "TensorrtExecutionProvider" in used:
        if Path("/etc/nv_tegra_release").exists() and avail_before is not None:
            # Jetson: CPU and GPU share memory; the drop of MemAvailable is what the model took.
            result["device_memory_mb"] = avail_before - (mem_available_mb() or avail_before)
            result["device_memory_method"] = "meminfo MemAvailable drop (shared memory)"
        else:
            after = nvidia_used_mb()
            if gpu_before is not None and after is not None:
                result["device_memory_mb"] = after - gpu_before
                result["device_memory_method"] = "nvidia-smi memory.used delta"
    return result


def _limit_memory(mb: int) -> None:
    import resource

    limit = int(mb) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m ternarylm.devices.measure SPEC_JSON|@spec.json", file=sys.stderr)
        return 2
    raw = Path(argv[0][1:]).read_text() if argv[0].startswith("@") else argv[0]
    spec = json.loads(raw)
    if spec.get("memory_limit_mb"):
        _limit_memory(spec["memory_limit_mb"])
    try:
        result = measure(spec)
        code = 0
    except MemoryError as e:
        result, code = {"status": "oom", "message": f"MemoryError: {e}"[:500]}, 3
    except Exception as e:  # noqa: BLE001  (never crash the sweep: the parent records this outcome)
        msg = f"{type(e).__name__}: {e}".strip()
        oom = looks_like_oom(msg)
        result, code = {"status": "oom" if oom else "error", "message": msg[:500]}, 3 if oom else 4
    result["pid"] = os.getpid()
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
