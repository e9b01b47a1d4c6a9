"""``TernaryLMConfig``: the architecture of the reference paper, every default documented, plus presets.

The architecture is Llama's (pre-norm RMSNorm, RoPE, SwiGLU, no biases, untied embeddings), so the
config also carries the fields transformers' Llama classes read (``hidden_act``, ``head_dim``,
``rope_parameters``, ``attention_bias``, ``mlp_bias``, ``attention_dropout``): the PyTorch model *is*
a ``LlamaForCausalLM`` whose decoder linears ``quantize_`` swapped for ``BitLinear``.

BitNet b1.58's variations are data, not a fork (``ARCHITECTURE_VARIANTS``): ``hidden_act`` ``relu2``
(squared-ReLU gating), ``sub_norms`` (an RMSNorm before ``o_proj`` and one before ``down_proj``: the
decoder layers are then transformers' ``BitNetDecoderLayer``) and ``tie_word_embeddings``. A config
that uses none of them is the paper's architecture, readable by every ternarylm version.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PretrainedConfig

from ternarylm.format.architecture import HIDDEN_ACTS, VARIANT_DEFAULTS

# Presets. ``vocab_size`` of 132m is bert-base-uncased's (the paper's tokenizer); the trainer replaces
# it with the actual tokenizer's size unless the user pins it.
PRESETS: dict[str, dict] = {
    "132m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=2048,
                 vocab_size=30522, max_position_embeddings=1024),
    "small": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1024,
                  vocab_size=4096, max_position_embeddings=512),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 vocab_size=512, max_position_embeddings=256),
}


# Architecture fields beyond the paper's, with the value that means "not used" (see the module docstring);
# the export folder holds the first two (exports store the head even when it is tied).
ARCHITECTURE_VARIANTS = {**VARIANT_DEFAULTS, "tie_word_embeddings": False}

# Fields Llama's modules read that this architecture fixes (derived in ``__init__``, never overridden).
LLAMA_FIXED_FIELDS = ("head_dim", "attention_bias", "mlp_bias", "attention_dropout", "pretraining_tp",
                      "rope_parameters")


class TernaryLMConfig(PretrainedConfig):
    """Decoder-only transformer: pre-norm RMSNorm, RoPE, SwiGLU, no biases, untied embedding/head.

    Args:
        vocab_size: tokenizer size.
        hidden_size: model width d_model.
        num_hidden_layers: decoder blocks.
        num_attention_heads: query heads; head_dim = hidden_size / num_attention_heads (must be even).
        num_key_value_heads: key/value heads (grouped-query attention); defaults to num_attention_heads.
        intermediate_size: SwiGLU hidden width.
        max_position_embeddings: longest context the model is trained and exported for.
        rope_theta: RoPE base (default 10000; a config that only has ``rope_parameters`` gives its theta).
        rms_norm_eps: RMSNorm epsilon.
        precision: ``ternary`` (BitLinear in every block linear) or ``fp`` (the full-precision twin).
        quant: a ``TernaryConfig`` dict (scale granularity, group size, activation bits).
        initializer_range: std of the normal init.
        hidden_act: the MLP's gate activation, ``silu`` (SwiGLU, the paper's) or ``relu2`` (squared ReLU,
            BitNet b1.58's).
        sub_norms: BitNet b1.58's sub-layer RMSNorms: ``self_attn.attn_sub_norm`` (hidden_size) on the
            attention output before ``o_proj`` and ``mlp.ffn_sub_norm`` (intermediate_size) on
            ``act(gate) * up`` before ``down_proj``.
        tie_word_embeddings: the LM head shares the embedding matrix (exports still store both).

    Fixed by the architecture (stored so that Llama's modules and other tools read them):
    ``attention_bias``/``mlp_bias`` False, ``attention_dropout`` 0, ``head_dim`` =
    hidden_size / num_attention_heads, ``rope_parameters`` ``{"rope_type": "default", "rope_theta": ...}``.
    """

    model_type = "ternarylm"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=None, intermediate_size=128, max_position_embeddings=256,
                 rope_theta=None, rms_norm_eps=1e-6, precision="ternary", quant=None,
                 initializer_range=0.02, bos_token_id=None, eos_token_id=None, pad_token_id=None,
                 tie_word_embeddings=False, use_cache=True, hidden_act="silu", sub_norms=False, **kwargs):
        rope = kwargs.pop("rope_parameters", None) or kwargs.pop("rope_scaling", None) or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))  # "type": transformers 4's spelling
        if rope_type != "default":
            raise ValueError(f"RoPE type {rope_type!r} is not supported; TernaryLM uses default RoPE "
                             "(rope_theta only)")
        for fixed in (*LLAMA_FIXED_FIELDS, "rope_scaling"):
            kwargs.pop(fixed, None)  # derived below; older checkpoints lack them, newer ones repeat them
        self.use_cache = use_cache
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = float(rope_theta if rope_theta is not None else rope.get("rope_theta", 10000.0))
        self.rms_norm_eps = float(rms_norm_eps)
        self.precision = precision
        self.quant = dict(quant or {})
        self.initializer_range = initializer_range
        # What transformers' Llama modules read; fixed for this architecture (see the docstring).
        self.head_dim = hidden_size // num_attention_heads if num_attention_heads else 0
        self.hidden_act = "silu" if hidden_act == "swish" else hidden_act
        self.sub_norms = bool(sub_norms)
        self.attention_bias = False
        self.mlp_bias = False
        self.attention_dropout = 0.0
        self.pretraining_tp = 1
        self.rope_parameters = {"rope_type": "default", "rope_theta": self.rope_theta}
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                         tie_word_embeddings=bool(tie_word_embeddings), **kwargs)
        self.validate_architecture()

    def validate_architecture(self):
        """Raise ``ValueError`` naming the bad field and what would fix it."""
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"config field {name} must be a positive integer, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; choose one of {', '.join(HIDDEN_ACTS)}")
        if self.precision not in ("ternary", "fp"):
            raise ValueError(f"precision must be 'ternary' or 'fp', got {self.precision!r}")

    def variants(self) -> list[str]:
        """The BitNet variations this config uses (empty for the paper's architecture)."""
        return [name for name, plain in ARCHITECTURE_VARIANTS.items() if getattr(self, name) != plain]

    def linear_names(self) -> list[str]:
        """Full names of the decoder linears (what quantisation patterns match), in module order."""
        names = []
        for i in range(self.num_hidden_layers):
            p = f"model.layers.{i}"
            names += [f"{p}.self_attn.{x}_proj" for x in "qkvo"] + [f"{p}.mlp.{x}_proj" for x in ("gate", "up", "down")]
        return names

    def ternary_config(self):
        from ternarylm.quantization import TernaryConfig

        return TernaryConfig.from_dict(self.quant) if self.quant else TernaryConfig()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TernaryLMConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        fields = {**PRESETS[name], **overrides}
        known = set(cls().to_dict()) | {"num_key_value_heads", "quant", "precision"}
        known -= set(LLAMA_FIXED_FIELDS)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; see TernaryLMConfig's docstring")
        return cls(**fields)


def load_overrides(path: str | Path) -> dict:
    """Config overrides from a JSON file (``--config-json``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read config JSON {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config JSON {path} must hold an object of field: value pairs")
    return data
