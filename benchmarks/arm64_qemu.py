"""Logits of an export folder under plain onnxruntime, for the ARM64-vs-x86 check (numpy + onnxruntime only).

    python arm64_qemu.py run EXPORT_DIR OUT.npz [--prompt-len 16] [--decode-tokens 8]
    python arm64_qemu.py compare X86.npz ARM.npz [--max-rel-diff 0.02] [--min-argmax 0.9]

``run`` feeds a fixed seeded token sequence through the decoder (standard IO names: input_ids,
attention_mask, position_ids, past_key_values.N.key|value -> logits, present.N.key|value) and saves the
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
import re
import sys
import tempfile
import time

import numpy as np

FALLBACK = "Falling back to using unpacked compute mode"


def run(model_dir: str, out: str, prompt_len: int, decode_tokens: int, threads: int) -> dict:
    import onnxruntime as ort

    cfg_path = os.path.join(model_dir, "config.json")
    arch = {}
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            arch = json.load(f).get("architecture", {})
    so = ort.SessionOptions()
    so.log_severity_level = 1  # INFO: the slow-path line is logged at this level
    so.intra_op_num_threads = threads
    # ORT logs to fd 2: point it at a file for the session's lifetime to look for the fallback line.
    log = tempfile.TemporaryFile()  # noqa: SIM115  (fd 2 points at it until the finally below)
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    try:
        t0 = time.perf_counter()
        sess = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), so, providers=["CPUExecutionProvider"])
        load_s = time.perf_counter() - t0
        inputs = {i.name: i for i in sess.get_inputs()}
        layers = sorted({int(m.group(1)) for n in inputs if (m := re.match(r"past_key_values\.(\d+)\.key$", n))})
        first = inputs[f"past_key_values.{layers[0]}.key"] if layers else None
        kvh = first.shape[1] if first is not None and isinstance(first.shape[1], int) else arch.get(
            "num_key_value_heads")
        hd = first.shape[3] if first is not None and isinstance(first.shape[3], int) else arch.get("head_dim")
        dtype = np.float16 if first is not None and first.type == "tensor(float16)" else np.float32
        vocab = sess.get_outputs()[0].shape[-1]
        vocab = vocab if isinstance(vocab, int) else arch["vocab_size"]
        names = ["logits"] + [f"present.{i}.{k}" for i in layers for k in ("key", "value")]
        tokens = np.random.default_rng(0).integers(0, vocab, size=prompt_len + decode_tokens)
        feeds = {f"past_key_values.{i}.{k}": np.zeros((1, kvh, 0, hd), dtype) for i in layers for k in ("key", "value")}
        kept, past, t0 = [], 0, time.perf_counter()
        for step in range(decode_tokens + 1):
            cur = tokens[:prompt_len] if step == 0 else tokens[prompt_len + step - 1: prompt_len + step]
            n = len(cur)
            feeds["input_ids"] = cur.reshape(1, n).astype(np.int64)
            if "attention_mask" in inputs:
                feeds["attention_mask"] = np.ones((1, past + n), np.int64)
            if "position_ids" in inputs:
                feeds["position_ids"] = np.arange(past, past + n, dtype=np.int64).reshape(1, n)
            outs = sess.run(names, feeds)
            kept.append(outs[0][0, -1].astype(np.float32))
            for j, i in enumerate(layers):
                feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = outs[1 + 2 * j], outs[2 + 2 * j]
            past += n
        run_s = time.perf_counter() - t0
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    log.seek(0)
    slow = FALLBACK in log.read().decode("utf-8", "replace")
    log.close()
    info = {"machine": platform.machine(), "onnxruntime": ort.__version__, "numpy": np.__version__,
            "slow_fallback": slow, "load_s": load_s, "run_s": run_s, "prompt_len": prompt_len,
            "decode_tokens": decode_tokens}
    np.savez(out, logits=np.stack(kept), info=json.dumps(info))
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
