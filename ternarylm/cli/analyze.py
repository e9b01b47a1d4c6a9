"""``ternary-analyze``: per-layer statistics and sensitivity of a ternary checkpoint, and a
mixed-precision plan (which layers to keep at 4/8/16 bits). See docs/ANALYSIS.md."""

from __future__ import annotations

from pathlib import Path

import click

from ternarylm.format.cli_errors import user_errors
from ternarylm.format.cli_table import print_table

EXAMPLES = """
\b
Examples:
  ternary-analyze runs/small/ckpt.pt                       # -> runs/small/analysis/
  ternary-analyze runs/small/ckpt.pt --keep 6 --bits 4 --eval-tokens 16384
  ternary-analyze runs/132m/ckpt.pt --data held-out.txt --device cuda
  ternary-analyze runs/small/ckpt.pt --no-sensitivity      # weight statistics only (seconds)
\b
Then train with the plan it prints:
  ternary-train --preset small --out runs/small-mixed --keep-precision 'model.layers.0.mlp.down_proj=8' ...
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", multiple=True, help="Text files/folders to evaluate on (default: the run's own data).")
@click.option("--dataset", help="Hugging Face datasets name instead of --data.")
@click.option("--dataset-config", help="datasets config name.")
@click.option("--split", type=click.Choice(["val", "all"]), default="val", show_default=True,
              help="The validation split of the data (as in training), or all of it.")
@click.option("--eval-tokens", default=4096, show_default=True,
              help="Predicted tokens per evaluation (rounded up to whole batches).")
@click.option("--eval-batches", type=int, help="Batches per evaluation (overrides --eval-tokens).")
@click.option("--seq-len", type=int, help="Context per window (default: the run's).")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--keep", default=4, show_default=True, help="Layers the plan keeps at higher precision.")
@click.option("--bits", type=click.Choice(["4", "8", "16"]), default="8", show_default=True,
              help="Precision of the kept layers (16 = full precision, fp16 on export).")
@click.option("--rank-by", type=click.Choice(["fp", "ternary"]), default="fp", show_default=True,
              help="Rank layers by |loss change| when the layer alone is full precision (fp) or when "
                   "it alone is ternary in a full-precision model (ternary).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output folder (default: <checkpoint folder>/analysis).")
@click.option("--no-sensitivity", is_flag=True, help="Weight statistics only: no evaluations, no plan.")
@click.option("--threads", type=int, help="torch CPU threads.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda[:N] or auto.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@user_errors
def main(checkpoint, data, dataset, dataset_config, split, eval_tokens, eval_batches, seq_len, batch_size,
         keep, bits, rank_by, out_dir, no_sensitivity, threads, device, no_progress):
    """Analyse every ternary linear of CHECKPOINT: scale, trit distribution, quantisation error and
    loss sensitivity; print a table, write analysis.json and analysis.png, suggest a plan."""
    import torch

    from ternarylm.analysis import analyze_checkpoint, load_for_analysis, table_rows, write_report
    from ternarylm.analysis.report import TABLE_HEADERS

    if data and dataset:
        raise click.ClickException("give either --data or --dataset, not both")
    if keep < 0:
        raise click.ClickException(f"--keep must be >= 0, got {keep}")
    if threads:
        torch.set_num_threads(threads)
    loaded = load_for_analysis(checkpoint)
    doc = analyze_checkpoint(checkpoint, data=data, dataset=dataset, dataset_config=dataset_config, split=split,
                             seq_len=seq_len, batch_size=batch_size, eval_tokens=eval_tokens,
                             eval_batches=eval_batches, sensitivity=not no_sensitivity, keep=keep,
                             bits=int(bits), rank_by=rank_by, device=device, progress=not no_progress,
                             loaded=loaded)
    out = Path(out_dir) if out_dir else Path(checkpoint).resolve().parent / "analysis"
    paths = write_report(doc, out)

    print_table(table_rows(doc), TABLE_HEADERS)
    click.echo("")
    if doc["baselines"]:
        ev, base = doc["evaluation"], doc["baselines"]
        click.echo(f"validation loss as trained {base['as_trained']['loss']:.4f} "
                   f"(ppl {base['as_trained']['perplexity']:.2f}); all layers full precision "
                   f"{base['all_fp']['loss']:.4f} (ppl {base['all_fp']['perplexity']:.2f}); "
                   f"{ev['tokens']:,} tokens, {ev['seconds']:.1f} s")
        click.echo("dL fp-alone: loss change with that layer alone in full precision; dL tern-alone: "
                   "loss change with only that layer ternary in a full-precision model (nats/token); "
                   "rank: by the size of the change, see docs/ANALYSIS.md")
    plan = doc["plan"]
    if plan and plan["layers"]:
        click.echo(f"plan: keep {plan['keep']} layer(s) at {plan['bits']} bits "
                   f"({plan['kept_parameter_fraction']:.1%} of the quantised weights), ranked by "
                   f"{plan['criterion']}")
        for note in plan["notes"]:
            click.echo(f"note: {note}")
        click.echo(f"  ternary-train ... {plan['flags']}")
    elif plan is not None:
        click.echo("plan: --keep 0, no layers kept")
    else:
        click.echo("plan: none (--no-sensitivity: the plan needs the sensitivity evaluations)")
    click.echo(f"wrote {paths['json']} and {paths['png']}")


if __name__ == "__main__":
    main()
