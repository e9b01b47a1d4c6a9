"""Next-token choice from logits: greedy, temperature, top-k, top-p. One implementation for every
engine, so the same logits, settings and seed pick the same token whichever engine produced them.

Order (as Hugging Face's logits processors): temperature -> top-k -> top-p -> sample. Probabilities are
computed in float64; the draw is one ``rng.random()`` per token (inverse CDF over the kept tokens in
descending-probability order, ties broken by token id), so a seed gives a reproducible sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0 = greedy (argmax; the lowest id wins a tie)
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def sample_next(logits: np.ndarray, config: SamplingConfig, rng: np.random.Generator) -> int:
    """One token id from a ``(V,)`` logits vector."""
    logits = np.asarray(logits, np.float64).reshape(-1)
    if config.greedy:
        return int(np.argmax(logits))
    order = np.argsort(-logits, kind="stable")  # descending, ties by id
    scores = logits[order] / config.temperature
    if config.top_k:
        scores = scores[: config.top_k]
    probs = np.exp(scores - scores[0])
    probs /= probs.sum()
    if config.top_p < 1:
        keep = int(np.searchsorted(np.cumsum(probs), config.top_p) + 1)  # smallest prefix with mass >= top_p
        probs = probs[:keep] / probs[:keep].sum()
    cdf = np.cumsum(probs)
    i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return int(order[min(i, len(cdf) - 1)])
