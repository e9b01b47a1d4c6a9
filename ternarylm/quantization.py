"""Ternary quantization-aware training: ``BitLinear`` and a torchao-style ``quantize_(model, config)``.

``BitLinear`` keeps latent full-precision weights. Its forward multiplies by the ternarised weight
``clamp(round(W / gamma), -1, 1) * gamma`` (gamma = absmean, recomputed every step) and, optionally,
by 8-bit per-token absmax fake-quantised activations. Both use the straight-through estimator: the
forward sees quantised values, the backward passes gradients as if quantisation were the identity.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ternarylm.ternary import EPS, scale_group_size

GRANULARITIES = ("tensor", "channel", "group")


@dataclass
class TernaryConfig:
    """How linears are ternarised. Round-trips through ``to_dict``/``from_dict`` (stored in ckpt.pt).

    granularity: ``tensor`` (one absmean scale per layer, the paper's choice), ``channel`` (one per
        output row) or ``group`` (one per ``group_size`` input columns; maps 1:1 onto ONNX Runtime's
        MatMulNBits blocks).
    group_size: 32, 64 or 128 when granularity is ``group``.
    activation_bits: 8 fake-quantises activations per token (absmax); 0 keeps them full precision.
    include / exclude: fnmatch patterns over module names; a linear is swapped when it matches an
        include pattern and no exclude pattern. Embeddings are never linears; the LM head is excluded.
    """

    granularity: str = "tensor"
    group_size: int | None = None
    activation_bits: int = 8
    include: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=lambda: ["lm_head", "*.lm_head", "score", "*classifier*"])
    version: int = 1

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.granularity == "group" and self.group_size not in (32, 64, 128):
            raise ValueError(f"group_size must be 32, 64 or 128 for granularity 'group', got {self.group_size}")
        if self.activation_bits not in (0, 8):
            raise ValueError(f"activation_bits must be 8 or 0 (off), got {self.activation_bits}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TernaryConfig":
        d = dict(d)
        d.pop("version", None)
        return cls(**d)

    def selects(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, p) for p in self.include) and not any(
            fnmatch.fnmatch(name, p) for p in self.exclude
        )


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: value of ``q``, gradient of ``x``."""
    return x + (q - x).detach()


def weight_scales(w: torch.Tensor, granularity: str, group_size: int | None) -> torch.Tensor:
    """Absmean scales as ``[N, K // G]`` (see ternarylm.ternary for the layout)."""
    n, k = w.shape
    g = scale_group_size(granularity, k, group_size)
    a = w.detach().abs().float()
    if granularity == "tensor":
        return a.mean().clamp(min=EPS).expand(n, 1)
    return a.reshape(n, k // g, g).mean(dim=2).clamp(min=EPS)


def ternary_weight(w: torch.Tensor, granularity: str = "tensor", group_size: int | None = None):
    """Return ``(trits, scales)``: int8 ``[N, K]`` and float ``[N, K // G]``."""
    scales = weight_scales(w, granularity, group_size)
    g = w.shape[1] // scales.shape[1]
    expanded = scales.repeat_interleave(g, dim=1)
    trits = (w.detach().float() / expanded).round().clamp(-1, 1).to(torch.int8)
    return trits, scales


def fake_quant_weight(w: torch.Tensor, granularity: str, group_size: int | None) -> torch.Tensor:
    scales = weight_scales(w, granularity, group_size)
    g = w.shape[1] // scales.shape[1]
    expanded = scales.repeat_interleave(g, dim=1).to(w.dtype)
    q = (w / expanded).round().clamp(-1, 1) * expanded
    return _ste(w, q)


def fake_quant_activations(x: torch.Tensor) -> torch.Tensor:
    scale = 127.0 / x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=EPS)
    q = (x * scale).round().clamp(-128, 127) / scale
    return _ste(x, q)


class BitLinear(nn.Linear):
    """Drop-in ``nn.Linear`` whose forward uses ternary weights (and 8-bit activations)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 quant: TernaryConfig | None = None, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.quant = quant or TernaryConfig()
        scale_group_size(self.quant.granularity, in_features, self.quant.group_size)  # validate early

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = fake_quant_weight(self.weight, self.quant.granularity, self.quant.group_size)
        if self.quant.activation_bits:
            x = fake_quant_activations(x)
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, ternary={self.quant.granularity}"
                f"{'/' + str(self.quant.group_size) if self.quant.granularity == 'group' else ''}, "
                f"act_bits={self.quant.activation_bits}")


def quantize_(model: nn.Module, config: TernaryConfig | None = None, filter_fn=None) -> nn.Module:
    """Swap every selected ``nn.Linear`` in ``model`` for a ``BitLinear`` in place (torchao style).

    ``filter_fn(module, fqn) -> bool`` overrides the config's include/exclude patterns when given.
    Weights and biases are kept (they become the latent weights). Returns ``model`` for chaining.
    """
    config = config or TernaryConfig()
    select = filter_fn or (lambda m, name: config.selects(name))
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            fqn = f"{name}.{child_name}" if name else child_name
            if type(child) is nn.Linear and select(child, fqn):
                new = BitLinear(child.in_features, child.out_features, bias=child.bias is not None,
                                quant=config, device=child.weight.device, dtype=child.weight.dtype)
                new.load_state_dict(child.state_dict())
                setattr(module, child_name, new)
    return model


def ternary_linears(model: nn.Module):
    """Yield ``(name, BitLinear)`` pairs in module order."""
    for name, m in model.named_modules():
        if isinstance(m, BitLinear):
            yield name, m
