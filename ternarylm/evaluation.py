"""Perplexity as exp(mean token NLL) over a token range, without label smoothing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate_nll(model, windows, device="cpu", autocast_dtype=None) -> tuple[float, int]:
    """Mean next-token NLL and token count over ``windows`` (LongTensors ``[B, T+1]``)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in windows:
        batch = batch.to(device)
        x, y = batch[:, :-1], batch[:, 1:]
        with torch.autocast(device_type="cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(input_ids=x, use_cache=False).logits
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
        total += float(nll)
        count += y.numel()
    model.train(was_training)
    return (total / count if count else float("nan")), count


def perplexity(mean_nll: float) -> float:
    return math.exp(mean_nll) if mean_nll < 700 else float("inf")


def run_args_for_eval(ckpt: dict, data=(), dataset: str | None = None, dataset_config: str | None = None):
    """The ``TrainArgs`` a checkpoint was trained with, pointed at ``data``/``dataset`` when given:
    evaluation tools (ternary-eval, ternary-analyze) tokenise and split text exactly as training did.
    Unknown keys (a checkpoint from a newer ternarylm) are ignored rather than fatal."""
    import dataclasses

    from ternarylm.training.args import TrainArgs

    known = {f.name for f in dataclasses.fields(TrainArgs)}
    run_args = {k: v for k, v in dict((ckpt.get("meta") or {}).get("train_args", {})).items() if k in known}
    run_args.update(resume=False, overwrite=False, progress=False)
    if data:
        run_args.update(data=list(data), dataset=None)
    elif dataset:
        run_args.update(data=[], dataset=dataset, dataset_config=dataset_config)
    return TrainArgs(**run_args)
