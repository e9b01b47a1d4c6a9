"""The same checkpoint through every runtime a user might pick, side by side in one run on this CPU:
our onnxruntime exports (the target's defaults and the ``auto`` head/embedding choice), the NumPy
runtime, the fp32 twin, and llama.cpp (TQ2_0 and TQ1_0 GGUF files written by ``ternary-export gguf``
from the same trits).

    python benchmarks/peers.py [--ckpt runs/x/ckpt.pt | --preset 132m] [--threads 2]
                               [--llama-bench PATH] [--llama-simple PATH]

llama.cpp comes from a ``llama-bench`` binary (``--llama-bench``, ``$LLAMA_BENCH`` or PATH; build it
from llama.cpp's source, or from the ``llama-cpp-python`` sdist's ``vendor/llama.cpp``:
``cmake -B build -DGGML_NATIVE=ON && cmake --build build -j --target llama-bench llama-simple``).
Without one its rows are skipped with one line. Every configuration runs in a fresh process;
figures: file size, peak RSS of that process (VmHWM / wait4's ru_maxrss), prefill and decode tokens/s
(``--prompt-len`` tokens, then ``--decode-tokens`` single-token steps; llama-bench's pp/tg tests are the
same workload). With ``llama-simple`` also the greedy text of both runtimes from one prompt.
Prints a table, the goal lines and the measured reasons behind them (where a decoded token's time goes,
from onnxruntime's profiler, and the peak RSS broken down), writes JSON and a PNG to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from export_compare import RESULTS, bar_panels, cpu_model, measure_numpy, source_checkpoint, workload_options

# llama.cpp's types for our head/embedding precisions (Q4_0 holds what int4 holds, at fp16 scales), and the row of
# TQ1_0 at the 'ort auto' choice (the same row as 'llama.cpp TQ1_0' when auto keeps int8 for both)
GGUF_TYPES = {"int8": "q8_0", "int4": "q4_0", "float": "f16"}
SAME_PRECISION_TQ1 = "llama.cpp TQ1_0, auto's emb/head"

GOALS = [  # (what, row, other row, key, ratio at least, higher is better)
    ("decode >= 1.3x llama.cpp TQ2_0", "ort auto", "llama.cpp TQ2_0", "decode_tokens_per_s", 1.3, True),
    ("prefill >= 1.2x llama.cpp TQ2_0", "ort auto", "llama.cpp TQ2_0", "prefill_tokens_per_s", 1.2, True),
    ("peak RSS <= 1.3x llama.cpp TQ2_0", "ort auto", "llama.cpp TQ2_0", "peak_rss_mb", 1 / 1.3, False),
    ("file <= llama.cpp TQ1_0", "ort auto", "llama.cpp TQ1_0", "file_mb", 1.0, False),
    ("file <= llama.cpp TQ1_0 at auto's precisions", "ort auto", SAME_PRECISION_TQ1, "file_mb", 1.0, False),
    ("decode >= 6x fp32 twin", "ort auto", "fp32 twin", "decode_tokens_per_s", 6.0, True),
    ("peak RSS >= 5x below fp32 twin", "ort auto", "fp32 twin", "peak_rss_mb", 5.0, False),
    ("file >= 10x below fp32 twin", "ort auto", "fp32 twin", "file_mb", 10.0, False),
]


def find_tool(name: str, given: str | None) -> str | None:
    path = given or os.environ.get(name.upper().replace("-", "_")) or shutil.which(name)
    return path if path and Path(path).is_file() else None


# Linux carries a process's RSS high-water mark into the children it forks (and across their exec), so
# wait4 in this big Python process would report its own peak for llama-bench. A small launcher forks it
# instead and passes back the child's own figure.
LAUNCHER = r"""
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\nLAUNCHER-MAXRSS-KB {usage.ru_maxrss}\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_child_rss(cmd: list[str], timeout: float = 1800) -> tuple[int, str, str, float]:
    """Run ``cmd`` through the launcher; returns ``(exit code, stdout, stderr, its peak RSS in MB)``."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True, timeout=timeout)
    lines = proc.stderr.rstrip().splitlines()
    rss = float(lines[-1].split()[1]) / 1024 if lines and lines[-1].startswith("LAUNCHER-MAXRSS-KB") else float("nan")
    return proc.returncode, proc.stdout, "\n".join(lines[:-1]), rss


def llama_bench(binary: str, gguf: Path, threads: int, prompt_len: int, decode_tokens: int, repeats: int) -> dict:
    """One llama-bench run (its pp and tg tests) in a child process, with that process's peak RSS."""
    code, out, err, rss = run_child_rss([binary, "-m", str(gguf), "-t", str(threads), "-p", str(prompt_len),
                                         "-n", str(decode_tokens), "-r", str(repeats), "-o", "json"])
    if code != 0:
        return {"status": "error", "message": (err.strip().splitlines() or ["?"])[-1][:200]}
    tests = json.loads(out)
    pp = next(t for t in tests if t.get("n_prompt") and not t.get("n_gen"))
    tg = next(t for t in tests if t.get("n_gen") and not t.get("n_prompt"))
    return {"status": "ok", "prefill_tokens_per_s": pp["avg_ts"], "decode_tokens_per_s": tg["avg_ts"],
            "peak_rss_mb": rss, "llama_cpp_build": tests[0].get("build_commit")}


def llama_greedy(binary: str, gguf: Path, prompt: str, n: int) -> str | None:
    proc = subprocess.run([binary, "-m", str(gguf), "-n", str(n), prompt], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        return None
    text = proc.stdout
    return text[text.find(prompt) + len(prompt):] if prompt in text else text


def ours_greedy(folder: Path, prompt: str, n: int) -> str:
    from ternarylm.runtime_py import generate, load_ort, load_tokenizer

    tok = load_tokenizer(folder)
    ids, _ = generate(load_ort(folder, threads=1), tok.encode(prompt).ids, n)
    return tok.decode(ids)


def measure_ort(folder: Path, threads: int, prompt_len: int, decode_tokens: int, repeats: int,
                op_profile: bool = False) -> dict:
    from ternarylm.devices.runner import MeasureRequest, run_measurement
    from ternarylm.onnxrt import SessionSettings

    req = MeasureRequest(session=SessionSettings(model=str(folder / "model.onnx"), intra_op_threads=threads),
                         config=str(folder / "config.json"), prompt_len=prompt_len, decode_tokens=decode_tokens,
                         repeats=repeats, op_profile=op_profile)
    return run_measurement(req)


def file_parts(folder: Path) -> dict[str, float]:
    """MB of an export's initializers by role: block scales, zero points, everything else (codes, norms, tables)."""
    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    parts = {"block scales": 0.0, "zero points": 0.0, "codes and tables": 0.0}
    for t in model.graph.initializer:
        size = int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        role = ("block scales" if t.name.endswith("scales") else "zero points" if "zero_points" in t.name
                else "codes and tables")
        parts[role] += size / 1e6
    return parts


def explain(by: dict, folders: dict) -> list[str]:
    """Measured reasons behind the goals: where 'ort auto' spends a decoded token (onnxruntime's profiler)
    beside llama.cpp's whole token, its peak RSS broken down, and what its file holds."""
    ours, theirs = by.get("ort auto", {}), by.get("llama.cpp TQ2_0", {})
    lines = []
    if "ort auto" in folders:
        parts = file_parts(folders["ort auto"])
        lines.append("ort auto file: " + ", ".join(f"{role} {mb:.1f} MB" for role, mb in parts.items())
                     + " (MatMulNBits takes its block scales in the activation dtype: float32 on the CPU)")
    profile = (ours.get("op_profile") or {}).get("ms_per_token")
    if profile:
        top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(profile.items())[:5])
        lines.append(f"ort auto, ms per decoded token by operator (onnxruntime profiler, {ours['op_profile']['run_ms']:.2f} "
                     f"ms per profiled step): {top}")
    if theirs.get("status") == "ok" and ours.get("status") == "ok":
        lines.append(f"whole decoded token: ort auto {1000 / ours['decode_tokens_per_s']:.2f} ms, llama.cpp TQ2_0 "
                     f"{1000 / theirs['decode_tokens_per_s']:.2f} ms")
    memory = ours.get("memory_mb")
    if memory:
        lines.append(f"ort auto peak RSS {memory['peak']:.0f} MB = imports {memory['imports']:.0f} (python, numpy, "
                     f"onnxruntime) + session {memory['session']:.0f} + generation {memory['generation']:.0f} "
                     f"(KV cache {memory['kv_cache']:.1f}); of the session, file pages (onnxruntime's code, mapped "
                     f"weights) {memory['session_file_backed']:.0f}")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    workload_options(ap)
    ap.add_argument("--llama-bench")
    ap.add_argument("--llama-simple")
    ap.add_argument("--prompt", default="Once upon a time, there was a little")
    ap.add_argument("--greedy-tokens", type=int, default=24)
    args = ap.parse_args()

    from tqdm import tqdm

    from ternarylm.export.api import export_checkpoint
    from ternarylm.export.gguf import export_gguf
    from ternarylm.format.folder import model_file_bytes

    RESULTS.mkdir(parents=True, exist_ok=True)
    work, ckpt = source_checkpoint(args, "peers-")
    bench = find_tool("llama-bench", args.llama_bench)
    simple = find_tool("llama-simple", args.llama_simple)
    exports = {"ort default": ("ort-cpu", {}), "ort auto": ("ort-cpu", {"embedding": "auto", "lm_head": "auto"}),
               "fp32 twin": ("fp32", {})}
    rows, folders = [], {}
    for label, (target, opts) in tqdm(exports.items(), desc="export + measure (onnxruntime)"):
        folder = folders[label] = export_checkpoint(ckpt, work / label.replace(" ", "-"), target=target, **opts)
        export = json.loads((folder / "config.json").read_text())["export"]
        rows.append({"label": label, "runtime": f"onnxruntime {__import__('onnxruntime').__version__}",
                     "detail": f"{target}, emb {export['embedding']}, head {export['lm_head']}",
                     "file_mb": model_file_bytes(folder / "model.onnx") / 1e6,
                     **measure_ort(folder, args.threads, args.prompt_len, args.decode_tokens, args.repeats,
                                   op_profile=label == "ort auto")})
    numpy_row = measure_numpy(folders["ort auto"], args.prompt_len, args.numpy_decode_tokens)
    if numpy_row.get("status") == "ok":
        numpy_row["prefill_tokens_per_s"] = args.prompt_len / numpy_row["prefill_ms"] * 1000
    rows.append({"label": "numpy runtime", "runtime": "ternarylm.runtime_py", "detail": "the 'ort auto' folder",
                 "file_mb": rows[1]["file_mb"], **numpy_row})

    greedy = {}
    if bench is None:
        print("llama.cpp: no llama-bench found (--llama-bench, $LLAMA_BENCH or PATH): its rows are skipped")
    else:
        auto = json.loads((folders["ort auto"] / "config.json").read_text())["export"]
        same = (GGUF_TYPES[auto["embedding"]], GGUF_TYPES[auto["lm_head"]])
        variants = [("q8_0", "q8_0", "")] + ([(*same, ", auto's emb/head")] if same != ("q8_0", "q8_0") else [])
        for qtype in ("tq2_0", "tq1_0"):
            for embedding, lm_head, suffix in variants:
                gguf = work / f"model-{qtype}{'-' + embedding + '-' + lm_head if suffix else ''}.gguf"
                label = f"llama.cpp {qtype.upper()}{suffix}"
                try:
                    export_gguf(ckpt, gguf, qtype=qtype, embedding=embedding, lm_head=lm_head)
                except ValueError as e:
                    rows.append({"label": label, "status": "skipped", "message": str(e)[:200]})
                    continue
                rows.append({"label": label, "runtime": "llama.cpp (llama-bench)",
                             "detail": f"{qtype}, emb {embedding}, head {lm_head}", "file_mb": gguf.stat().st_size / 1e6,
                             **llama_bench(bench, gguf, args.threads, args.prompt_len, args.decode_tokens,
                                           args.repeats)})
    if simple:  # the same greedy text from both runtimes: TQ2_0, or Q4_0 (the same trits) where TQ does not fit
        gguf = work / "model-tq2_0.gguf"
        if not gguf.exists():
            gguf = work / "model-q4_0.gguf"
            export_gguf(ckpt, gguf, qtype="q4_0")
        greedy[f"llama.cpp {gguf.stem.split('-')[-1].upper()}"] = llama_greedy(simple, gguf, args.prompt,
                                                                              args.greedy_tokens)
        # against our export whose head and embedding are 8-bit like llama.cpp's Q8_0 ones
        greedy["ort default"] = ours_greedy(folders["ort default"], args.prompt, args.greedy_tokens)

    by = {r["label"]: r for r in rows}
    by.setdefault(SAME_PRECISION_TQ1, by.get("llama.cpp TQ1_0", {}))  # auto kept int8 for both: the same file
    print(f"\n{'system':32} {'detail':34} {'file MB':>8} {'prefill tok/s':>13} {'decode tok/s':>12} {'peak RSS MB':>11}")
    for r in rows:
        if r.get("status") != "ok":
            print(f"{r['label']:32} {r.get('status')}: {r.get('message', '')[:90]}")
            continue
        print(f"{r['label']:32} {r.get('detail', ''):34} {r['file_mb']:8.1f} {r.get('prefill_tokens_per_s', 0):13.0f} "
              f"{r['decode_tokens_per_s']:12.1f} {r['peak_rss_mb']:11.0f}")
    goals = []
    for what, a, b, key, need, higher in GOALS:
        ra, rb = by.get(a, {}), by.get(b, {})
        if ra.get("status") != "ok" or rb.get("status") != "ok":
            goals.append({"goal": what, "ratio": None, "met": None})
            continue
        ratio = ra[key] / rb[key] if higher else rb[key] / ra[key]
        goals.append({"goal": what, "ratio": ratio, "met": ratio >= need})
    numpy_ok = by["numpy runtime"].get("status") == "ok"
    goals.append({"goal": "numpy runtime >= 20 tokens/s", "ratio": by["numpy runtime"].get("decode_tokens_per_s"),
                  "met": numpy_ok and by["numpy runtime"]["decode_tokens_per_s"] >= 20})
    print()
    for g in goals:
        mark = "n/a " if g["met"] is None else ("MET " if g["met"] else "MISS")
        print(f"  {mark} {g['goal']}" + (f": {g['ratio']:.2f}" if g["ratio"] is not None else ""))
    reasons = explain(by, folders)
    for line in reasons:
        print(f"  why: {line}")
    for label, text in greedy.items():
        print(f"  greedy {label:16}: {text!r}")
    if greedy:
        theirs = next(v for k, v in greedy.items() if k.startswith("llama.cpp"))
        same = theirs is not None and theirs.strip() == greedy["ort default"].strip()
        print(f"  greedy text {'identical' if same else 'differs'} ({', '.join(greedy)})")
    meta = {"checkpoint": str(args.ckpt) if args.ckpt else f"random-weight {args.preset}", "cpu": cpu_model(),
            "threads": args.threads, "prompt_len": args.prompt_len, "decode_tokens": args.decode_tokens,
            "llama_bench": bench, "python": sys.version.split()[0]}
    name = f"peers_{Path(args.ckpt).parent.name}" if args.ckpt else f"peers_{args.preset}"
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"meta": meta, "rows": rows, "goals": goals, "reasons": reasons, "greedy": greedy},
                              indent=2))
    plot(rows, RESULTS / f"{name}.png", meta)
    print(f"\nCPU: {meta['cpu']}, {args.threads} threads; wrote {out}")


def plot(rows, path: Path, meta: dict):
    ok = [r for r in rows if r.get("status") == "ok"]
    colors = ["#c55" if r["label"].startswith("llama.cpp") else "#888" if "fp32" in r["label"] else "#2a7"
              for r in ok]
    bar_panels(ok, {"file_mb": "file (MB)", "peak_rss_mb": "peak RSS (MB)", "prefill_tokens_per_s": "prefill tokens/s",
                    "decode_tokens_per_s": "decode tokens/s"}, colors,
               f"{meta['checkpoint']}: ternarylm vs llama.cpp ({meta['cpu']}, {meta['threads']} threads)", path)


if __name__ == "__main__":
    main()
