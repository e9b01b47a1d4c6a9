"""Weights of an export folder as NumPy objects, read from ``model.onnx`` via config.json's weight map.

Nothing here interprets the graph: each logical weight (docs/FORMATS.md, "config.json") names the ONNX
initializers that hold it, and its ``kind`` says how to decode them:

    ternary    packed trits (``2bit`` / ``base3``) + scales  -> Int8Linear (trits, scales), unpacked once
    int        kept 4/8-bit codes ``[N, K]`` + block scales -> Int8Linear (codes, block scales)
    nbits      MatMulNBits codes + scales + zero points      -> Int8Linear (codes - zp, block scales)
    dense      float ``[K, N]`` or ``[N, K]``               -> DenseLinear (float32 ``[K, N]``)
    concat     a fused linear whose parts differ in precision -> ConcatLinear (each part's entry)
    embedding  float table, or int8/int4 codes + block scales -> Embedding (rows dequantised on gather)
    norm       RMSNorm gain ``[D]``                          -> float32 array

The ternary bit layouts are decoded by ``ternarylm.format.trits.unpack``, MatMulNBits' layout and the
int4 embedding's nibbles by ``ternarylm.format.codecs`` (the one definition of each, shared with the
exporter), and which entries hold trits is ``ternarylm.format.entries.is_ternary_entry``.

The matmul kernel (``Int8Linear``)
----------------------------------
Weights stay int8 (trits, or int8/int4 LM-head codes) plus float32 scales: no fp32 copy of them
is kept. A call converts ``BLOCK_ELEMS`` weights at a time (a few hundred rows) into a reusable
float32 buffer that stays in L2 cache, and hands that block to float32 BLAS (``np.matmul``). Per-row
scales are applied to the output; with group/block scales the block is multiplied group by group
(a batched matmul giving per-group partial sums, then scaled and summed: 5 ms for the int8 132m
LM head, against 12 ms for multiplying the scales into the block first).

Measured on the 2-core Xeon this was written on (132m shapes, one token, numpy 2.4 + OpenBLAS):
converting a whole [4096, 768] int8 matrix and then one sgemv costs 2.5 ms; the same matrix in blocks
of 128k-192k weights ~0.5 ms (the float block never leaves cache); a decoder layer's four
matmuls take 1.1-1.3 ms (best of 30). Also measured and rejected: integer ``einsum`` (1.8 ms for the one matrix:
numpy has no fast int8 GEMM), a 5-trit lookup-table kernel (0.8 ms with int64 indices, 1.2 ms with
int32, and its index array takes more memory than the int8 trits), ``np.dot`` instead of
``np.matmul`` (same), splitting rows over two Python threads (no consistent gain).
"""

from __future__ import annotations

import threading

import numpy as np
import onnx
from onnx import numpy_helper

from ternarylm.format.codecs import from_matmul_nbits, nbits_codes, unpack_codes
from ternarylm.format.entries import CONCAT, DENSE, INT, NBITS, TERNARY, is_ternary_entry
from ternarylm.format.trits import InvalidPackedWeights, quantize_activations_int8, unpack

BLOCK_ELEMS = 3 << 16  # weights converted per BLAS call: 768 KiB of float32, stays in L2
_workspace = threading.local()


def _buffer(n: int) -> np.ndarray:
    """A per-thread float32 scratch buffer of at least ``n`` elements (reused across calls)."""
    buf = getattr(_workspace, "buf", None)
    if buf is None or buf.size < n:
        buf = _workspace.buf = np.empty(max(n, BLOCK_ELEMS), np.float32)
    return buf


class Int8Linear:
    """``y = x @ (codes * scales).T``: int8 codes ``[N, K]``, float32 scales ``[N, K // group]``.

    ``act_bits=8`` fake-quantises ``x`` per row to int8 first (absmax), exactly as BitLinear does.
    """

    def __init__(self, codes: np.ndarray, scales: np.ndarray, act_bits: int = 0):
        self.codes = np.ascontiguousarray(codes, dtype=np.int8)
        n, k = self.codes.shape
        scales = np.asarray(scales, np.float32).reshape(n, -1)
        if k % scales.shape[1]:
            raise ValueError(f"{scales.shape[1]} scale groups do not divide K={k}")
        if scales.shape[1] > 1 and (scales == scales[:, :1]).all():
            scales = scales[:, :1]  # per-row (or per-tensor) scales repeated per block: apply once
        self.scales = np.ascontiguousarray(scales)
        self.act_bits = act_bits
        self.rows = max(1, min(n, BLOCK_ELEMS // k))
        self.shape = (n, k)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n, k = self.shape
        lead = x.shape[:-1]
        x2 = np.ascontiguousarray(x, np.float32).reshape(-1, k)  # (M, K)
        if self.act_bits == 8:
            x2 = quantize_activations_int8(x2)
        groups = self.scales.shape[1]
        out = np.empty((x2.shape[0], n), np.float32)  # (M, N)
        buf = _buffer(self.rows * k)
        if groups > 1:  # (G, K/G, M): each scale group's slice of x
            xg = np.ascontiguousarray(x2.reshape(-1, groups, k // groups).transpose(1, 2, 0))
        for i in range(0, n, self.rows):
            j = min(n, i + self.rows)
            block = buf[: (j - i) * k].reshape(j - i, k)
            np.copyto(block, self.codes[i:j], casting="unsafe")  # int8 -> float32, in cache
            if groups == 1:
                np.matmul(x2, block.T, out=out[:, i:j])
            else:  # per-group dot products (G, rows, M), then scaled and summed over groups
                part = np.matmul(block.reshape(j - i, groups, -1).transpose(1, 0, 2), xg)
                out[:, i:j] = np.einsum("grm,rg->mr", part, self.scales[i:j])
        if groups == 1:
            out *= self.scales[:, 0]
        return out.reshape(*lead, n)


class DenseLinear:
    """``y = x @ W`` with a float32 ``[K, N]`` weight (dense twins and float LM heads)."""

    def __init__(self, weight_kn: np.ndarray):
        self.weight = np.ascontiguousarray(weight_kn, np.float32)
        self.shape = self.weight.shape[::-1]
        self.act_bits = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.matmul(np.asarray(x, np.float32), self.weight)


class ConcatLinear:
    """A fused linear stored as parts of different precision: outputs concatenated in row order."""

    def __init__(self, parts: list):
        self.parts = parts
        self.shape = (sum(p.shape[0] for p in parts), parts[0].shape[1])
        self.act_bits = max(p.act_bits for p in parts)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([p(x) for p in self.parts], axis=-1)


class Embedding:
    """Token embedding: a float table ``[V, D]``, or int8 codes ``[V, D]`` (int4: two codes per byte,
    low nibble first, stored as ``q + 8``) with block scales ``[V, D // block]``."""

    def __init__(self, table=None, codes=None, scales=None, bits: int = 8, block_size: int = 0):
        self.table, self.codes, self.scales = table, codes, scales
        self.bits, self.block_size = bits, block_size

    def __call__(self, ids: np.ndarray) -> np.ndarray:  # (B, T) -> (B, T, D)
        if self.table is not None:
            return self.table[ids]
        q = self.codes[ids]
        if self.bits == 4:  # (B, T, D/2) uint8 -> (B, T, D) int8
            q = unpack_codes(q, 4).astype(np.int8) - 8
        rows = q.astype(np.float32)
        d = rows.shape[-1]
        blocks = rows.reshape(*rows.shape[:-1], d // self.block_size, self.block_size)
        return (blocks * self.scales[ids][..., None]).reshape(rows.shape)


class Initializers:
    """Name -> ndarray over a ModelProto's initializers; each tensor's bytes are dropped once read."""

    def __init__(self, model: onnx.ModelProto):
        self.tensors = {t.name: t for t in model.graph.initializer}

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise ValueError(f"model.onnx has no initializer {name!r} that config.json's weight map names; "
                             "re-export the model")
        tensor = self.tensors[name]
        array = numpy_helper.to_array(tensor)
        tensor.ClearField("raw_data")  # free the protobuf copy early (peak memory at load)
        return array


def int8_codes(name: str, entry: dict, inits: Initializers):
    """``(codes int8 [N, K], scales float32 [N, groups])`` of a ``ternary``, ``int`` or ``nbits``
    entry; raises ``InvalidPackedWeights`` when a ternary layer's codes are not trits."""
    if entry["kind"] == INT:
        codes = inits.get(entry["weight"]).astype(np.int8)  # INT4 initializers read as ml_dtypes.int4
        if entry.get("layout", "NK") != "NK":
            codes = codes.T
        return np.ascontiguousarray(codes), inits.get(entry["scales"]).reshape(int(entry["N"]), -1)
    if entry["kind"] == TERNARY:
        try:
            trits = unpack(inits.get(entry["packed"]), int(entry["K"]), entry["packing"])
        except InvalidPackedWeights as e:
            raise InvalidPackedWeights(f"{name}: {e}; the model file is corrupt, re-export it") from None
        return trits, inits.get(entry["scales"])
    n, k, bits, bs = int(entry["N"]), int(entry["K"]), int(entry["bits"]), int(entry["block_size"])
    zp = inits.get(entry["zero_points"]) if entry.get("zero_points") else None
    codes, scales = from_matmul_nbits(inits.get(entry["B"]), inits.get(entry["scales"]), n, k, bits, bs, zp)
    if is_ternary_entry(name, entry) and (codes.min() < -1 or codes.max() > 1):
        raise _not_trits(name)
    if codes.min() < -128 or codes.max() > 127:
        raise ValueError(f"{name}: MatMulNBits codes do not fit int8; this runtime reads bits <= 8")
    return codes.astype(np.int8), scales


def linear_from_entry(name: str, entry: dict, inits: Initializers, weight_map: dict | None = None):
    """One linear of the weight map as an ``Int8Linear``, ``DenseLinear`` or ``ConcatLinear``
    (``concat`` entries name their parts, looked up in ``weight_map``)."""
    kind = entry["kind"]
    if kind == CONCAT:
        missing = [p for p in entry["parts"] if p not in (weight_map or {})]
        if missing:
            raise ValueError(f"{name}: config.json's weight map has no part {missing[0]!r}; re-export the model")
        return ConcatLinear([linear_from_entry(p, weight_map[p], inits, weight_map) for p in entry["parts"]])
    if kind in (TERNARY, NBITS, INT):
        return Int8Linear(*int8_codes(name, entry, inits), act_bits=int(entry.get("act_bits") or 0))
    if kind == DENSE:
        w = inits.get(entry["weight"]).astype(np.float32, copy=False)
        return DenseLinear(w if entry.get("layout", "KN") == "KN" else w.T)
    raise ValueError(f"{name}: weight kind {kind!r} is not a linear this runtime knows; upgrade ternarylm")


def _not_trits(name: str) -> InvalidPackedWeights:
    return InvalidPackedWeights(f"{name}: MatMulNBits codes are not valid trits; the model file is corrupt, "
                                "re-export it")


def _nbits_trits_valid(raw: np.ndarray, zero_points, n: int, blocks: int, bits: int) -> bool | None:
    """Whether every code minus its zero point is a trit, by a 256-entry byte table (no decoding);
    None when the zero points differ between blocks (the caller then decodes)."""
    zp = 2 ** (bits - 1)
    if zero_points is not None:
        zps = unpack_codes(np.asarray(zero_points).reshape(n, -1), bits)[:, :blocks]  # (N, blocks)
        if not (zps == zps.flat[0]).all():
            return None
        zp = int(zps.flat[0])
    fields = unpack_codes(np.arange(256, dtype=np.uint8)[:, None], bits).astype(np.int16)  # byte -> its codes
    valid = (np.abs(fields - zp) <= 1).all(axis=1)  # byte -> every code in it is a trit
    return bool(valid[raw].all())


def check_packed(model: onnx.ModelProto, weight_map: dict):
    """Check every ternary decoder weight: ``InvalidPackedWeights`` on codes that are not trits.
    MatMulNBits bytes are checked by table; ternary packings are unpacked (and dropped)."""
    inits = Initializers(model)
    for name, entry in weight_map.items():
        if not is_ternary_entry(name, entry):
            continue
        if entry["kind"] == TERNARY:
            int8_codes(name, entry, inits)
            continue
        n, k, bits, bs = int(entry["N"]), int(entry["K"]), int(entry["bits"]), int(entry["block_size"])
        raw = inits.get(entry["B"])
        zp = inits.get(entry["zero_points"]) if entry.get("zero_points") else None
        ok = _nbits_trits_valid(raw, zp, n, -(-k // bs), bits)
        if ok is None:
            codes = nbits_codes(raw, zp, n, k, bits, bs)
            ok = codes.min() >= -1 and codes.max() <= 1
        if not ok:
            raise _not_trits(name)


def embedding_from_entry(entry: dict, inits: Initializers) -> Embedding:
    if entry.get("quant"):
        bits = int(entry.get("bits", 8))
        codes = inits.get(entry["quant"])
        codes = codes.astype(np.uint8) if bits == 4 else codes.astype(np.int8)
        return Embedding(codes=codes, scales=inits.get(entry["scales"]).astype(np.float32, copy=False), bits=bits,
                         block_size=int(entry["block_size"]))
    return Embedding(table=inits.get(entry["weight"]).astype(np.float32, copy=False))
