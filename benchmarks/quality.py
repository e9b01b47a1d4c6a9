"""Quality of ternary QAT vs the full-precision twin: same corpus, same tokenizer, same tokens.

    python benchmarks/quality.py [--data ../shared/corpora/shakespeare.txt] [--preset small] [--steps 1000]

Trains both twins with the real trainer (ternarylm.training) into benchmarks/results/quality/,
then reports both validation perplexities and their ratio (goal: ternary / fp <= 1.15). Without
--data it uses ../shared/corpora/shakespeare.txt when present, otherwise the synthetic stories.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ternarylm.evaluation import perplexity
from ternarylm.training.args import TrainArgs
from ternarylm.training.trainer import train

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "shakespeare.txt"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", action="append")
    ap.add_argument("--tokenizer")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr-ternary", type=float, default=2e-3)
    ap.add_argument("--lr-fp", type=float, default=1e-3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    data = args.data or ([str(SHARED)] if SHARED.is_file() else [])
    out_root = RESULTS / "quality"
    rows = []
    for precision, lr in (("ternary", args.lr_ternary), ("fp", args.lr_fp)):
        summary = train(TrainArgs(out_dir=str(out_root / f"{args.preset}-{precision}"), preset=args.preset,
                                  precision=precision, data=data, tokenizer=args.tokenizer, max_steps=args.steps,
                                  batch_size=args.batch_size, seq_len=args.seq_len, lr=lr,
                                  eval_every=max(args.steps // 5, 1), device=args.device, overwrite=True))
        rows.append({"precision": precision, "lr": lr, "val_loss": summary["best_val_loss"],
                     "val_ppl": perplexity(summary["best_val_loss"]), "tokens": summary["tokens_seen"]})
    ratio = rows[0]["val_ppl"] / rows[1]["val_ppl"]
    print(f"\n{'precision':10} {'lr':>8} {'tokens':>10} {'val loss':>9} {'val ppl':>9}")
    for r in rows:
        print(f"{r['precision']:10} {r['lr']:8.0e} {r['tokens']:10,} {r['val_loss']:9.4f} {r['val_ppl']:9.2f}")
    print(f"ternary / fp perplexity: {ratio:.3f} (goal <= 1.15); data: {data or 'synthetic stories'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"quality_{args.preset}.json"
    out.write_text(json.dumps({"args": vars(args), "data": data, "rows": rows, "ppl_ratio": ratio}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
