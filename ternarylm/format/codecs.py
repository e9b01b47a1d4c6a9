"""Integer codecs of the export folder other than the trit packings (``trits.py``): each encoder next to
its decoder, so the exporter, the lowering passes and the runtimes read one definition.

Codes packed LSB-first (``pack_codes`` / ``unpack_codes``): ``8 // bits`` codes per byte along the last
axis, the first code in the lowest bits. Worked example (bits=4, the int4 embedding and MatMulNBits
bits=4): codes [3, 12] -> 3 | 12 << 4 = 0xC3; unpacked back to [3, 12]. bits=2: [2, 1, 0, 2] -> 0x86.

MatMulNBits (onnxruntime's ``com.microsoft::MatMulNBits``): ``B`` is ``[N, K / block_size, block_size *
bits / 8]`` codes packed as above, ``scales`` ``[N, K / block_size]``, optional ``zero_points`` packed
the same way per row (padded to whole bytes); without them the zero point is ``2**(bits-1)``. A weight
is ``(code - zero_point) * scale``. Ternary layers use zero point 1 at bits=2 (2**(bits-1) at 4/8), so
trits [+1, 0, -1, +1] with scale s become codes [2, 1, 0, 2] = byte 0x86; four blocks' zero points [1, 1, 1, 1] = byte 0x55.

Symmetric block quantisation (``symmetric_block_quantize``, for the int8/int4 LM head and embedding):
per row and per ``block_size`` columns, ``scale = max|w| / (2**(bits-1) - 1)`` and ``q = round(w /
scale)``; codes are stored unsigned as ``q + 2**(bits-1)``. Example (bits=8, one block [0.5, -1.0]):
scale = 1/127, q = [64, -127], codes [192, 1].
"""

from __future__ import annotations

import numpy as np


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes ``[..., L]`` (each < 2**bits, ``L`` a multiple of ``8 // bits``) -> uint8
    ``[..., L * bits / 8]``, LSB first."""
    per = 8 // bits
    codes = np.asarray(codes)
    grouped = codes.reshape(*codes.shape[:-1], -1, per).astype(np.uint8, copy=False)
    packed = grouped[..., 0].copy()  # uint8 throughout: no wider temporaries for a large table
    for i in range(1, per):
        packed |= grouped[..., i] << (bits * i)
    return packed


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: uint8 ``[..., M]`` -> uint8 codes ``[..., M * 8 / bits]``."""
    per = 8 // bits
    shifts = np.arange(per, dtype=np.uint8) * bits
    packed = np.asarray(packed)
    return ((packed[..., None] >> shifts) & ((1 << bits) - 1)).reshape(*packed.shape[:-1], -1)


def ternary_zero_point(bits: int) -> int:
    """The zero point the exporter writes for trits: 1 at bits=2, ``2**(bits-1)`` at 4/8."""
    return 1 if bits == 2 else 2 ** (bits - 1)


def to_matmul_nbits(trits: np.ndarray, scales: np.ndarray, bits: int, block_size: int):
    """Ternary weights as ONNX Runtime ``com.microsoft::MatMulNBits`` inputs (exact, no rounding).

    ``trits`` may be any signed integer codes that fit the zero point (the block-quantised LM head
    passes int4/int8 values through the same packer).
    Codes are ``t + zero_point`` with zero point 1 (bits=2) or 2**(bits-1) (bits=4/8), so dequantising
    ``(code - zp) * scale`` gives back ``t * gamma`` exactly. Returns ``(B, scales, zero_points)`` with
    shapes ``[N, K/bs, bs*bits/8]``, ``[N, K/bs]`` (float32) and packed uint8 zero points.

    MatMulNBits has one scale per block, so a block larger than the scale group ``G = K / groups`` is
    exact only when the ``bs / G`` scales inside every block are equal (a per-tensor or per-row
    checkpoint once lowered at a smaller block); otherwise it is refused (ValueError), never rounded.
    """
    n, k = trits.shape
    if k % block_size:
        raise ValueError(f"block size {block_size} does not divide K={k}")
    scales = np.asarray(scales)
    g = k // scales.shape[1]
    if g % block_size and block_size % g:
        raise ValueError(f"block size {block_size} incompatible with scale group size {g}")
    blocks = k // block_size
    if block_size > g:
        per_block = scales.reshape(n, blocks, block_size // g)
        if not (per_block == per_block[..., :1]).all():
            raise ValueError(f"block_size {block_size} is larger than the checkpoint's scale group {g} and the "
                             f"scales inside a block differ (MatMulNBits keeps one scale per block, so the model "
                             f"would change): use block size {g} or less")
    block_scales = np.repeat(scales, g, axis=1)[:, ::block_size].astype(np.float32)  # [N, blocks]
    zp = ternary_zero_point(bits)
    codes = (trits.astype(np.int16) + zp).astype(np.uint8).reshape(n, blocks, block_size)
    packed = pack_codes(codes, bits)
    per = 8 // bits
    zp_codes = np.full((n, blocks), zp, np.uint8)
    zp_pad = (-blocks) % per
    if zp_pad:
        zp_codes = np.concatenate([zp_codes, np.zeros((n, zp_pad), np.uint8)], axis=1)
    return packed, block_scales, pack_codes(zp_codes, bits).reshape(-1)


def nbits_codes(raw: np.ndarray, zero_points, n: int, k: int, bits: int, block_size: int) -> np.ndarray:
    """MatMulNBits ``B`` ``[N, K/bs, bs*bits/8]`` and packed uint8 zero points (None: the default
    ``2**(bits-1)``) -> signed int16 codes ``[N, K]`` (``code - zero_point``)."""
    codes = unpack_codes(np.asarray(raw).reshape(n, -1), bits)[:, :k].astype(np.int16)
    if zero_points is None:
        return codes - 2 ** (bits - 1)
    blocks = -(-k // block_size)
    zp = unpack_codes(np.asarray(zero_points).reshape(n, -1), bits)[:, :blocks]
    return codes - np.repeat(zp.astype(np.int16), block_size, axis=1)[:, :k]


def from_matmul_nbits(B: np.ndarray, scales: np.ndarray, N: int, K: int, bits: int, block_size: int,
                      zero_points=None):
    """Inverse of :func:`to_matmul_nbits`: ``(codes int16 [N, K] = code - zero point, scales [N, K/bs])``."""
    return nbits_codes(B, zero_points, N, K, bits, block_size), np.asarray(scales).reshape(N, -1)


QUANTIZE_ROWS = 4096  # rows quantised at a time: a 128k x 2560 table needs its temporaries only per chunk


def symmetric_block_quantize(w_nk: np.ndarray, bits: int, block_size: int):
    """Codes (unsigned, zero point 2**(bits-1)) and scales ``[N, K/bs]`` of row-blocked absmax. Works through
    the rows in chunks, so its float temporaries stay small next to a large vocabulary's table."""
    n, k = w_nk.shape
    qmax = 2 ** (bits - 1) - 1
    codes = np.empty((n, k), np.uint8)
    scales = np.empty((n, k // block_size), np.float32)
    for lo in range(0, n, QUANTIZE_ROWS):
        hi = min(lo + QUANTIZE_ROWS, n)
        blocks = np.asarray(w_nk[lo:hi], np.float32).reshape(hi - lo, k // block_size, block_size)
        s = np.maximum(np.abs(blocks).max(axis=2) / qmax, 1e-8).astype(np.float32)
        q = np.clip(np.rint(blocks / s[..., None]), -qmax - 1, qmax)
        codes[lo:hi] = (q + 2 ** (bits - 1)).astype(np.uint8).reshape(hi - lo, k)
        scales[lo:hi] = s
    return codes, scales

