"""From a checkpoint's latent weights to the export's logical weights (NumPy), fused where it pays.

q/k/v become one ``qkv_proj`` (rows q, k, v) and gate/up one ``gate_up_proj`` (rows gate, up): one
matmul instead of three or two per token. Each fused row keeps its own scale, so fusing is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TernaryWeight:
    trits: np.ndarray  # int8 [N, K]
    scales: np.ndarray  # float32 [N, K / group_size]

    @property
    def shape(self):
        return self.trits.shape

    def dequantized(self) -> np.ndarray:
        from ternarylm.ternary import dequantize

        return dequantize(self.trits, self.scales)


@dataclass
class ExportWeights:
    """Logical weights in torch layout ([N, K] for linears). ``linears`` values are TernaryWeight
    (ternary checkpoints) or float32 arrays (full-precision checkpoints)."""

    embed: np.ndarray
    final_norm: np.ndarray
    lm_head: np.ndarray  # [V, D]
    norms: dict = field(default_factory=dict)  # logical name -> [D]
    linears: dict = field(default_factory=dict)  # logical name -> TernaryWeight | ndarray
    ternary: bool = True


def _fuse(parts):
    if isinstance(parts[0], TernaryWeight):
        return TernaryWeight(np.concatenate([p.trits for p in parts]), np.concatenate([p.scales for p in parts]))
    return np.concatenate(parts)


def extract_weights(state: dict, config) -> ExportWeights:
    """``state``: the checkpoint's model state dict (torch tensors); ``config``: TernaryLMConfig."""
    import torch

    from ternarylm.quantization import ternary_weight

    quant = config.ternary_config()
    ternary = config.precision == "ternary"

    def f32(name):
        return state[name].detach().to(torch.float32).cpu().numpy()

    def linear(name):
        w = state[name].detach().to(torch.float32).cpu()
        if not ternary:
            return w.numpy()
        trits, scales = ternary_weight(w, quant.granularity, quant.group_size)
        return TernaryWeight(trits.numpy().astype(np.int8), scales.float().contiguous().numpy())

    out = ExportWeights(embed=f32("model.embed_tokens.weight"), final_norm=f32("model.norm.weight"),
                        lm_head=f32("lm_head.weight"), ternary=ternary)
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}"
        out.norms[f"{p}.input_layernorm"] = f32(f"{p}.input_layernorm.weight")
        out.norms[f"{p}.post_attention_layernorm"] = f32(f"{p}.post_attention_layernorm.weight")
        out.linears[f"{p}.self_attn.qkv_proj"] = _fuse([linear(f"{p}.self_attn.{x}_proj.weight") for x in "qkv"])
        out.linears[f"{p}.self_attn.o_proj"] = linear(f"{p}.self_attn.o_proj.weight")
        out.linears[f"{p}.mlp.gate_up_proj"] = _fuse([linear(f"{p}.mlp.{x}_proj.weight") for x in ("gate", "up")])
        out.linears[f"{p}.mlp.down_proj"] = linear(f"{p}.mlp.down_proj.weight")
    return out


def rope_tables(head_dim: int, theta: float, max_positions: int):
    """cos/sin ``[max_positions, head_dim / 2]`` float32, computed as the PyTorch model does."""
    from ternarylm.modeling import rope_inverse_frequencies

    inv_freq = rope_inverse_frequencies(head_dim, theta).numpy()
    freqs = np.arange(max_positions, dtype=np.float32)[:, None] * inv_freq[None, :]
    return np.cos(freqs).astype(np.float32), np.sin(freqs).astype(np.float32)
