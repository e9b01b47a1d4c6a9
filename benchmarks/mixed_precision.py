"""Mixed precision: validation perplexity and export size of all-ternary vs the analysis plan's mixes.

    python benchmarks/mixed_precision.py [--preset tiny] [--steps 300] [--out benchmarks/results/mixed_precision]

1. Trains, with the real trainer and the same tokenizer, data, seed and number of steps, the
   full-precision twin and an all-ternary model.
2. Runs ternary-analyze's analysis on the ternary model (sensitivity ranking, see docs/ANALYSIS.md).
3. Trains every plan with QAT from scratch on the same budget: the top-K layers for each K in
   --keeps at --bits, the top --extra-keep layers at 4 bits and at 16 (fp16), and two controls at
   --bits: the K *least* sensitive layers (``bottomK``: does the ranking matter?) and the K layers
   with the largest signed loss drop when alone in fp (``signedK``: the naive criterion); a plan
   with the same layers as an earlier one is not trained twice. ``--seeds 1337,1,2`` trains every
   variant with each seed and averages the losses. ``--continue-steps N`` also continues the
   ternary checkpoint for N steps with each top-K plan (checkpoint surgery: its config gets the
   plan) and, as their control, with no plan (``ternary+cont``).
4. Evaluates every final checkpoint on the same validation windows (PyTorch, QAT forward), exports it
   with ``ternary-export onnx --target ort-cpu`` (the fp twin with ``--target fp32``) and records the
   size of model.onnx. A plan the exporter rejects, or ignores (config.json's export.keep_precision
   does not list the plan's layers at their bits), fails loudly: no size is invented.

Prints a table (variant, kept layers, perplexity, ratio vs fp, size MB, ratio vs fp32) and writes
``<out>/mixed_precision.json`` and ``<out>/mixed_precision.png`` (size vs perplexity). Exits 1 if
any variant failed. Defaults finish in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "mixed_precision"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--steps", type=int, default=300, help="Training steps of every variant.")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--stories", type=int, default=4000, help="Synthetic stories when no --data is given.")
    ap.add_argument("--data", action="append", help="Text files/folders instead of the synthetic stories.")
    ap.add_argument("--lr", type=float, default=2e-3, help="Peak learning rate of ternary and mixed runs.")
    ap.add_argument("--lr-fp", type=float, default=None, help="Peak learning rate of the fp twin (default: --lr).")
    ap.add_argument("--keeps", default="2,4,8", help="K values of the top-K plans at --bits.")
    ap.add_argument("--bits", type=int, default=8, choices=[4, 8, 16])
    ap.add_argument("--extra-keep", type=int, default=4,
                    help="K of the extra plans at 4 and 16 bits and of the least-sensitive control (0: none).")
    ap.add_argument("--rank-by", default="fp", choices=["fp", "ternary"])
    ap.add_argument("--analysis-tokens", type=int, default=8192, help="Tokens per sensitivity evaluation.")
    ap.add_argument("--eval-tokens", type=int, default=32768, help="Validation tokens for the perplexities.")
    ap.add_argument("--continue-steps", type=int, default=0,
                    help="Also continue the ternary checkpoint this many steps with each top-K plan.")
    ap.add_argument("--seeds", default="1337",
                    help="Comma-separated training seeds; perplexities are averaged (losses) over them.")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 for tiny, whose ops are too small to share; "
                         "torch's default for small).")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--skip-export", action="store_true", help="Perplexities only (no sizes).")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from ternarylm.analysis import analyze_checkpoint, write_report
    from ternarylm.analysis.data import validation_windows
    from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint
    from ternarylm.configuration import PRESETS
    from ternarylm.evaluation import evaluate_nll, perplexity
    from ternarylm.training.args import TrainArgs
    from ternarylm.training.prepare import prepare_tokenizer
    from ternarylm.training.trainer import train

    if args.threads is None and args.preset == "tiny":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = args.out.resolve()
    runs = out / "runs"
    exports = out / "exports"
    runs.mkdir(parents=True, exist_ok=True)

    def train_args(name: str, **extra) -> TrainArgs:
        return TrainArgs(**{
            "out_dir": str(runs / name), "preset": args.preset, "data": list(args.data or []),
            "stories": args.stories, "tokenizer": str(tokenizer_path), "seq_len": args.seq_len,
            "batch_size": args.batch_size, "max_steps": args.steps,
            "warmup_steps": max(args.steps // 20, 1), "eval_every": args.steps, "eval_batches": 4,
            "lr": args.lr, "device": args.device, "threads": args.threads,
            "keep_last": 0, "overwrite": True, "progress": False, **extra})

    # One tokenizer for every variant, trained once on the data.
    tokenizer_path = out / "tokenizer.json"
    tokenizer = prepare_tokenizer(TrainArgs(out_dir=str(runs), preset=args.preset, data=list(args.data or []),
                                            stories=args.stories, progress=False),
                                  PRESETS[args.preset]["vocab_size"])
    tokenizer.save(str(tokenizer_path))

    variants: list[dict] = []
    failures: list[str] = []
    seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]

    def log(message: str):
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    def run_variant(name: str, plan: dict, **extra) -> dict:
        same = next((v for v in variants if v["kept"] == plan and v["precision"] == extra.get("precision", "ternary")),
                    None)
        if same is not None:  # e.g. the signed ranking picked the same layers as another plan
            log(f"{name}: same layers as {same['variant']}, not trained again")
            v = {"variant": name, "kept": dict(plan), "precision": same["precision"], "same_as": same["variant"]}
            variants.append(v)
            return v
        v = {"variant": name, "kept": dict(plan), "precision": extra.get("precision", "ternary"), "runs": []}
        for seed in seeds:
            log(f"train {name} ({len(plan)} kept layer(s), seed {seed}) ...")
            t0 = time.perf_counter()
            summary = train(train_args(f"{name}/seed-{seed}", keep_precision=dict(plan), seed=seed, **extra))
            v["runs"].append({"seed": seed, "checkpoint": str(Path(summary["checkpoint"]).relative_to(out)),
                              "train_seconds": round(time.perf_counter() - t0, 1), "steps": summary["step"]})
        v["checkpoint"] = v["runs"][0]["checkpoint"]
        variants.append(v)
        return v

    fp = run_variant("fp", {}, precision="fp", lr=args.lr_fp or args.lr)
    tern = run_variant("ternary", {})

    log("analyse the ternary model ...")
    tern_ckpt = out / tern["checkpoint"]
    keeps = sorted({int(k) for k in args.keeps.split(",") if k.strip()})
    doc = analyze_checkpoint(tern_ckpt, keep=max(keeps + [args.extra_keep]), bits=args.bits,
                             rank_by=args.rank_by, eval_tokens=args.analysis_tokens, device=args.device,
                             progress=False)
    write_report(doc, out / "analysis")
    ranking = doc["plan"]["ranking"]
    n_layers = len(doc["layers"])

    plans: list[tuple[str, dict]] = [(f"top{k}@{args.bits}", {n: args.bits for n in ranking[:k]})
                                     for k in keeps if 0 < k <= len(ranking)]
    if args.extra_keep:
        k = args.extra_keep
        for bits in (4, 16):
            if bits != args.bits:
                plans.append((f"top{k}@{bits}", {n: bits for n in ranking[:k]}))
        plans.append((f"bottom{k}@{args.bits}", {n: args.bits for n in ranking[-k:]}))
        # the naive criterion: signed loss drop with the layer alone in fp (docs/ANALYSIS.md)
        delta = {r["name"]: r["sensitivity"]["fp_alone_delta"] for r in doc["layers"] if r["name"] in ranking}
        signed = sorted(ranking, key=lambda n: delta[n])[:k]
        plans.append((f"signed{k}@{args.bits}", {n: args.bits for n in signed}))
    for name, plan in plans:
        run_variant(name, plan)
    if args.continue_steps:  # the all-ternary continuation is the control of the continued plans
        for name, plan in [("ternary", {})] + [p for p in plans if p[0].startswith("top")]:
            continue_variant(name, plan, tern_ckpt, args, runs, train_args, variants, log, seeds[0])

    # Perplexity of every run on the same windows (same tokenizer and data for all).
    evaluation = validation_windows(load_checkpoint(tern_ckpt), eval_tokens=args.eval_tokens,
                                    batch_size=args.batch_size)
    device = torch.device(args.device)
    for v in variants:
        for run in v.get("runs", []):
            model = model_from_checkpoint(load_checkpoint(out / run["checkpoint"])).to(device)
            run["val_loss"], tokens = evaluate_nll(model, evaluation.windows, device)
            run["ppl"] = perplexity(run["val_loss"])
        if "runs" in v:
            losses = [r["val_loss"] for r in v["runs"]]
            mean = sum(losses) / len(losses)
            v.update(val_loss=mean, ppl=perplexity(mean), eval_tokens=tokens,
                     val_loss_std=statistics.stdev(losses) if len(losses) > 1 else None)
    for v in variants:
        if "same_as" in v:
            same = next(u for u in variants if u["variant"] == v["same_as"])
            v.update({k: same[k] for k in ("val_loss", "ppl", "eval_tokens", "val_loss_std", "checkpoint")})
    log(f"evaluated every run on {variants[0]['eval_tokens']:,} validation tokens")

    # Export: ort-cpu for the quantised variants, fp32 for the twin.
    for v in variants:
        if args.skip_export:
            break
        if "same_as" in v:
            continue
        target = "fp32" if v["precision"] == "fp" else "ort-cpu"
        folder = exports / f"{v['variant']}-{target}"
        log(f"export {v['variant']} --target {target} ...")
        try:
            v.update(export_variant(out / v["checkpoint"], folder, target, v["kept"]))
            v["export"] = str(folder.relative_to(out))
        except ExportFailure as e:
            v["error"] = str(e)
            failures.append(f"{v['variant']}: {e}")
            print(f"FAILED {v['variant']}: {e}", file=sys.stderr, flush=True)

    for v in variants:
        if "same_as" in v:
            same = next(u for u in variants if u["variant"] == v["same_as"])
            v.update({k: same[k] for k in ("size_mb", "size_bytes", "graph_ops", "export", "error") if k in same})
    fp_ppl = fp["ppl"]
    fp_size = fp.get("size_mb")
    for v in variants:
        v["ppl_ratio_vs_fp"] = v["ppl"] / fp_ppl
        v["size_ratio_vs_fp32"] = (v["size_mb"] / fp_size) if fp_size and v.get("size_mb") else None
        v["kept_layers"] = len(v["kept"])
    print_table(variants, n_layers)
    result = {
        "benchmark": "mixed_precision", "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "layers": n_layers, "ranking": ranking, "rank_by": args.rank_by,
        "analysis": {"baselines": doc["baselines"], "evaluation": doc["evaluation"], "json": "analysis/analysis.json"},
        "eval": {"tokens": variants[0]["eval_tokens"], "seq_len": evaluation.seq_len, "split": "val"},
        "variants": variants, "failures": failures,
        "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "mixed_precision.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(variants, out / "mixed_precision.png", args)
    print(f"wrote {out / 'mixed_precision.json'} and {out / 'mixed_precision.png'} "
          f"({result['seconds']:.0f} s)")
    if failures:
        print("\nFAILED variants (no numbers were recorded for them):\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def continue_variant(name, plan, tern_ckpt, args, runs, train_args, variants, log, seed):
    """Continue the trained ternary checkpoint for --continue-steps with ``plan`` (its config is
    given the plan; weights, optimizer and data order carry on). Learning rate: the cosine schedule
    stretched over steps + continue-steps, so it picks up mid-schedule."""
    from ternarylm.checkpoint import load_checkpoint, save_checkpoint
    from ternarylm.training.trainer import train

    run = runs / f"{name}+cont"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    for item in (tern_ckpt.parent / "data").iterdir():  # the token cache, so the fingerprint matches
        (run / "data").mkdir(exist_ok=True)
        shutil.copy(item, run / "data" / item.name)
    ckpt = load_checkpoint(tern_ckpt)
    ckpt.pop("format"), ckpt.pop("format_version")
    ckpt["config"] = {**ckpt["config"], "quant": {**ckpt["config"]["quant"], "keep_precision": dict(plan)}}
    save_checkpoint(ckpt, run / "ckpt.pt")
    log(f"continue ternary -> {name} for {args.continue_steps} steps ...")
    t0 = time.perf_counter()
    summary = train(train_args(f"{name}+cont", keep_precision=dict(plan), seed=seed,
                               max_steps=args.steps + args.continue_steps, resume=True, overwrite=False))
    checkpoint = str(Path(summary["checkpoint"]).relative_to(runs.parent))
    variants.append({"variant": f"{name}+cont", "kept": dict(plan), "precision": "ternary", "checkpoint": checkpoint,
                     "runs": [{"seed": seed, "checkpoint": checkpoint, "steps": summary["step"],
                               "train_seconds": round(time.perf_counter() - t0, 1)}]})


class ExportFailure(RuntimeError):
    pass


def export_variant(ckpt: Path, folder: Path, target: str, kept: dict) -> dict:
    """Run the real ``ternary-export onnx`` CLI; check that a plan was honoured; return sizes."""
    proc = subprocess.run([sys.executable, "-m", "ternarylm.export.cli", "onnx", str(ckpt), "--target", target,
                           "--out", str(folder), "--force"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        raise ExportFailure(f"ternary-export onnx --target {target} exited {proc.returncode}: {lines[-1]}")
    manifest = json.loads((folder / "manifest.json").read_text())
    files = manifest["files"]
    onnx_bytes = sum(f["bytes"] for name, f in files.items() if name.startswith("model.onnx"))
    ops = graph_ops(folder / "model.onnx")
    config = json.loads((folder / "config.json").read_text())
    if kept:
        exported = (config.get("export") or {}).get("keep_precision") or {}
        missing = {n: b for n, b in kept.items() if _exported_bits(exported, n) != b}
        if missing:
            name, bits = next(iter(missing.items()))
            raise ExportFailure(f"the exporter did not keep the plan's layers (e.g. {name} at {bits} bits; "
                                f"its config.json export.keep_precision is {json.dumps(exported)[:120]}); "
                                "refusing to report a size for a graph that is not this variant")
    return {"size_mb": onnx_bytes / 1e6, "size_bytes": onnx_bytes, "graph_ops": ops,
            "export_target": target}


def _exported_bits(exported: dict, name: str):
    """Bits the export reports for layer ``name`` (exact name, else the highest matching pattern)."""
    import fnmatch

    if name in exported:
        return exported[name]
    matches = [b for p, b in exported.items() if fnmatch.fnmatch(name, p)]
    return max(matches) if matches else None


def graph_ops(path: Path) -> dict:
    """Linear-ish node counts of an ONNX graph: MatMulNBits by bits, MatMul, Gemm, custom ops."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    nodes = list(model.graph.node)
    for fn in model.functions:
        nodes += list(fn.node)
    for node in nodes:
        if node.op_type == "MatMulNBits":
            bits = next((a.i for a in node.attribute if a.name == "bits"), None)
            key = f"MatMulNBits/{bits}"
        elif node.op_type in ("MatMul", "Gemm", "TernaryMatMul"):
            key = node.op_type
        else:
            continue
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def print_table(variants: list[dict], n_layers: int):
    headers = ("variant", "kept layers", "val ppl", "ppl / fp", "size MB", "size / fp32", "ONNX linears")
    rows = []
    for v in variants:
        size = f"{v['size_mb']:.3f}" if v.get("size_mb") else ("FAILED" if v.get("error") else "-")
        ratio = f"{v['size_ratio_vs_fp32']:.3f}" if v.get("size_ratio_vs_fp32") else "-"
        name = v["variant"] + (f" (= {v['same_as']})" if v.get("same_as") else "")
        rows.append((name, "all (fp)" if v["precision"] == "fp" else f"{len(v['kept'])}/{n_layers}",
                     f"{v['ppl']:.3f}" + (f" (±{v['val_loss_std']:.3f} nats)" if v.get("val_loss_std") else ""),
                     f"{v['ppl_ratio_vs_fp']:.3f}", size, ratio,
                     ", ".join(f"{k} x{n}" for k, n in (v.get("graph_ops") or {}).items()) or "-"))
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def plot(variants: list[dict], path: Path, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=100)
    aliases = {}
    for v in variants:
        if v.get("same_as"):
            aliases.setdefault(v["same_as"], []).append(v["variant"])
    for v in variants:
        if not v.get("size_mb") or not math.isfinite(v["ppl"]) or v.get("same_as"):
            continue
        marker = "s" if v["precision"] == "fp" else "^" if v["variant"] == "ternary" else \
            "x" if v["variant"].startswith("bottom") else "o"
        ax.scatter(v["size_mb"], v["ppl"], marker=marker, s=50)
        ax.annotate(" = ".join([v["variant"], *aliases.get(v["variant"], [])]), (v["size_mb"], v["ppl"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("model.onnx size (MB; ort-cpu, fp twin: fp32)")
    ax.set_ylabel("validation perplexity (PyTorch, same windows)")
    ax.set_title(f"mixed precision: {args.preset} preset, {args.steps} steps each, ranked by {args.rank_by}",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
