"""Ternary quantization-aware training: ``BitLinear`` and a torchao-style ``quantize_(model, config)``.

``BitLinear`` keeps latent full-precision weights. Its forward multiplies by the ternarised weight
``clamp(round(W / gamma), -1, 1) * gamma`` (gamma = absmean, recomputed every step) and, optionally,
by 8-bit per-token absmax fake-quantised activations. Both use the straight-through estimator: the
forward sees quantised values, the backward passes gradients as if quantisation were the identity.

Mixed precision: ``TernaryConfig.keep_precision`` maps module-name patterns to 4 or 8 (symmetric
absmax integers per block of 32 input columns, what MatMulNBits stores exactly) or 16 (a
full-precision layer: no weight or activation quantisation; exported as fp16/fp32 dense).
"""

from __future__ import annotations

import contextlib
import fnmatch
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ternarylm.format.entries import TERNARY_BITS
from ternarylm.format.trits import EPS, scale_group_size

GRANULARITIES = ("tensor", "channel", "group")
KEEP_BITS = (4, 8, 16)  # precisions a layer can be kept at; 16 = full precision (fp16 on export)
KEPT_BLOCK = 32  # input columns per scale for 4/8-bit kept layers (= MatMulNBits block_size)


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
    keep_precision: ``{pattern: bits}`` over full module names (``model.layers.3.mlp.down_proj``,
        ``*.down_proj``, ``model.layers.11.*``); when several match, the highest precision wins (order-free, so the
        mapping survives JSON round trips that sort keys). bits is 4 or 8
        (integer weights, 8-bit activations) or 16 (full precision). Unmatched layers stay ternary.
    """

    granularity: str = "tensor"
    group_size: int | None = None
    activation_bits: int = 8
    include: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=lambda: ["lm_head", "*.lm_head", "score", "*classifier*"])
    keep_precision: dict[str, int] = field(default_factory=dict)
    version: int = 1

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.granularity == "group" and self.group_size not in (32, 64, 128):
            raise ValueError(f"group_size must be 32, 64 or 128 for granularity 'group', got {self.group_size}")
        if self.activation_bits not in (0, 8):
            raise ValueError(f"activation_bits must be 8 or 0 (off), got {self.activation_bits}")
        if not isinstance(self.keep_precision, dict):
            raise ValueError("keep_precision must be a {pattern: bits} mapping")
        for pattern, bits in self.keep_precision.items():
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"keep_precision pattern must be a non-empty string, got {pattern!r}")
            if bits not in KEEP_BITS:
                raise ValueError(f"keep_precision {pattern}={bits!r}: bits must be one of "
                                 f"{', '.join(map(str, KEEP_BITS))} (16 = full precision)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TernaryConfig":
        d = dict(d)
        d.pop("version", None)
        return cls(**d)

    def weight_bits(self, name: str) -> int:
        """Precision of the linear called ``name``: the highest matching keep_precision bits, else ternary."""
        matches = [bits for pattern, bits in self.keep_precision.items() if fnmatch.fnmatch(name, pattern)]
        return max(matches, default=TERNARY_BITS)

    def selects(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, p) for p in self.include) and not any(
            fnmatch.fnmatch(name, p) for p in self.exclude
        )


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator: value of ``q``, gradient of ``x``."""
    return x + (q - x).detach()


def weight_scales(w: torch.Tensor, granularity: str, group_size: int | None) -> torch.Tensor:
    """Absmean scales as ``[N, K // G]`` (see ternarylm.format.trits for the layout)."""
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


def int_weight(w: torch.Tensor, bits: int, block_size: int = KEPT_BLOCK):
    """Symmetric absmax integers per block of ``block_size`` input columns: ``(codes, scales)``,
    int8 ``[N, K]`` in [-(2**(bits-1) - 1), 2**(bits-1) - 1] and float ``[N, K // block_size]``."""
    n, k = w.shape
    qmax = 2 ** (bits - 1) - 1
    blocks = w.detach().float().reshape(n, k // block_size, block_size)
    scales = (blocks.abs().amax(dim=2) / qmax).clamp(min=EPS)
    codes = (blocks / scales[..., None]).round().clamp(-qmax, qmax).to(torch.int8).reshape(n, k)
    return codes, scales


def fake_quant_weight_int(w: torch.Tensor, bits: int, block_size: int = KEPT_BLOCK) -> torch.Tensor:
    n, k = w.shape
    qmax = 2 ** (bits - 1) - 1
    blocks = w.reshape(n, k // block_size, block_size)
    scales = (blocks.detach().abs().amax(dim=2, keepdim=True) / qmax).clamp(min=EPS)
    q = ((blocks / scales).round().clamp(-qmax, qmax) * scales).reshape(n, k)
    return _ste(w, q)


def fake_quant_activations(x: torch.Tensor) -> torch.Tensor:
    scale = 127.0 / x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=EPS)
    q = (x * scale).round().clamp(-128, 127) / scale
    return _ste(x, q)


class BitLinear(nn.Linear):
    """Drop-in ``nn.Linear`` whose forward uses ternary weights (and 8-bit activations).

    ``weight_bits`` is ``TERNARY_BITS`` (2) for a ternary layer, 4 or 8 for a layer kept at integer
    precision, 16 for a full-precision layer. It is a plain attribute so that analysis tools can
    flip one layer temporarily (see ``override_weight_bits``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 quant: TernaryConfig | None = None, device=None, dtype=None, weight_bits: int = TERNARY_BITS):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.quant = quant or TernaryConfig()
        self.weight_bits = weight_bits
        scale_group_size(self.quant.granularity, in_features, self.quant.group_size)  # validate early
        if weight_bits in (4, 8) and in_features % KEPT_BLOCK:
            raise ValueError(f"a {weight_bits}-bit layer needs in_features divisible by {KEPT_BLOCK}, "
                             f"got {in_features}; keep it at 16 (full precision) instead")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.weight_bits
        if bits == 16:
            return F.linear(x, self.weight, self.bias)
        if bits == TERNARY_BITS:
            w = fake_quant_weight(self.weight, self.quant.granularity, self.quant.group_size)
        else:
            w = fake_quant_weight_int(self.weight, bits)
        if self.quant.activation_bits:
            x = fake_quant_activations(x)
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        if self.weight_bits != TERNARY_BITS:
            return f"{super().extra_repr()}, weight_bits={self.weight_bits}"
        return (f"{super().extra_repr()}, ternary={self.quant.granularity}"
                f"{'/' + str(self.quant.group_size) if self.quant.granularity == 'group' else ''}, "
                f"act_bits={self.quant.activation_bits}")


def quantize_(model: nn.Module, config: TernaryConfig | None = None, filter_fn=None, prefix: str = "") -> nn.Module:
    """Swap every selected ``nn.Linear`` in ``model`` for a ``BitLinear`` in place (torchao style).

    ``filter_fn(module, fqn) -> bool`` overrides the config's include/exclude patterns when given.
    ``prefix`` is ``model``'s own name inside the full model, so that patterns (include, exclude,
    keep_precision) see full names such as ``model.layers.0.mlp.down_proj``.
    Weights and biases are kept (they become the latent weights). Returns ``model`` for chaining.
    """
    config = config or TernaryConfig()
    select = filter_fn or (lambda m, name: config.selects(name))
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            fqn = ".".join(p for p in (prefix, name, child_name) if p)
            if type(child) is nn.Linear and select(child, fqn):
                new = BitLinear(child.in_features, child.out_features, bias=child.bias is not None,
                                quant=config, device=child.weight.device, dtype=child.weight.dtype,
                                weight_bits=config.weight_bits(fqn))
                new.load_state_dict(child.state_dict())
                setattr(module, child_name, new)
    return model


def ternary_linears(model: nn.Module):
    """Yield ``(name, BitLinear)`` pairs in module order (every quantised linear, kept ones included)."""
    for name, m in model.named_modules():
        if isinstance(m, BitLinear):
            yield name, m


@contextlib.contextmanager
def override_weight_bits(model: nn.Module, bits_by_name: dict[str, int]):
    """Temporarily set ``weight_bits`` of the named BitLinears (e.g. ``{name: 16}`` evaluates one
    layer in full precision); restores the originals on exit."""
    modules = dict(ternary_linears(model))
    unknown = sorted(set(bits_by_name) - set(modules))
    if unknown:
        raise KeyError(f"no quantised linear named {unknown[0]!r}")
    saved = {name: modules[name].weight_bits for name in bits_by_name}
    try:
        for name, bits in bits_by_name.items():
            modules[name].weight_bits = bits
        yield model
    finally:
        for name, bits in saved.items():
            modules[name].weight_bits = bits


def check_keep_patterns(patterns, names: list[str]) -> None:
    """A keep_precision pattern that matches none of ``names`` is a typo, not a plan: say so."""
    for pattern in patterns or ():
        if not any(fnmatch.fnmatch(n, pattern) for n in names):
            raise ValueError(f"--keep-precision pattern {pattern!r} matches no linear; names look like "
                             f"{names[-1]} (patterns such as '*.down_proj' or 'model.layers.0.*')")


def parse_keep_precision(items) -> dict[str, int]:
    """``["*.down_proj=8", "model.layers.0.*=fp16"]`` -> ``{"*.down_proj": 8, "model.layers.0.*": 16}``."""
    out: dict[str, int] = {}
    for item in items or ():
        pattern, sep, value = str(item).rpartition("=")
        value = value.strip().lower()
        bits = {"fp16": 16, "fp": 16, "int8": 8, "int4": 4}.get(value, value)
        try:
            bits = int(bits)
        except ValueError:
            bits = None
        if not sep or not pattern.strip() or bits not in KEEP_BITS:
            raise ValueError(f"--keep-precision {item!r} must look like PATTERN=BITS with BITS 4, 8 or 16 "
                             "(fp16), e.g. 'model.layers.0.*=8' or '*.down_proj=4'")
        out[pattern.strip()] = bits
    return out
