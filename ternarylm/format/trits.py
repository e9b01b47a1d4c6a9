"""Trits: absmean ternarisation and the two packings of TernaryMatMul weights, in one place so that
training, the exporter and the on-device runtimes cannot disagree about the bit layout.

NumPy only (a device imports it without torch). MatMulNBits' layout is in ``codecs.py``.

Ternarisation (absmean, as in BitNet b1.58 / TernaryLM)::

    gamma = mean(|W|) over a scale group          (per tensor, per output row, or per G input columns)
    T     = clamp(round(W / gamma), -1, 1)         (trits in {-1, 0, +1})
    W_q   = T * gamma

Weights follow torch's ``nn.Linear`` layout: ``W`` is ``[N, K]`` (N outputs, K inputs) and ``y = x @ W.T``.
Scales are always stored as ``[N, K // group_size]`` (per tensor and per row use ``group_size = K``).

Packings (each row of ``T`` is packed along K, row after row; pad trits are 0):

``2bit``  code = t + 1 in {0, 1, 2}; 4 codes per byte, LSB first:
          byte = c0 | c1 << 2 | c2 << 4 | c3 << 6.
          Worked example: trits [+1, 0, -1, +1] -> codes [2, 1, 0, 2] -> 2 + 1*4 + 0*16 + 2*64 = 0x86.
          This is exactly ONNX Runtime's ``MatMulNBits`` bits=2 layout with zero point 1
          (``ternarylm.format.codecs.to_matmul_nbits``).

``base3`` 5 trits per byte (3^5 = 243 <= 256), 1.6 bits/weight, close to log2(3) = 1.585:
          byte = c0 + 3*c1 + 9*c2 + 27*c3 + 81*c4 with c = t + 1.
          Worked example: trits [+1, 0, -1, +1, 0] -> codes [2, 1, 0, 2, 1] -> 2 + 3 + 0 + 54 + 81 = 140.
"""

from __future__ import annotations

import numpy as np

PACKINGS = ("2bit", "base3")
TRITS_PER_BYTE = {"2bit": 4, "base3": 5}
EPS = 1e-5


class InvalidPackedWeights(ValueError):
    """Packed bytes that do not decode to trits (corrupt or tampered file)."""


def scale_group_size(granularity: str, in_features: int, group_size: int | None = None) -> int:
    """Number of input columns that share one scale, for a scale granularity name."""
    if granularity in ("tensor", "channel"):
        return in_features
    if granularity == "group":
        if not group_size or in_features % group_size:
            raise ValueError(
                f"group size {group_size} does not divide in_features={in_features}; "
                "pick a group size that divides every layer's input width (32, 64 or 128)"
            )
        return group_size
    raise ValueError(f"unknown scale granularity {granularity!r}; use tensor, channel or group")


def absmean_scales(w: np.ndarray, granularity: str = "tensor", group_size: int | None = None):
    """Scales gamma as ``[N, K // G]`` float32 for weights ``[N, K]``."""
    n, k = w.shape
    g = scale_group_size(granularity, k, group_size)
    a = np.abs(w.astype(np.float32))
    if granularity == "tensor":
        return np.full((n, 1), max(float(a.mean()), EPS), dtype=np.float32)
    return np.maximum(a.reshape(n, k // g, g).mean(axis=2), EPS).astype(np.float32)


def ternarize(w: np.ndarray, granularity: str = "tensor", group_size: int | None = None):
    """Return ``(trits int8 [N, K], scales float32 [N, K // G])`` for latent weights ``w``."""
    k = w.shape[1]
    scales = absmean_scales(w, granularity, group_size)
    g = k // scales.shape[1]
    expanded = np.repeat(scales, g, axis=1)
    trits = np.clip(np.rint(w.astype(np.float32) / expanded), -1, 1).astype(np.int8)
    return trits, scales


def dequantize(trits: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``T * gamma`` as float32 ``[N, K]`` (the weight PyTorch's BitLinear multiplies by)."""
    g = trits.shape[1] // scales.shape[1]
    return trits.astype(np.float32) * np.repeat(scales.astype(np.float32), g, axis=1)


def packed_row_bytes(k: int, packing: str) -> int:
    per = TRITS_PER_BYTE[_check_packing(packing)]
    return -(-k // per)


def _check_packing(packing: str) -> str:
    if packing not in TRITS_PER_BYTE:
        raise ValueError(f"unknown packing {packing!r}; use one of {', '.join(PACKINGS)}")
    return packing


def _codes(trits: np.ndarray, per: int) -> np.ndarray:
    t = np.asarray(trits)
    if t.ndim != 2:
        raise ValueError(f"expected trits of shape [N, K], got {t.shape}")
    if t.size and (t.min() < -1 or t.max() > 1):
        raise ValueError("trits must be in {-1, 0, +1}")
    n, k = t.shape
    pad = (-k) % per
    codes = (t.astype(np.int16) + 1).astype(np.uint8)
    if pad:
        codes = np.concatenate([codes, np.ones((n, pad), np.uint8)], axis=1)  # pad trit 0 -> code 1
    return codes.reshape(n, -1, per)


def pack(trits: np.ndarray, packing: str = "2bit") -> np.ndarray:
    """Pack trits ``[N, K]`` into uint8 ``[N, ceil(K / trits_per_byte)]``."""
    per = TRITS_PER_BYTE[_check_packing(packing)]
    codes = _codes(trits, per).astype(np.uint16)
    if packing == "2bit":
        weights = np.array([1, 4, 16, 64], np.uint16)
    else:
        weights = np.array([1, 3, 9, 27, 81], np.uint16)
    return (codes * weights).sum(axis=2).astype(np.uint8)


# Decode tables: byte -> its trits. Built once; invalid bytes are flagged by ``_VALID``.
_TABLES: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _table(packing: str) -> tuple[np.ndarray, np.ndarray]:
    if packing not in _TABLES:
        b = np.arange(256, dtype=np.int32)
        if packing == "2bit":
            codes = np.stack([(b >> (2 * i)) & 3 for i in range(4)], axis=1)
            valid = (codes <= 2).all(axis=1)
        else:
            codes = np.stack([(b // 3**i) % 3 for i in range(5)], axis=1)
            valid = b < 243
        _TABLES[packing] = ((codes - 1).astype(np.int8), valid)
    return _TABLES[packing]


def unpack(packed: np.ndarray, k: int, packing: str = "2bit") -> np.ndarray:
    """Inverse of :func:`pack`: uint8 ``[N, B]`` -> int8 trits ``[N, K]``; rejects invalid codes."""
    _check_packing(packing)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise InvalidPackedWeights(f"packed weights must be uint8 [N, B], got {packed.dtype} {packed.shape}")
    if packed.shape[1] != packed_row_bytes(k, packing):
        raise InvalidPackedWeights(
            f"packed row has {packed.shape[1]} bytes, expected {packed_row_bytes(k, packing)} for K={k} ({packing})"
        )
    table, valid = _table(packing)
    if not valid[packed].all():
        raise InvalidPackedWeights(f"packed weights hold bytes that are not valid {packing} trit codes")
    return table[packed].reshape(packed.shape[0], -1)[:, :k]


def bits_per_weight(packing: str) -> float:
    return 8.0 / TRITS_PER_BYTE[_check_packing(packing)]


def quantize_activations_int8(x: np.ndarray) -> np.ndarray:
    """Per-token absmax 8-bit fake quantisation (what BitLinear applies to its input)."""
    x = x.astype(np.float32)
    scale = 127.0 / np.maximum(np.abs(x).max(axis=-1, keepdims=True), EPS)
    return np.clip(np.rint(x * scale), -128, 127) / scale
