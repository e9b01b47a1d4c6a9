"""From a checkpoint's latent weights to the export's logical weights (NumPy), fused where it pays.

q/k/v become one ``qkv_proj`` (rows q, k, v) and gate/up one ``gate_up_proj`` (rows gate, up): one
matmul instead of three or two per token. Each fused row keeps its own scale, so fusing is exact.

Mixed precision (``TernaryConfig.keep_precision``): each linear gets its own kind, ternary
(``TernaryWeight``), 4/8-bit integers (``IntWeight``) or full precision (float32 ``ndarray``). Parts
of a fused group are fused only while neighbours share kind and bits; a group that mixes kinds
becomes ``LinearParts`` (runs of equal parts, concatenated on the output axis by the graph): exact,
and it costs an extra matmul only where the plan mixes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np

from ternarylm.format.codecs import symmetric_block_quantize
from ternarylm.format.entries import TERNARY_BITS
from ternarylm.format.trits import dequantize

FULL_BITS = 16


@dataclass
class TernaryWeight:
    trits: np.ndarray  # int8 [N, K]
    scales: np.ndarray  # float32 [N, K / group_size]

    bits = TERNARY_BITS

    @property
    def shape(self):
        return self.trits.shape

    def dequantized(self) -> np.ndarray:
        return dequantize(self.trits, self.scales)


@dataclass
class IntWeight:
    """A layer kept at 4 or 8 bits: symmetric codes and one scale per ``block_size`` input columns,
    exactly the ``codes * scales`` training's forward multiplies by."""

    codes: np.ndarray  # int8 [N, K], |code| <= 2**(bits-1) - 1
    scales: np.ndarray  # float32 [N, K / block_size]
    bits: int

    @property
    def shape(self):
        return self.codes.shape

    @property
    def block_size(self) -> int:
        return self.codes.shape[1] // self.scales.shape[1]

    def dequantized(self) -> np.ndarray:
        """``codes * scales`` in float32: one array the size of the weight, scaled in place block by block (no
        repeated-scale temporary beside a large vocabulary's table)."""
        n, k = self.codes.shape
        out = self.codes.astype(np.float32)
        blocks = out.reshape(n, k // self.block_size, self.block_size)  # a view: the product lands in ``out``
        blocks *= self.scales.astype(np.float32)[..., None]
        return out


@dataclass
class LinearParts:
    """A fused logical linear whose parts differ in precision: ``[(name, weight), ...]`` in row order."""

    parts: list

    @property
    def shape(self):
        return sum(w.shape[0] for _, w in self.parts), self.parts[0][1].shape[1]


@dataclass
class ExportWeights:
    """Logical weights in torch layout ([N, K] for linears). ``linears`` values are TernaryWeight,
    IntWeight, float32 arrays (full-precision layers and checkpoints) or LinearParts.
    ``bits`` is the precision plan: full module name -> 2 (ternary), 4, 8 or 16."""

    embed: np.ndarray
    final_norm: np.ndarray
    lm_head: np.ndarray | IntWeight  # [V, D]; an IntWeight when block-quantised (head_int_weight)
    norms: dict = field(default_factory=dict)  # logical name -> [D]
    linears: dict = field(default_factory=dict)  # logical name -> TernaryWeight | IntWeight | ndarray | LinearParts
    ternary: bool = True
    bits: dict = field(default_factory=dict)

    def kept(self) -> dict:
        """The layers that are not ternary: ``{module name: bits}`` (the effective keep_precision)."""
        return {name: b for name, b in sorted(self.bits.items()) if b != TERNARY_BITS}


def head_int_weight(w_nk: np.ndarray, bits: int, block_size: int) -> IntWeight:
    """The float LM head as block-quantised int8/int4 codes for the emitter, which writes it with
    standard ops (DequantizeLinear -> Transpose -> MatMul: the portable target, onnx.reference); the
    same codes ``ternarylm.format.lowering.quantize_head`` gives MatMulNBits on fused targets."""
    if bits not in (4, 8):
        raise ValueError(f"LM head bits must be 4 or 8, got {bits}")
    if w_nk.shape[1] % block_size:
        raise ValueError(f"block size {block_size} does not divide hidden size {w_nk.shape[1]}")
    codes, scales = symmetric_block_quantize(w_nk, bits, block_size)
    return IntWeight((codes.astype(np.int16) - 2 ** (bits - 1)).astype(np.int8), scales, bits)


def weight_bits_of(w) -> int:
    return FULL_BITS if isinstance(w, np.ndarray) else w.bits


def _same_kind(a, b) -> bool:
    return type(a) is type(b) and weight_bits_of(a) == weight_bits_of(b)


def _fuse(parts):
    if isinstance(parts[0], TernaryWeight):
        return TernaryWeight(np.concatenate([p.trits for p in parts]), np.concatenate([p.scales for p in parts]))
    if isinstance(parts[0], IntWeight):
        return IntWeight(np.concatenate([p.codes for p in parts]), np.concatenate([p.scales for p in parts]),
                         parts[0].bits)
    return np.concatenate(parts)


def fuse_group(prefix: str, named: list[tuple[str, object]]):
    """Fuse ``[(short name, weight), ...]`` (e.g. q, k, v) into one weight when all share kind and
    bits; otherwise ``LinearParts`` of runs of equal neighbours, named ``{prefix}.{shorts}_proj``."""
    runs: list[list[tuple[str, object]]] = []
    for short, w in named:
        if runs and _same_kind(runs[-1][-1][1], w):
            runs[-1].append((short, w))
        else:
            runs.append([(short, w)])
    if len(runs) == 1:
        return _fuse([w for _, w in named])
    return LinearParts([(f"{prefix}.{''.join(s for s, _ in run)}_proj", _fuse([w for _, w in run]))
                        for run in runs])


def precision_plan(config, override: dict | None = None):
    """``bits(module name)``: the export-time ``override`` patterns win for the layers they match,
    the checkpoint's keep_precision applies elsewhere; a linear training never quantised is 16."""
    from ternarylm.quantization import TernaryConfig

    quant = config.ternary_config()
    extra = TernaryConfig(keep_precision=dict(override or {}))

    def bits(name: str) -> int:
        if config.precision != "ternary" or not quant.selects(name):
            return FULL_BITS
        if any(fnmatch.fnmatch(name, p) for p in extra.keep_precision):
            return extra.weight_bits(name)
        return quant.weight_bits(name)

    return bits


def _check_override(config, override: dict | None):
    if override and config.precision != "ternary":
        raise ValueError("--keep-precision needs a ternary checkpoint; this one is full precision (precision=fp)")
    from ternarylm.quantization import check_keep_patterns

    check_keep_patterns(override, config.linear_names())


def extract_weights(state: dict, config, keep_precision: dict | None = None,
                    trit_scales: dict | None = None) -> ExportWeights:
    """``state``: the checkpoint's model state dict (torch tensors); ``config``: TernaryLMConfig;
    ``keep_precision``: export-time ``{pattern: bits}`` applied on top of the checkpoint's plan;
    ``trit_scales``: ``{module: gamma}`` of linears whose weight is stored as int8 trits (a Hugging Face
    ternary folder, ``ternarylm.checkpoint.latent_weights``): taken as they are when they stay ternary, else
    made latent (``latent_from_trits``) for the precision the plan gives them."""
    import torch

    from ternarylm.quantization import KEPT_BLOCK, int_weight, ternary_weight

    _check_override(config, keep_precision)
    quant = config.ternary_config()
    bits_of = precision_plan(config, keep_precision)
    out = ExportWeights(embed=None, final_norm=None, lm_head=None, ternary=config.precision == "ternary")

    def f32(name):
        return state[name].detach().to(torch.float32).cpu().numpy()

    def linear(module):
        bits = out.bits[module] = bits_of(module)
        if module in (trit_scales or {}):
            trits = state[f"{module}.weight"].detach().cpu().numpy().astype(np.int8, copy=False)
            if bits == TERNARY_BITS:
                return TernaryWeight(trits, np.full((trits.shape[0], 1), trit_scales[module], np.float32))
            from ternarylm.checkpoint import latent_from_trits  # an export-time override: from the latent weight

            w = latent_from_trits(state[f"{module}.weight"], trit_scales[module])
        else:
            w = state[f"{module}.weight"].detach().to(torch.float32).cpu()
        if bits == FULL_BITS:
            return w.numpy()
        if bits == TERNARY_BITS:
            trits, scales = ternary_weight(w, quant.granularity, quant.group_size)
            return TernaryWeight(trits.numpy().astype(np.int8), scales.float().contiguous().numpy())
        if w.shape[1] % KEPT_BLOCK:
            raise ValueError(f"{module} has {w.shape[1]} inputs, not a multiple of {KEPT_BLOCK}; keep it at 16 "
                             f"(full precision) instead of {bits} bits")
        codes, scales = int_weight(w, bits)
        return IntWeight(codes.numpy().astype(np.int8), scales.float().contiguous().numpy(), bits)

    out.embed, out.final_norm = f32("model.embed_tokens.weight"), f32("model.norm.weight")
    out.lm_head = f32("lm_head.weight")
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}"
        out.norms[f"{p}.input_layernorm"] = f32(f"{p}.input_layernorm.weight")
        out.norms[f"{p}.post_attention_layernorm"] = f32(f"{p}.post_attention_layernorm.weight")
        a, m = f"{p}.self_attn", f"{p}.mlp"
        if config.sub_norms:  # BitNet's RMSNorms before o_proj and down_proj
            out.norms[f"{a}.attn_sub_norm"] = f32(f"{a}.attn_sub_norm.weight")
            out.norms[f"{m}.ffn_sub_norm"] = f32(f"{m}.ffn_sub_norm.weight")
        out.linears[f"{a}.qkv_proj"] = fuse_group(a, [(x, linear(f"{a}.{x}_proj")) for x in "qkv"])
        out.linears[f"{a}.o_proj"] = linear(f"{a}.o_proj")
        out.linears[f"{m}.gate_up_proj"] = fuse_group(m, [(x, linear(f"{m}.{x}_proj")) for x in ("gate", "up")])
        out.linears[f"{m}.down_proj"] = linear(f"{m}.down_proj")
    return out


def rope_tables(head_dim: int, theta: float, max_positions: int):
    """cos/sin ``[max_positions, head_dim / 2]`` float32, computed as the PyTorch model does."""
    from ternarylm.modeling import rope_inverse_frequencies

    inv_freq = rope_inverse_frequencies(head_dim, theta).numpy()
    freqs = np.arange(max_positions, dtype=np.float32)[:, None] * inv_freq[None, :]
    return np.cos(freqs).astype(np.float32), np.sin(freqs).astype(np.float32)
