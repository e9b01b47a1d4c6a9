"""config.json's ``architecture`` section as a checked value: what a runtime needs to size a decoder
(layers, heads, KV heads, head_dim, vocabulary, context) plus the special token ids.

Every reader of an export folder (the NumPy runtime, the onnxruntime decoder, the profiler) builds its
shapes from this one class, so a config that lacks a field or holds a non-positive size is refused in
one place, with the same message.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

CONFIG_VERSION = 1
HIDDEN_ACTS = ("silu", "relu2")  # the MLP gate: SwiGLU (the paper's), squared ReLU (BitNet b1.58's)
# Architecture fields added in export format 2, with the value that means "not used": a folder that uses
# none of them is written as format 1, which older readers open correctly.
VARIANT_DEFAULTS = {"hidden_act": "silu", "sub_norms": False}


def format_version_for(arch: dict) -> int:
    """The oldest export format whose readers compute this architecture (see VARIANT_DEFAULTS)."""
    return 2 if any(arch.get(k, plain) != plain for k, plain in VARIANT_DEFAULTS.items()) else 1


@dataclass(frozen=True)
class ModelConfig:
    """config.json's ``architecture`` (plus the special token ids)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"  # silu: SwiGLU; relu2: relu(gate)^2 * up (BitNet b1.58)
    sub_norms: bool = False  # RMSNorm before o_proj (attn_sub_norm) and before down_proj (ffn_sub_norm)
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    version: int = CONFIG_VERSION

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "intermediate_size", "max_position_embeddings"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"config.json architecture.{name} must be a positive integer, "
                                 f"got {getattr(self, name)!r}; re-export the model")
        if self.num_attention_heads % self.num_key_value_heads or self.head_dim % 2:
            raise ValueError("config.json architecture: num_attention_heads must be a multiple of "
                             "num_key_value_heads and head_dim even; re-export the model")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"config.json architecture.hidden_act {self.hidden_act!r} is not one of "
                             f"{', '.join(HIDDEN_ACTS)}; upgrade ternarylm or re-export the model")

    @classmethod
    def from_config_json(cls, cfg: dict) -> ModelConfig:
        arch = cfg.get("architecture")
        if not isinstance(arch, dict):
            raise ValueError("config.json has no 'architecture' section; re-export the model")
        fields = set(cls.__dataclass_fields__) - {"version", "bos_token_id", "eos_token_id", "pad_token_id"}
        missing = sorted(fields - {"rope_theta", "rms_norm_eps", *VARIANT_DEFAULTS} - set(arch))
        if missing:
            raise ValueError(f"config.json architecture lacks {', '.join(missing)}; re-export the model")
        special = {k: cfg.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        return cls(**{k: v for k, v in arch.items() if k in fields}, **special)

    def to_dict(self) -> dict:
        return asdict(self)
