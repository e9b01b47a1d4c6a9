"""Per-layer weight statistics of the quantised linears, from the latent (full-precision) weights.

For every ``BitLinear`` (in module order): where it sits (decoder layer index, module type), its
precision, the ternary scale gamma (mean, and min/max over rows or groups for per-channel/group
scales), the fractions of -1/0/+1 trits, and the relative quantisation error
``||W - Q(W)||_F / ||W||_F``. Trits and ``rel_error_ternary`` are what ternarisation gives
(hypothetical for kept layers); ``rel_error`` is for the quantiser the layer actually uses.
"""

from __future__ import annotations

import re

import torch

from ternarylm.quantization import TERNARY_BITS, int_weight, ternary_linears, ternary_weight

# Column order of the heatmaps and of ties in the ranking: attention, then MLP, as in a block.
MODULE_TYPES = ("q", "k", "v", "o", "gate", "up", "down")
_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_position(name: str) -> tuple[int | None, str]:
    """``model.layers.3.mlp.down_proj`` -> ``(3, "down")``; ``(None, leaf)`` outside decoder layers."""
    match = _LAYER_INDEX.search(name)
    leaf = name.rsplit(".", 1)[-1]
    return (int(match.group(1)) if match else None), (leaf.removesuffix("_proj"))


def relative_error(w: torch.Tensor, q: torch.Tensor) -> float:
    """``||w - q||_F / ||w||_F`` (0 for an all-zero ``w``)."""
    norm = float(torch.linalg.vector_norm(w))
    return float(torch.linalg.vector_norm(w - q)) / norm if norm else 0.0


@torch.no_grad()
def layer_stats(model) -> list[dict]:
    """One dict per quantised linear of ``model`` (see the module docstring and docs/ANALYSIS.md)."""
    rows = []
    for name, module in ternary_linears(model):
        w = module.weight.detach().float().cpu()
        quant = module.quant
        trits, scales = ternary_weight(w, quant.granularity, quant.group_size)
        q_ternary = trits.float() * scales.repeat_interleave(w.shape[1] // scales.shape[1], dim=1)
        bits = int(module.weight_bits)
        if bits == TERNARY_BITS:
            error = None  # same as the ternary error, filled below
        elif bits == 16:
            error = 0.0
        else:
            codes, int_scales = int_weight(w, bits)
            error = relative_error(w, codes.float() * int_scales.repeat_interleave(
                w.shape[1] // int_scales.shape[1], dim=1))
        error_ternary = relative_error(w, q_ternary)
        n = trits.numel()
        counts = {t: int((trits == t).sum()) for t in (-1, 0, 1)}
        layer, module_type = layer_position(name)
        rows.append({
            "name": name,
            "layer": layer,
            "module": module_type,
            "shape": [int(w.shape[0]), int(w.shape[1])],
            "parameters": int(n),
            "weight_bits": bits,
            "granularity": quant.granularity if quant.granularity != "group" else f"group/{quant.group_size}",
            "gamma": {"mean": float(scales.mean()), "min": float(scales.min()), "max": float(scales.max())},
            "trits": {"-1": counts[-1] / n, "0": counts[0] / n, "+1": counts[1] / n},
            "zero_fraction": counts[0] / n,
            "rel_error": error_ternary if error is None else error,
            "rel_error_ternary": error_ternary,
        })
    return rows
