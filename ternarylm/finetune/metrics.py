"""Classification metrics as GLUE reports them (NumPy only; fractions in [0, 1], tables show percent).

- accuracy
- F1: for two classes the F1 of the **positive class** (label id 1; MRPC's "equivalent"), which is
  the F1 GLUE uses for MRPC and QQP; for more classes the macro average of per-class F1.
  A class that is never predicted nor present scores F1 0 (as scikit-learn's ``zero_division=0``).
- the majority-class baseline: always predict the most frequent *training* label (ties: lowest id),
  scored on each split like a model.
"""

from __future__ import annotations

import numpy as np


def confusion(y_true, y_pred, num_labels: int) -> np.ndarray:
    """``(num_labels, num_labels)`` counts, rows = true label, columns = prediction."""
    m = np.zeros((num_labels, num_labels), np.int64)
    np.add.at(m, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return m


def per_class_f1(m: np.ndarray) -> np.ndarray:
    tp = np.diag(m).astype(np.float64)
    denom = m.sum(axis=0) + m.sum(axis=1)  # predicted + actual = 2 tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def classification_metrics(y_true, y_pred, num_labels: int) -> dict:
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if len(y_true) == 0:
        raise ValueError("no examples to score")
    m = confusion(y_true, y_pred, num_labels)
    f1s = per_class_f1(m)
    binary = num_labels == 2
    return {"accuracy": float((y_true == y_pred).mean()),
            "f1": float(f1s[1] if binary else f1s.mean()),
            "f1_kind": "binary (positive class 1)" if binary else "macro",
            "examples": len(y_true), "confusion": m.tolist()}


def majority_class(train_labels, num_labels: int) -> int:
    counts = np.bincount(np.asarray(train_labels, np.int64), minlength=num_labels)
    return int(counts.argmax())


def majority_baseline(train_labels, split_labels, num_labels: int) -> dict:
    label = majority_class(train_labels, num_labels)
    y = np.asarray(split_labels, np.int64)
    return {"label": label, **classification_metrics(y, np.full_like(y, label), num_labels)}
