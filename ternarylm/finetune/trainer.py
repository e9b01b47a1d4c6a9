"""The fine-tuning loop: a causal-LM ``ckpt.pt`` + labelled examples -> a sequence-classification
``ckpt.pt``, ``metrics.json`` and ``dev_curve.png`` in ``--out``.

- The backbone is the LM's ``TernaryLMModel`` (BitLinear stays ternary, QAT as in pre-training); the
  head ``score`` is a fresh full-precision linear. Everything trains (no frozen layers).
- AdamW (no decay on norms and embeddings), linear warmup then linear decay to 0, gradient clipping.
- Batches are shuffled per epoch (seeded) and right-padded per batch.
- The dev split is evaluated every ``--eval-every`` steps (0: once per epoch). The best evaluation
  (``--metric``, ties broken by lower dev loss) is kept: ``ckpt.pt`` is rewritten atomically each time
  the dev score improves; training stops after ``--patience`` evaluations without improvement.
- At the end the best weights are scored on train, dev and test and compared with the
  majority-class baseline.

Nothing is written to ``--out`` until the checkpoint, the data and the options have all been checked.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR

import ternarylm
from ternarylm.checkpoint import config_from_checkpoint, save_checkpoint
from ternarylm.classification import TernaryLMForSequenceClassification, load_backbone
from ternarylm.finetune import FinetuneError
from ternarylm.finetune.checkpoints import OUTPUTS, check_out_dir, load_lm_checkpoint
from ternarylm.finetune.metrics import classification_metrics, majority_baseline
from ternarylm.finetune.plots import plot_dev_curve
from ternarylm.finetune.tasks import TaskData
from ternarylm.format.encoding import EncodingSpec, encode, pad_batch
from ternarylm.format.entries import CAUSAL_LM, SEQUENCE_CLASSIFICATION
from ternarylm.training.schedule import lr_multiplier
from ternarylm.training.trainer import param_groups, resolve_device

METRICS = ("accuracy", "f1")


@dataclass
class FinetuneArgs:
    ckpt: str
    out_dir: str
    epochs: int = 5
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_len: int = 128
    patience: int = 2
    eval_every: int = 0  # steps between dev evaluations; 0 = once per epoch
    max_steps: int | None = None
    metric: str = "accuracy"
    grad_clip: float = 1.0
    seed: int = 42
    device: str = "auto"
    threads: int | None = None
    eval_batch_size: int = 64
    overwrite: bool = False
    progress: bool = True

    def validate(self):
        checks = [(self.epochs >= 1, "--epochs must be at least 1"),
                  (self.batch_size >= 1, "--batch-size must be at least 1"),
                  (self.lr > 0, "--lr must be positive"),
                  (0 <= self.warmup_ratio < 1, "--warmup-ratio must be in [0, 1)"),
                  (self.patience >= 0, "--patience must be 0 (off) or more"),
                  (self.eval_every >= 0, "--eval-every must be 0 (once per epoch) or more"),
                  (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
                  (self.metric in METRICS, f"--metric must be one of {', '.join(METRICS)}")]
        for ok, message in checks:
            if not ok:
                raise FinetuneError(message)

    def to_dict(self) -> dict:
        return asdict(self)


def classifier_config(ckpt: dict, labels: list[str]):
    cfg = dict(ckpt["config"])
    cfg["id2label"] = {str(i): name for i, name in enumerate(labels)}
    cfg["label2id"] = {name: i for i, name in enumerate(labels)}
    return config_from_checkpoint({"config": cfg})


def config_dict(config, labels: list[str]) -> dict:
    """JSON-able config for ckpt.pt with the label maps always spelled out (to_json_string drops the
    default LABEL_i names, which would lose num_labels > 2)."""
    d = json.loads(config.to_json_string())
    d["id2label"] = {str(i): name for i, name in enumerate(labels)}
    d["label2id"] = {name: i for i, name in enumerate(labels)}
    return d


@torch.no_grad()
def predict_logits(model, seqs: list[list[int]], pad_id: int, device, batch_size: int = 64) -> np.ndarray:
    """``(N, num_labels)`` float32 logits; batches of similar length (the result does not depend on it)."""
    model.eval()
    order = np.argsort([len(s) for s in seqs], kind="stable")
    out = np.zeros((len(seqs), model.config.num_labels), np.float32)
    for i in range(0, len(seqs), batch_size):
        idx = order[i:i + batch_size]
        ids, mask = pad_batch([seqs[j] for j in idx], pad_id)
        logits = model(input_ids=torch.from_numpy(ids).to(device),
                       attention_mask=torch.from_numpy(mask).to(device)).logits
        out[idx] = logits.float().cpu().numpy()
    return out


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def evaluate(model, seqs, labels: np.ndarray, num_labels: int, pad_id: int, device, batch_size: int) -> dict:
    logits = predict_logits(model, seqs, pad_id, device, batch_size)
    return {**classification_metrics(labels, logits.argmax(1), num_labels), "loss": _cross_entropy(logits, labels)}


def finetune(task: TaskData, args: FinetuneArgs, log=print, ckpt: dict | None = None) -> dict:
    """Fine-tune ``args.ckpt`` on ``task``; returns the metrics (also written to ``metrics.json``).
    ``ckpt``: the already loaded ``args.ckpt`` (``load_lm_checkpoint``), to skip loading it again."""
    args.validate()
    out_dir = Path(args.out_dir)
    check_out_dir(out_dir, args.overwrite)
    ckpt = ckpt if ckpt is not None else load_lm_checkpoint(args.ckpt)
    from ternarylm.checkpoint import tokenizer_from_checkpoint
    from ternarylm.data.tokenizer import without_padding

    tokenizer = without_padding(tokenizer_from_checkpoint(ckpt))
    config = classifier_config(ckpt, task.labels)
    if args.max_len > config.max_position_embeddings:
        raise FinetuneError(f"--max-len {args.max_len} exceeds the model's context of "
                            f"{config.max_position_embeddings} tokens")
    spec = EncodingSpec.for_tokenizer(tokenizer, task.text_columns, args.max_len)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    encoded, labels, truncated = {}, {}, {}
    for split in task.splits():
        encoded[split.name], truncated[split.name] = encode(tokenizer, [e.texts for e in split.examples], spec)
        labels[split.name] = split.labels()
    n = task.num_labels
    baseline = {s: majority_baseline(labels["train"], labels[s], n) for s in labels}
    log(f"ternarylm {ternarylm.__version__}: fine-tuning {args.ckpt} ({config.precision}, "
        f"{config.num_hidden_layers} layers x {config.hidden_size}) on {task.name}: "
        + ", ".join(f"{s} {len(labels[s])}" for s in labels) + f" examples, {n} labels "
        f"({', '.join(task.labels)}), input {spec.template}, device {device}")
    for note in task.notes:
        log(f"note: {note}")
    for s, k in truncated.items():
        if k:
            log(f"note: {k} of {len(labels[s])} {s} examples were truncated to --max-len {args.max_len} tokens "
                "(longest text first)")

    torch.manual_seed(args.seed)
    model = TernaryLMForSequenceClassification(config)
    load_backbone(model, ckpt["model"])
    model.to(device)
    steps_per_epoch = math.ceil(len(labels["train"]) / args.batch_size)
    total = args.max_steps or args.epochs * steps_per_epoch
    warmup = round(args.warmup_ratio * total)
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    scheduler = LambdaLR(optimizer, lambda s: lr_multiplier(s, total, warmup, 0.0, "onecycle"))
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None
    pad_id = spec.pad_token_id
    train_seqs, train_labels = encoded["train"], labels["train"]
    rng = np.random.default_rng(args.seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # --overwrite: a stale file must not pass for this run's
        (out_dir / name).unlink(missing_ok=True)
    task_spec = {"name": task.name, "text_columns": list(task.text_columns), "label_column": task.label_column,
                 "labels": list(task.labels), "encoding": spec.to_dict(),
                 "sources": {s.name: s.source for s in task.splits()}}
    meta = {"package_version": ternarylm.__version__, "torch_version": str(torch.__version__),
            "finetune_args": args.to_dict(), "source_checkpoint": str(args.ckpt),
            "source_step": ckpt.get("step"), "source_kind": ckpt.get("kind", CAUSAL_LM)}

    def state(weights: dict, step: int, extra: dict) -> dict:
        return {"kind": SEQUENCE_CLASSIFICATION, "config": config_dict(config, task.labels),
                "tokenizer_json": tokenizer.to_str(), "model": weights, "step": step, "task": task_spec,
                "meta": {**meta, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}, **extra}

    history: list[dict] = []
    best = {"key": None, "step": 0, "epoch": 0, "weights": None, "dev": None}
    bad_evals, step, stopped_early, losses = 0, 0, False, []
    progress = _progress(args, total)
    t0 = time.perf_counter()

    def run_eval(epoch: int) -> bool:
        """Evaluate on dev; keep the best; True when early stopping says stop."""
        nonlocal bad_evals
        dev = evaluate(model, encoded["dev"], labels["dev"], n, pad_id, device, args.eval_batch_size)
        record = {"step": step, "epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                  "lr": scheduler.get_last_lr()[0], "dev_accuracy": dev["accuracy"], "dev_f1": dev["f1"],
                  "dev_loss": dev["loss"]}
        losses.clear()
        history.append(record)
        key = (dev[args.metric], -dev["loss"])
        improved = best["key"] is None or key > best["key"]
        if improved:
            weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            best.update(key=key, step=step, epoch=epoch, weights=weights, dev=dev)
            save_checkpoint(state(weights, step, {"best_dev": _summary(dev)}), out_dir / "ckpt.pt")
            bad_evals = 0
        else:
            bad_evals += 1
        record["best"] = improved
        if progress is not None:
            progress.set_postfix(loss=f"{record['train_loss'] or 0:.3f}", dev_acc=f"{dev['accuracy']:.3f}",
                                 dev_f1=f"{dev['f1']:.3f}")
        else:
            log(f"step {step} (epoch {epoch}): train loss {record['train_loss'] or float('nan'):.4f}, dev accuracy "
                f"{dev['accuracy']:.4f}, F1 {dev['f1']:.4f}, loss {dev['loss']:.4f}{' *' if improved else ''}")
        return bool(args.patience) and bad_evals >= args.patience

    epoch = 0
    while step < total and not stopped_early:
        epoch += 1
        model.train()
        order = rng.permutation(len(train_seqs))
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            ids, mask = pad_batch([train_seqs[j] for j in idx], pad_id)
            y = torch.from_numpy(train_labels[idx]).to(device)
            with torch.autocast(device_type="cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(input_ids=torch.from_numpy(ids).to(device),
                               attention_mask=torch.from_numpy(mask).to(device)).logits
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss.item())
            if progress is not None:
                progress.update(1)
            if args.eval_every and step % args.eval_every == 0:
                stopped_early = run_eval(epoch) and step < total
                model.train()
            if stopped_early or step >= total:
                break
        if not args.eval_every and not stopped_early:
            stopped_early = run_eval(epoch) and step < total
    if not history or history[-1]["step"] != step:
        run_eval(epoch)
    if progress is not None:
        progress.close()
    train_seconds = time.perf_counter() - t0

    model.load_state_dict(best["weights"])
    scores = {s: evaluate(model, encoded[s], labels[s], n, pad_id, device, args.eval_batch_size) for s in labels}
    metrics = {
        "task": task.name, "labels": list(task.labels), "num_labels": n,
        "f1_kind": scores["train"]["f1_kind"], "selection_metric": args.metric,
        **{s: _summary(scores[s]) for s in scores},
        "majority_baseline": {"label": baseline["train"]["label"],
                              "label_name": task.labels[baseline["train"]["label"]],
                              **{s: _summary(baseline[s]) for s in baseline}},
        "best_step": best["step"], "best_epoch": best["epoch"], "steps": step, "epochs_run": epoch,
        "planned_steps": total, "early_stopped": stopped_early, "train_seconds": round(train_seconds, 2),
        "truncated": truncated, "max_len": args.max_len, "examples": {s: len(labels[s]) for s in labels},
        "sources": task_spec["sources"], "checkpoint": str(out_dir / "ckpt.pt"), "source_checkpoint": str(args.ckpt),
        "precision": config.precision, "history": history,
    }
    save_checkpoint(state(best["weights"], best["step"], {"best_dev": _summary(best["dev"]),
                                                          "metrics": _plain(metrics)}), out_dir / "ckpt.pt")
    plot_dev_curve(history, out_dir / "dev_curve.png", baseline["dev"]["accuracy"], best["step"],
                   title=f"{task.name}: dev split ({config.precision} backbone)")
    tmp = out_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / "metrics.json")
    return metrics


def _summary(scores: dict) -> dict:
    return {k: scores[k] for k in ("accuracy", "f1", "loss", "examples", "confusion") if k in scores}


def _plain(metrics: dict) -> dict:
    """The metrics without the history (kept in metrics.json), as plain data for ckpt.pt."""
    return json.loads(json.dumps({k: v for k, v in metrics.items() if k != "history"}))


def _progress(args: FinetuneArgs, total: int):
    if not args.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="finetune", unit="step", dynamic_ncols=True)
