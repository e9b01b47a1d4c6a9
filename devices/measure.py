"""One measurement, in a fresh process: ``python -m ternarylm.devices.measure SPEC``.

SPEC is a JSON object (or ``@file.json``)::

    {"session": SessionSettings dict, "config": "DIR/config.json" | null,
     "prompt_len": 128, "decode_tokens": 64, "warmup": 1, "repeats": 3, "seed": 0,
     "logits_out": "x.npy" | null, "memory_limit_mb": null, "kv_cache": "auto", "op_profile": false}

The last stdout line is ``TERNARYLM-MEASURE {json}`` with ``status`` ``ok`` / ``oom`` / ``error``.
Needs only numpy and onnxruntime: it steps the model with ``ternarylm.onnxrt.OrtDecoder``, the decode
loop ``ternary-run`` uses (shapes from the session's own inputs; config.json's architecture fills in
symbolic dimensions).

Method (what every figure means)::

    load_s           InferenceSession construction
    peak_rss_mb      VmHWM of this process at the end (python + numpy + onnxruntime + model)
    memory_mb        that peak broken down: imports, session (of it file_backed), generation, kv_cache
    prefill_ms       median over repeats of one run on prompt_len tokens with an empty cache,
                     logits fetched to host memory
    decode_ms_*      per-token latency of decode_tokens single-token steps fed with the previous
                     step's present.* (p50 / p95 / mean over every step of every repeat)
    *_tokens_per_s   prompt_len / prefill_s and 1000 / decode mean ms
    op_profile       (when asked) ms per decoded token per operator type, from onnxruntime's profiler on a
                     second session after the timed runs (``ternarylm.onnxrt.decode_op_profile``)
Tokens are a fixed seeded sequence (not sampled), so every configuration sees identical inputs and
their logits (prefill last position + each decode step, saved to ``logits_out``) compare position by position.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

MARKER = "TERNARYLM-MEASURE "
OOM_PATTERNS = ("bad_alloc", "failed to allocate", "out of memory", "cannot allocate memory",
                "memoryerror", "unable to allocate", "failed to map segment", "cudaerrormemoryallocation",
                "memory allocation still failed")


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


def _config(path: str | None):
    """``(ModelConfig, fused attention)`` from the folder's config.json (``(None, False)`` without one:
    shapes then come from the graph alone and the cache grows by concatenation)."""
    from ternarylm.format.architecture import ModelConfig
    from ternarylm.format.targets import fused_attention

    if not path or not Path(path).is_file():
        return None, False
    config_json = json.loads(Path(path).read_text())
    return ModelConfig.from_config_json(config_json), fused_attention(config_json)


def memory_breakdown(rss_import, rss_load, file_backed_session, peak, kv_mb) -> dict | None:
    """Where the peak resident memory goes (MB): ``imports`` (python, numpy, onnxruntime), ``session``
    (weights, onnxruntime's prepacked copies, the graph; ``session_file_backed`` of it is file pages the
    session paged in, which the OS can share and drop: onnxruntime's own library code and the mapped
    external weights it still reads), ``generation`` (the rest of the peak: KV cache, activations, the
    arena) with ``kv_cache`` the cache's size for the workload."""
    if None in (rss_import, rss_load, peak):
        return None  # not Linux
    return {"imports": rss_import, "session": rss_load - rss_import, "session_file_backed": file_backed_session,
            "generation": max(peak - rss_load, 0.0), "kv_cache": kv_mb, "peak": peak}


def measure(spec: dict) -> dict:
    """Run the measurement described by ``spec`` in this process and return the result dict."""
    import numpy as np
    import onnxruntime as ort
    from ternarylm.onnxrt import OrtDecoder, SessionSettings, replay

    settings = SessionSettings.from_dict(spec["session"])
    config, fused = _config(spec.get("config"))
    prompt_len, decode = int(spec.get("prompt_len", 128)), int(spec.get("decode_tokens", 64))
    warmup, repeats = int(spec.get("warmup", 1)), max(1, int(spec.get("repeats", 3)))
    wants_gpu = any(p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in settings.providers)
    gpu_before = nvidia_used_mb() if wants_gpu else None
    avail_before = mem_available_mb()
    rss_import = proc_status_mb("VmRSS")
    file_backed_import = proc_status_mb("RssFile")

    t0 = time.perf_counter()
    session = settings.create_session()
    load_s = time.perf_counter() - t0
    rss_load = proc_status_mb("VmRSS")
    file_backed_load = proc_status_mb("RssFile")
    file_backed_session = (None if None in (file_backed_load, file_backed_import)
                           else file_backed_load - file_backed_import)
    decoder = OrtDecoder(session, config, fused_attention=fused, kv_cache=spec.get("kv_cache", "auto"))
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    tokens = rng.integers(0, decoder.io.vocab, size=prompt_len + decode).tolist()

    for _ in range(warmup):
        replay(decoder, tokens, prompt_len, min(decode, 4), keep_logits=False)
    keep = bool(spec.get("logits_out"))  # the logits cost [1 + decode, vocab] floats: kept only when asked for
    prefills, steps, logits = [], [], None
    for r in range(repeats):
        p, s, lg = replay(decoder, tokens, prompt_len, decode, keep_logits=(r == 0 and keep))
        prefills.append(p)
        steps += s
        logits = lg if r == 0 else logits
    if spec.get("logits_out"):
        np.save(spec["logits_out"], logits)

    used = session.get_providers()
    peak = proc_status_mb("VmHWM")
    io = decoder.io
    kv_mb = (2 * io.layers * (io.kv_heads or 0) * (io.head_dim or 0) * (prompt_len + decode)
             * np.dtype(io.past_dtype).itemsize) / 2**20
    result = {
        "status": "ok",
        "ort_version": ort.__version__,
        "providers_requested": settings.providers,
        "providers_used": used,
        "threads": settings.threads,
        "session_config": settings.session_config,
        "io": decoder.io.describe(),
        "kv_cache": decoder.kv_cache,
        "prompt_len": prompt_len,
        "decode_tokens": decode,
        "warmup": warmup,
        "repeats": repeats,
        "load_s": load_s,
        "rss_after_import_mb": rss_import,
        "rss_after_load_mb": rss_load,
        "peak_rss_mb": peak,
        "memory_mb": memory_breakdown(rss_import, rss_load, file_backed_session, peak, kv_mb),
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
    if spec.get("op_profile"):  # after every figure above, on a second session once the first is gone
        from ternarylm.onnxrt import decode_op_profile

        del decoder, session
        try:
            result["op_profile"] = decode_op_profile(settings, config, tokens, prompt_len, decode,
                                                     fused_attention=fused, kv_cache=spec.get("kv_cache", "auto"))
        except Exception as e:  # noqa: BLE001 - the figures above stand; say why the profile is missing
            result["op_profile"] = {"error": f"{type(e).__name__}: {e}"[:300]}
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
