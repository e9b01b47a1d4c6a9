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
