"""``ternary-train``: train a ternary (or full-precision twin) TernaryLM and write checkpoints."""

from __future__ import annotations

import click

from ternarylm.cli.common import parse_overrides
from ternarylm.format.cli_errors import user_errors

EXAMPLES = """
\b
Examples:
  ternary-train --preset small --out runs/small              # built-in synthetic stories, CPU
  ternary-train --preset small --precision fp --out runs/fp  # the full-precision twin
  ternary-train --preset 132m --data corpus/ --tokenizer ./bert-base-uncased --device cuda
  ternary-train --dataset roneneldan/TinyStories --preset small --out runs/ts
  ternary-train --preset small --keep-precision 'model.layers.0.*=8' --out runs/mixed
  ternary-train --out runs/small --resume                     # continue exactly where it stopped
  ternary-train --init-from ./my-llama --data corpus/ --out runs/from-llama   # QAT from a fp Llama
  torchrun --nproc_per_node=2 $(which ternary-train) --preset small --out runs/ddp
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out_dir", default="runs/small", show_default=True, help="Run folder.")
@click.option("--preset", default="small", show_default=True, help="132m, small or tiny.")
@click.option("--precision", type=click.Choice(["ternary", "fp"]), default="ternary", show_default=True)
@click.option("--config-json", type=click.Path(dir_okay=False), help="JSON file of config overrides.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config field (repeatable).")
@click.option("--data", multiple=True, help="Local .txt/.jsonl file or folder (repeatable).")
@click.option("--dataset", help="Hugging Face datasets name (needs internet and `ternarylm[datasets]`).")
@click.option("--dataset-config", help="datasets config name.")
@click.option("--dataset-split", default="train", show_default=True)
@click.option("--text-field", default="text", show_default=True)
@click.option("--stories", default=20000, show_default=True, help="Synthetic stories when no data is given.")
@click.option("--tokenizer", help="Tokenizer folder/file or hub name (default: train a byte-level BPE).")
@click.option("--init-from", "init_from", metavar="PATH",
              help="Start from a full-precision Llama-architecture Hugging Face model (a folder with config.json, "
                   "model.safetensors and its tokenizer; a hub name online): its shapes, weights (the latent "
                   "weights of ternary QAT) and tokenizer. A ternary folder (BitNet b1.58, packed or bf16) "
                   "continues QAT from its own trits, keeping its architecture. --preset is ignored; --set may "
                   "change only max_position_embeddings. See docs/HF.md.")
@click.option("--vocab-size", type=int, help="Vocabulary of the trained BPE (default: the preset's).")
@click.option("--seq-len", default=128, show_default=True)
@click.option("--batch-size", default=16, show_default=True)
@click.option("--grad-accum", default=1, show_default=True)
@click.option("--lr", default=2e-3, show_default=True, help="Peak learning rate.")
@click.option("--min-lr-ratio", default=0.1, show_default=True)
@click.option("--warmup-steps", default=50, show_default=True)
@click.option("--max-steps", default=500, show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "onecycle"]), default="cosine", show_default=True)
@click.option("--weight-decay", default=0.1, show_default=True)
@click.option("--grad-clip", default=1.0, show_default=True)
@click.option("--eval-every", default=100, show_default=True)
@click.option("--eval-batches", default=20, show_default=True)
@click.option("--val-fraction", default=0.05, show_default=True)
@click.option("--seed", default=1337, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--threads", type=int, help="torch CPU threads.")
@click.option("--keep-last", default=2, show_default=True, help="Step checkpoints kept besides ckpt.pt/best.pt.")
@click.option("--granularity", type=click.Choice(["tensor", "channel", "group"]), default="tensor",
              show_default=True, help="Scale granularity of the absmean ternary weights.")
@click.option("--group-size", type=click.Choice(["32", "64", "128"]), help="Columns per scale (granularity group).")
@click.option("--act-bits", type=click.Choice(["8", "0"]), default="8", show_default=True,
              help="8-bit activation fake-quantisation; 0 turns it off.")
@click.option("--keep-precision", "keep_precision", multiple=True, metavar="PATTERN=BITS",
              help="Keep matching linears at 4 or 8 bits or 16 (full precision) instead of ternary, e.g. "
                   "'model.layers.0.*=8' (repeatable; the highest matching precision wins; ternary-analyze suggests a plan).")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@user_errors
def main(out_dir, preset, precision, config_json, sets, data, dataset, dataset_config, dataset_split,
         text_field, stories, tokenizer, init_from, vocab_size, seq_len, batch_size, grad_accum, lr, min_lr_ratio,
         warmup_steps, max_steps, schedule, weight_decay, grad_clip, eval_every, eval_batches,
         val_fraction, seed, device, threads, keep_last, granularity, group_size, act_bits, keep_precision,
         resume, overwrite, no_progress):
    """Train a TernaryLM with ternary quantization-aware training (or its fp twin)."""
    from ternarylm.configuration import load_overrides
    from ternarylm.quantization import parse_keep_precision
    from ternarylm.training.args import TrainArgs
    from ternarylm.training.trainer import train

    overrides = load_overrides(config_json) if config_json else {}
    overrides.update(parse_overrides(sets))
    args = TrainArgs(out_dir=out_dir, preset=preset, precision=precision, overrides=overrides,
                     data=list(data), dataset=dataset, dataset_config=dataset_config,
                     dataset_split=dataset_split, text_field=text_field, stories=stories,
                     tokenizer=tokenizer, init_from=init_from, vocab_size=vocab_size, seq_len=seq_len,
                     batch_size=batch_size,
                     grad_accum=grad_accum, lr=lr, min_lr_ratio=min_lr_ratio, warmup_steps=warmup_steps,
                     max_steps=max_steps, schedule=schedule, weight_decay=weight_decay, grad_clip=grad_clip,
                     eval_every=eval_every, eval_batches=eval_batches, val_fraction=val_fraction, seed=seed,
                     device=device, threads=threads, keep_last=keep_last, granularity=granularity,
                     group_size=int(group_size) if group_size else None, activation_bits=int(act_bits),
                     keep_precision=parse_keep_precision(keep_precision), resume=resume, overwrite=overwrite, progress=not no_progress)
    summary = train(args)
    click.echo(f"done: step {summary['step']}, best validation loss {summary['best_val_loss']:.4f} "
               f"(perplexity {summary['best_val_ppl']:.2f}); checkpoint {summary['checkpoint']}")


if __name__ == "__main__":
    main()
