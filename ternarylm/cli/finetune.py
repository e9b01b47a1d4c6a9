"""``ternary-finetune``: fine-tune a TernaryLM checkpoint for sentence(-pair) classification.

``mrpc`` reads MRPC's TSV files (or ``--dataset glue/mrpc`` online); ``classify`` any TSV/CSV table;
``predict`` runs an exported classifier folder (onnxruntime or NumPy, no torch). Results print as a
table and as one JSON line; the run folder holds ckpt.pt, metrics.json and dev_curve.png.
"""

from __future__ import annotations

import json

import click

from ternarylm.format.cli_errors import user_errors
from ternarylm.format.cli_table import print_table

EXAMPLES = """
\b
Examples:
  ternary-finetune mrpc --ckpt runs/small/ckpt.pt --data MRPC/ --out runs/mrpc
  ternary-finetune mrpc --ckpt runs/small/ckpt.pt --dataset glue/mrpc --out runs/mrpc   # online
  ternary-finetune classify --ckpt runs/small/ckpt.pt --train sst2/train.tsv --test sst2/dev.tsv \\
      --text-cols sentence --label-col label --out runs/sst2
  ternary-finetune classify --ckpt runs/small/ckpt.pt --train pairs.csv --text-cols q1,q2 \\
      --label-col duplicate --dev-fraction 0.2 --out runs/pairs
  ternary-export onnx runs/mrpc/ckpt.pt --target portable --out exports/mrpc
  ternary-finetune predict exports/mrpc --text "He said so." --text2 "So he said."
"""


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Fine-tune ternary checkpoints for classification (MRPC or any TSV/CSV task)."""


def training_options(fn):
    """Options shared by ``mrpc`` and ``classify`` (applied bottom-up, so listed in reverse)."""
    options = [
        click.option("--ckpt", required=True, type=click.Path(dir_okay=False),
                     help="Language-model ckpt.pt from ternary-train (ternary, or its fp twin)."),
        click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
                     help="Run folder: ckpt.pt, metrics.json, dev_curve.png."),
        click.option("--dev-fraction", default=0.1, show_default=True,
                     help="Share of the training rows carved off (seeded) as dev when no --dev is given."),
        click.option("--epochs", default=5, show_default=True),
        click.option("--max-steps", type=int, help="Stop after this many optimizer steps (overrides --epochs)."),
        click.option("--batch-size", default=16, show_default=True),
        click.option("--lr", default=1e-3, show_default=True,
                     help="Peak learning rate (AdamW); try 1e-4..3e-4 for large models."),
        click.option("--weight-decay", default=0.01, show_default=True),
        click.option("--warmup-ratio", default=0.1, show_default=True,
                     help="Share of the steps for linear warmup (then linear decay to 0)."),
        click.option("--max-len", default=128, show_default=True,
                     help="Tokens per example incl. special tokens; longer ones are truncated (reported)."),
        click.option("--patience", default=2, show_default=True,
                     help="Stop after this many dev evaluations without improvement (0 = never)."),
        click.option("--eval-every", default=0, show_default=True,
                     help="Evaluate dev every N steps (0 = once per epoch)."),
        click.option("--metric", type=click.Choice(["accuracy", "f1"]), default="accuracy", show_default=True,
                     help="Dev score that picks the kept checkpoint (ties: lower dev loss)."),
        click.option("--seed", default=42, show_default=True),
        click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N]."),
        click.option("--threads", type=int, help="torch CPU threads."),
        click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the metrics here."),
        click.option("--overwrite", is_flag=True, help="Replace a run already in --out."),
        click.option("--no-progress", is_flag=True, help="No progress bar (one line per evaluation instead)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _run(task, ckpt, out_dir, dev_fraction, epochs, max_steps, batch_size, lr, weight_decay, warmup_ratio,
         max_len, patience, eval_every, metric, seed, device, threads, json_path, overwrite, no_progress):
    from pathlib import Path

    from ternarylm.finetune.checkpoints import check_out_dir, load_lm_checkpoint

    check_out_dir(Path(out_dir), overwrite)
    lm = load_lm_checkpoint(ckpt)  # before the model code is imported: a wrong file fails fast
    from ternarylm.finetune.trainer import FinetuneArgs, finetune

    args = FinetuneArgs(ckpt=ckpt, out_dir=out_dir, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                        lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio, max_len=max_len,
                        patience=patience, eval_every=eval_every, metric=metric, seed=seed, device=device,
                        threads=threads, overwrite=overwrite, progress=not no_progress)
    metrics = finetune(task, args, log=lambda line: click.echo(line, err=True), ckpt=lm)
    report(metrics)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=2)


def report(metrics: dict):
    """The results table (percent) and one JSON line of the headline numbers."""
    base = metrics["majority_baseline"]
    rows = []
    for split in ("train", "dev", "test"):
        if split in metrics:
            m, b = metrics[split], base[split]
            rows.append((split, m["examples"], f"{100 * m['accuracy']:.2f}", f"{100 * m['f1']:.2f}",
                         f"{100 * b['accuracy']:.2f}", f"{100 * b['f1']:.2f}"))
    f1 = "F1" if metrics["num_labels"] == 2 else "macro-F1"
    print_table(rows, ("split", "examples", "accuracy", f1, "majority acc", f"majority {f1}"))
    click.echo(f"best: step {metrics['best_step']} (epoch {metrics['best_epoch']}) of {metrics['steps']}"
               f"{', stopped early' if metrics['early_stopped'] else ''}; majority class "
               f"{base['label_name']!r}; checkpoint {metrics['checkpoint']}")
    headline = {"task": metrics["task"], "checkpoint": metrics["checkpoint"], "best_step": metrics["best_step"],
                **{s: {"accuracy": metrics[s]["accuracy"], "f1": metrics[s]["f1"]} for s in ("dev", "test")
                   if s in metrics},
                "majority_baseline": {s: {"accuracy": base[s]["accuracy"], "f1": base[s]["f1"]}
                                      for s in ("dev", "test") if s in base}}
    click.echo(json.dumps(headline))


@main.command("mrpc", epilog=EXAMPLES)
@click.option("--data", "data_dir", type=click.Path(), help="Folder with msr_paraphrase_train.txt "
              "(and msr_paraphrase_test.txt), or GLUE's MRPC folder (train.tsv, dev.tsv).")
@click.option("--dataset", help="Hugging Face dataset instead of --data, e.g. glue/mrpc (needs internet).")
@click.option("--dev", "dev_file", type=click.Path(dir_okay=False), help="MRPC-format dev file (default: carved "
              "from train).")
@click.option("--test", "test_file", type=click.Path(dir_okay=False),
              help="MRPC-format test file (default: msr_paraphrase_test.txt in --data).")
@training_options
@user_errors
def mrpc(data_dir, dataset, dev_file, test_file, **options):
    """Fine-tune on MRPC (paraphrase or not); reports accuracy and F1 as GLUE does."""
    if bool(data_dir) == bool(dataset):
        raise click.UsageError("pass exactly one of --data DIR or --dataset glue/mrpc")
    if dataset:
        if dev_file or test_file:
            raise click.UsageError("--dev / --test go with --data, not --dataset")
        from ternarylm.finetune.hub import load_glue

        task = load_glue(dataset, options["dev_fraction"], options["seed"], expect="mrpc")
    else:
        from ternarylm.finetune.tasks import load_mrpc

        task = load_mrpc(data_dir, dev=dev_file, test=test_file, dev_fraction=options["dev_fraction"],
                         seed=options["seed"])
    _run(task, **options)


@main.command("classify", epilog=EXAMPLES)
@click.option("--train", "train_file", required=True, type=click.Path(dir_okay=False),
              help="Training table (.tsv/.txt: tab, .csv: comma) with a header row.")
@click.option("--dev", "dev_file", type=click.Path(dir_okay=False), help="Dev table (default: carved from train).")
@click.option("--test", "test_file", type=click.Path(dir_okay=False), help="Test table, scored with the best model.")
@click.option("--text-cols", required=True, help="Text column, or two comma-separated for sentence pairs.")
@click.option("--label-col", required=True, help="Label column: ints 0..n-1 or any strings (sorted).")
@click.option("--labels", "label_list", help="Label names in id order, comma-separated (default: sorted).")
@click.option("--delimiter", help="Field delimiter (default: from the extension): tab, comma, ';', ...")
@training_options
@user_errors
def classify(train_file, dev_file, test_file, text_cols, label_col, label_list, delimiter, **options):
    """Fine-tune on any sentence or sentence-pair classification table."""
    from ternarylm.finetune.tasks import load_table_task

    task = load_table_task(train_file, text_cols, label_col, dev=dev_file, test=test_file,
                           dev_fraction=options["dev_fraction"], seed=options["seed"], delimiter=delimiter,
                           labels=label_list)
    _run(task, **options)


@main.command("predict", epilog=EXAMPLES)
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--text", "texts", multiple=True, required=True, help="Input text (repeatable).")
@click.option("--text2", "texts2", multiple=True, help="Second text of each pair (as many as --text).")
@click.option("--engine", type=click.Choice(["ort", "numpy"]), default="ort", show_default=True)
@click.option("--threads", type=int, default=0, show_default=True, help="onnxruntime threads (0 = default).")
@user_errors
def predict(model_dir, texts, texts2, engine, threads):
    """Classify texts with an exported classifier folder MODEL_DIR (no torch needed)."""
    from ternarylm.runtime_py.loader import load_classifier

    clf = load_classifier(model_dir, engine=engine, **({"threads": threads} if engine == "ort" else {}))
    if clf.spec.pair and len(texts2) != len(texts):
        raise click.UsageError(f"this classifier reads sentence pairs: give one --text2 per --text "
                               f"({len(texts)} --text, {len(texts2)} --text2)")
    if not clf.spec.pair and texts2:
        raise click.UsageError("this classifier reads single sentences; drop --text2")
    inputs = list(zip(texts, texts2)) if clf.spec.pair else list(texts)
    probs = clf.predict(inputs)
    rows = []
    for i, p in enumerate(probs):
        k = int(p.argmax())
        rows.append((i, clf.labels[k], f"{p[k]:.4f}", " ".join(f"{x:.4f}" for x in p)))
    print_table(rows, ("input", "label", "probability", "probabilities (" + ", ".join(clf.labels) + ")"))
    if clf.truncated:
        click.echo(f"note: {clf.truncated} input(s) were truncated to {clf.spec.max_len} tokens", err=True)


if __name__ == "__main__":
    main()
