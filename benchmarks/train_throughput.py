"""Training throughput of ternary QAT vs the full-precision twin: same preset, same batches, one run.

    python benchmarks/train_throughput.py [--preset small] [--steps 20] [--device cpu|cuda]

Times forward + backward + AdamW step (after warm-up steps) and reports tokens/s of both and their
ratio. Writes benchmarks/results/train_throughput_<preset>_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ternarylm.configuration import TernaryLMConfig
from ternarylm.modeling import TernaryLMForCausalLM, count_parameters

RESULTS = Path(__file__).resolve().parent / "results"


def tokens_per_second(precision: str, args) -> dict:
    torch.manual_seed(0)
    config = TernaryLMConfig.from_preset(args.preset, precision=precision)
    model = TernaryLMForCausalLM(config).to(args.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len + 1), device=args.device)
    autocast = args.device.startswith("cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=batch[:, :-1], use_cache=False).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if autocast:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if autocast:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"precision": precision, "parameters": count_parameters(model),
            "tokens_per_s": args.steps * args.batch_size * args.seq_len / seconds, "seconds": seconds}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    rows = [tokens_per_second(p, args) for p in ("ternary", "fp")]
    ratio = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    print(f"{'precision':10} {'params':>12} {'tokens/s':>10}")
    for r in rows:
        print(f"{r['precision']:10} {r['parameters']:12,} {r['tokens_per_s']:10.0f}")
    print(f"ternary / fp throughput: {ratio:.2f}x  ({args.preset}, {args.device}, threads {torch.get_num_threads()})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"train_throughput_{args.preset}_{args.device.split(':')[0]}.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "ternary_over_fp": ratio}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
