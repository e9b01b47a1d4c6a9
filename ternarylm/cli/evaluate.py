"""``ternary-eval``: perplexity of a checkpoint on text, as a table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ternarylm.format.cli_errors import user_errors
from ternarylm.format.cli_table import print_table

EXAMPLES = """
\b
Examples:
  ternary-eval runs/small/ckpt.pt                      # the run's own validation split
  ternary-eval runs/small/ckpt.pt --data book.txt --split all --json out.json
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", multiple=True, help="Text files/folders (default: the data the run trained on).")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True,
              help="Which part of the data: the run's validation split, its training part, or all of it.")
@click.option("--val-fraction", type=float, help="Validation fraction (default: the run's).")
@click.option("--seq-len", type=int, help="Context per window (default: the run's).")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--max-batches", type=int, help="Evaluate at most this many batches.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the result here too.")
@click.option("--device", default="cpu", show_default=True)
@user_errors
def main(checkpoint, data, split, val_fraction, seq_len, batch_size, max_batches, json_path, device):
    """Report perplexity = exp(mean token NLL) of CHECKPOINT (no label smoothing)."""
    import tempfile

    from ternarylm.checkpoint import (
        load_checkpoint,
        model_from_checkpoint,
        tokenizer_from_checkpoint,
    )
    from ternarylm.data.loader import eval_windows
    from ternarylm.evaluation import evaluate_nll, perplexity
    from ternarylm.training.args import run_args_for_eval
    from ternarylm.training.prepare import prepare_tokens
    from ternarylm.training.trainer import resolve_device

    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    tokenizer = tokenizer_from_checkpoint(ckpt)
    args = run_args_for_eval(ckpt, data)
    seq_len = seq_len or args.seq_len
    val_fraction = val_fraction or args.val_fraction
    dev = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="ternary-eval-") as tmp:
        cache = prepare_tokens(args, tokenizer, Path(tmp))
        (t0, t1), (v0, v1) = cache.split(val_fraction, seq_len)
        start, end = {"val": (v0, v1), "train": (t0, t1), "all": (0, cache.n_tokens)}[split]
        windows = eval_windows(cache.tokens, start, end, seq_len, batch_size, max_batches=max_batches)
        nll, n = evaluate_nll(model.to(dev), windows, dev)
    result = {"checkpoint": str(checkpoint), "split": split, "tokens": n, "mean_nll": nll,
              "perplexity": perplexity(nll), "seq_len": seq_len, "step": ckpt.get("step"),
              "precision": model.config.precision,
              "data": list(data) if data else "training data of the run"}
    print_table([(split, f"{n:,}", f"{nll:.4f}", f"{result['perplexity']:.3f}")],
                ("split", "tokens", "mean NLL", "perplexity"))
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
    click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
