"""Logits of an export folder under onnxruntime, for the ARM64-vs-x86 check (numpy + onnxruntime only).

    python arm64_qemu.py run EXPORT_DIR OUT.npz [--prompt-len 16] [--decode-tokens 8]
    python arm64_qemu.py compare X86.npz ARM.npz [--max-rel-diff 0.02] [--min-argmax 0.9]

``run`` feeds a fixed seeded token sequence through the decoder with ``ternarylm.onnxrt`` (the decode
loop every other tool uses; it needs numpy + onnxruntime, and the repo root on PYTHONPATH) and saves the
prefill's last-position logits plus each decode step's, with the platform, the onnxruntime version and
whether ORT logged its slow MatMulNBits path ("Falling back to using unpacked compute mode").
``compare`` prints the relative max difference and greedy agreement and exits 1 beyond tolerance.
benchmarks/arm64_qemu.sh runs ``run`` natively and under qemu-aarch64, then ``compare``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

def run(model_dir: str, out: str, prompt_len: int, decode_tokens: int, threads: int) -> dict:
    import onnxruntime as ort

    from ternarylm.format.architecture import ModelConfig
    from ternarylm.format.targets import fused_attention
    from ternarylm.onnxrt import SLOW_FALLBACK_MARKER, OrtDecoder, SessionSettings, replay

    cfg_path = os.path.join(model_dir, "config.json")
    config, fused = None, False
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            config_json = json.load(f)
        config, fused = ModelConfig.from_config_json(config_json), fused_attention(config_json)
    settings = SessionSettings(model=os.path.join(model_dir, "model.onnx"), intra_op_threads=threads,
                               log_info=True)  # INFO: the slow-path line is logged at this level
    # ORT logs to fd 2: point it at a file for the session's lifetime to look for the fallback line.
    log = tempfile.TemporaryFile()  # noqa: SIM115  (fd 2 points at it until the finally below)
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    try:
        t0 = time.perf_counter()
        decoder = OrtDecoder(settings.create_session(), config, fused_attention=fused)
        load_s = time.perf_counter() - t0
        tokens = np.random.default_rng(0).integers(0, decoder.io.vocab, size=prompt_len + decode_tokens).tolist()
        t0 = time.perf_counter()
        _, _, logits = replay(decoder, tokens, prompt_len, decode_tokens, keep_logits=True)
        run_s = time.perf_counter() - t0
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    log.seek(0)
    slow = SLOW_FALLBACK_MARKER in log.read().decode("utf-8", "replace")
    log.close()
    info = {"machine": platform.machine(), "onnxruntime": ort.__version__, "numpy": np.__version__,
            "slow_fallback": slow, "load_s": load_s, "run_s": run_s, "prompt_len": prompt_len,
            "decode_tokens": decode_tokens}
    np.savez(out, logits=logits, info=json.dumps(info))
    print(json.dumps(info))
    return info


def compare(a_path: str, b_path: str, max_rel_diff: float, min_argmax: float) -> int:
    a, b = np.load(a_path), np.load(b_path)
    la, lb = a["logits"], b["logits"]
    ia, ib = json.loads(str(a["info"])), json.loads(str(b["info"]))
    rel = float(np.abs(la - lb).max() / max(float(np.abs(la).max()), 1e-12))
    agree = float((la.argmax(-1) == lb.argmax(-1)).mean())
    ok = rel <= max_rel_diff and agree >= min_argmax
    print(json.dumps({"a": ia, "b": ib, "positions": int(la.shape[0]), "max_abs_diff": float(np.abs(la - lb).max()),
                      "max_rel_diff": rel, "argmax_agreement": agree, "pass": ok}, indent=2))
    return 0 if ok else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("model_dir")
    r.add_argument("out")
    r.add_argument("--prompt-len", type=int, default=16)
    r.add_argument("--decode-tokens", type=int, default=8)
    r.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--max-rel-diff", type=float, default=0.02)
    c.add_argument("--min-argmax", type=float, default=0.9)
    args = p.parse_args(argv)
    if args.cmd == "run":
        run(args.model_dir, args.out, args.prompt_len, args.decode_tokens, args.threads)
        return 0
    return compare(args.a, args.b, args.max_rel_diff, args.min_argmax)


if __name__ == "__main__":
    sys.exit(main())
