"""How two sets of logits are compared, everywhere the project checks one runtime against another
(``ternary-export verify``, ``ternary-profile --tune``, the benchmarks): one definition, one meaning.

    relative_max_diff(got, ref) = max|got - ref| / max|ref|     (scale-free: 0.01 is 1% of the largest logit)
    argmax_agreement(got, ref)  = share of rows whose argmax is the same
    kl_divergence(ref, got)     = per row KL(softmax(ref) || softmax(got)) in nats (what a lossy choice costs:
                                  llama.cpp's ``perplexity --kl-divergence`` measure)
"""

from __future__ import annotations

import numpy as np


def relative_max_diff(got, ref) -> float:
    """``max|got - ref| / max|ref|``; ``inf`` when the shapes differ."""
    got, ref = np.asarray(got, np.float32), np.asarray(ref, np.float32)
    if got.shape != ref.shape:
        return float("inf")
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-6))


def argmax_agreement(got, ref) -> float:
    """Share of positions (rows over the last axis) with the same argmax; 0 when the shapes differ."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return 0.0
    return float((got.argmax(-1) == ref.argmax(-1)).mean())


def kl_divergence(ref, got) -> np.ndarray:
    """Per-row ``KL(softmax(ref) || softmax(got))`` in nats, rows over the last axis (float64 inside)."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if got.shape != ref.shape:
        raise ValueError(f"logit shapes differ: {got.shape} vs {ref.shape}")
    log_p, log_q = _log_softmax(ref), _log_softmax(got)
    p = np.exp(log_p)
    return np.where(p > 0, p * (log_p - log_q), 0.0).sum(-1)  # a -inf logit (p = 0) adds nothing, not nan


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
