"""Side-by-side: every export target runnable here vs the fp32 twin (and the NumPy runtime), one run.

    python benchmarks/export_compare.py [--ckpt runs/x/ckpt.pt] [--preset 132m] [--threads 2]

Without --ckpt it builds the preset with random latent weights (ternarised on export: the same
shapes, the same packed sizes and kernels as a trained model). Each model is measured in a fresh
process (ternarylm.devices.measure): file size, peak RSS (VmHWM), session load, prefill latency
(--prompt-len tokens), decode ms/token p50/p95. Prints a table, writes JSON and a PNG to
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = [  # (label, target, extra export options)
    ("fp32 (ORT)", "fp32", {}),
    ("ort-cpu 2-bit, int8 head/emb", "ort-cpu", {}),
    ("ort-cpu 2-bit, int4 head/emb", "ort-cpu", {"lm_head": "int4", "embedding": "int4"}),
    ("ort-arm64-nodot 4-bit", "ort-arm64-nodot", {}),
    ("portable (TernaryMatMul, base3)", "portable", {"packing": "base3"}),
]


def random_checkpoint(preset: str, path: Path):
    import torch

    from ternarylm.checkpoint import save_checkpoint
    from ternarylm.configuration import TernaryLMConfig
    from ternarylm.data import synthetic_stories, train_bpe_tokenizer
    from ternarylm.modeling import TernaryLMForCausalLM

    torch.manual_seed(0)
    tok = train_bpe_tokenizer(synthetic_stories(300), 1000)
    config = TernaryLMConfig.from_preset(preset, eos_token_id=0, pad_token_id=1, bos_token_id=0)
    model = TernaryLMForCausalLM(config)
    save_checkpoint({"kind": "causal-lm", "config": json.loads(config.to_json_string()),
                     "tokenizer_json": tok.to_str(), "model": model.state_dict(), "step": 0, "meta": {}}, path)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


NUMPY_MEASURE = r"""
import json, sys, time, resource
import numpy as np
t0 = time.perf_counter()
from ternarylm.runtime_py import load_numpy
dec = load_numpy(sys.argv[1])
load_s = time.perf_counter() - t0
rng = np.random.default_rng(0)
prompt = rng.integers(2, 900, size=(1, int(sys.argv[2]))).astype(np.int64)
dec.reset(); t = time.perf_counter(); logits = dec.forward(prompt, last_only=True); prefill = time.perf_counter() - t
steps = []
nxt = int(logits[0, -1].argmax())
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); logits = dec.forward(np.array([[nxt]], np.int64)); steps.append(time.perf_counter() - t)
    nxt = int(logits[0, -1].argmax())
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
ms = np.array(steps) * 1000
print("RESULT " + json.dumps({"status": "ok", "load_s": load_s, "prefill_ms": prefill * 1000,
      "decode_ms_p50": float(np.percentile(ms, 50)), "decode_ms_p95": float(np.percentile(ms, 95)),
      "decode_tokens_per_s": float(1000 / ms.mean()), "peak_rss_mb": int(hwm) / 1024}))
"""


def workload_options(ap: argparse.ArgumentParser) -> None:
    """The options every side-by-side benchmark shares: the checkpoint (or a random-weight preset) and the
    workload."""
    ap.add_argument("--ckpt")
    ap.add_argument("--preset", default="132m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--numpy-decode-tokens", type=int, default=16)


def source_checkpoint(args, prefix: str) -> tuple[Path, Path]:
    """``(work folder, checkpoint)``: ``--ckpt``, or a random-weight ``--preset`` built in the work folder."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    ckpt = Path(args.ckpt) if args.ckpt else work / "random.pt"
    if not args.ckpt:
        print(f"building a random-weight {args.preset} checkpoint ...", flush=True)
        random_checkpoint(args.preset, ckpt)
    return work, ckpt


def measure_numpy(folder: Path, prompt_len: int, decode_tokens: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", NUMPY_MEASURE, str(folder), str(prompt_len), str(decode_tokens)],
                          capture_output=True, text=True, timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"status": "error", "message": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    workload_options(ap)
    ap.add_argument("--skip-numpy", action="store_true")
    args = ap.parse_args()

    from tqdm import tqdm

    from ternarylm.devices.runner import MeasureRequest, run_measurement
    from ternarylm.onnxrt.session import SessionSettings
    from ternarylm.export.api import export_checkpoint
    from ternarylm.format.folder import model_file_bytes

    RESULTS.mkdir(parents=True, exist_ok=True)
    work, ckpt = source_checkpoint(args, "export-compare-")
    rows = []
    for label, target, opts in tqdm(VARIANTS, desc="export + measure"):
        folder = work / f"{len(rows)}-{target}"
        t0 = time.perf_counter()
        export_checkpoint(ckpt, folder, target=target, **opts)
        export_s = time.perf_counter() - t0
        size = model_file_bytes(folder / "model.onnx")
        req = MeasureRequest(session=SessionSettings(model=str(folder / "model.onnx"), intra_op_threads=args.threads),
                             config=str(folder / "config.json"), prompt_len=args.prompt_len,
                             decode_tokens=args.decode_tokens, repeats=args.repeats, extra={"label": label})
        result = run_measurement(req)
        rows.append({"label": label, "engine": "onnxruntime", "target": target, "options": opts,
                     "file_mb": size / 1e6, "export_s": export_s, **result})
        if target == "portable" and not args.skip_numpy:
            result = measure_numpy(folder, args.prompt_len, args.numpy_decode_tokens)
            rows.append({"label": "NumPy runtime (portable)", "engine": "numpy", "target": target,
                         "file_mb": size / 1e6, **result})
    base = rows[0]
    table = []
    for r in rows:
        ok = r.get("status") == "ok"
        ratio = (lambda key, inverse=False: (base[key] / r[key] if not inverse else r[key] / base[key])
                 if ok and base.get(key) and r.get(key) else float("nan"))
        r["ratios_vs_fp32"] = {"file_smaller_x": base["file_mb"] / r["file_mb"],
                               "rss_lower_x": ratio("peak_rss_mb"), "decode_faster_x": ratio("decode_ms_p50"),
                               "prefill_faster_x": ratio("prefill_ms")}
        table.append(r)
    header = f"{'variant':34} {'file MB':>8} {'RSS MB':>7} {'load s':>6} {'prefill ms':>10} {'pf tok/s':>8} " \
             f"{'dec p50':>7} {'dec p95':>7} {'dec tok/s':>9} {'size x':>6} {'RSS x':>5} {'dec x':>5}"
    print(header)
    print("-" * len(header))
    for r in table:
        if r.get("status") != "ok":
            print(f"{r['label']:34} {r['file_mb']:8.1f}  {r.get('status')}: {r.get('message', '')[:80]}")
            continue
        x = r["ratios_vs_fp32"]
        print(f"{r['label']:34} {r['file_mb']:8.1f} {r['peak_rss_mb']:7.0f} {r['load_s']:6.2f} {r['prefill_ms']:10.1f} "
              f"{args.prompt_len / r['prefill_ms'] * 1000:8.0f} {r['decode_ms_p50']:7.2f} {r['decode_ms_p95']:7.2f} "
              f"{1000 / r['decode_ms_p50']:9.1f} {x['file_smaller_x']:6.1f} {x['rss_lower_x']:5.1f} "
              f"{x['decode_faster_x']:5.1f}")
    meta = {"preset": args.preset if not args.ckpt else None, "checkpoint": str(args.ckpt) if args.ckpt else "random weights",
            "threads": args.threads, "prompt_len": args.prompt_len, "decode_tokens": args.decode_tokens,
            "cpu": cpu_model(), "onnxruntime": __import__("onnxruntime").__version__}
    name = f"export_compare_{Path(args.ckpt).parent.name or 'ckpt'}" if args.ckpt else f"export_compare_{args.preset}"
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"meta": meta, "rows": table}, indent=2))
    plot(table, RESULTS / f"{name}.png", meta)
    print(f"\nCPU: {meta['cpu']}, {args.threads} threads, onnxruntime {meta['onnxruntime']}; wrote {out}")


def plot(rows, path: Path, meta: dict):
    ok = [r for r in rows if r.get("status") == "ok"]
    bar_panels(ok, {"file_mb": "model file (MB)", "peak_rss_mb": "peak RSS (MB)",
                    "decode_ms_p50": "decode ms/token (p50)"}, ["#888"] + ["#2a7"] * (len(ok) - 1),
               f"{meta['preset'] or meta['checkpoint']}: ternary exports vs fp32 twin ({meta['cpu']}, "
               f"{meta['threads']} threads)", path)


def bar_panels(rows: list[dict], panels: dict[str, str], colors: list[str], title: str, path: Path):
    """One horizontal bar chart per ``{row key: panel title}``, a bar per row (its ``label``), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5))
    for ax, (key, panel) in zip(axes, panels.items()):
        ax.barh(labels, [r.get(key) or 0 for r in rows], color=colors)
        ax.set_title(panel)
        ax.invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
