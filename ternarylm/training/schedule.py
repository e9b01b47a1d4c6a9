"""Learning-rate schedules as multipliers of the peak LR (for ``torch.optim.lr_scheduler.LambdaLR``)."""

from __future__ import annotations

import math


def lr_multiplier(step: int, max_steps: int, warmup_steps: int, min_ratio: float, schedule: str) -> float:
    """Warmup then cosine decay to ``min_ratio``; ``onecycle`` is warmup then linear decay to it."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "onecycle":
        return 1.0 - (1.0 - min_ratio) * progress
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
