"""TernaryLM decoder: transformers' Llama with ternary linears.

The reference paper's architecture (pre-norm RMSNorm, RoPE, SwiGLU, no biases, untied embeddings) is
Llama's, so the model *is* transformers' maintained ``LlamaModel`` / ``LlamaForCausalLM``; with
``config.precision == "ternary"`` the constructor calls ``quantize_`` on the decoder layers, which swaps
every ``nn.Linear`` inside them for a ``BitLinear`` (ternary weights, 8-bit activations, STE). The
embedding and the (untied) LM head stay full precision.

Caching, ``generate()``, attention backends (sdpa / eager / flash), masking of padded batches and
``save_pretrained`` / ``from_pretrained`` therefore come from the library and move with it; this file
adds no forward pass of its own. Parameter names are Llama's (``model.layers.0.self_attn.q_proj.weight``),
so the checkpoint, the exporter and other Llama tooling read the same names.

BitNet b1.58's sub-layer norms (``config.sub_norms``) are transformers' own ``BitNetDecoderLayer`` in place
of Llama's (names ``self_attn.attn_sub_norm`` / ``mlp.ffn_sub_norm``, as in BitNet checkpoints); squared
ReLU (``hidden_act: relu2``) and tied embeddings are plain config fields both classes read.

Shapes: ``input_ids (B, T) -> hidden (B, T, hidden_size) -> logits (B, T, vocab_size)``; inside attention
``q (B, num_attention_heads, T, head_dim)``, ``k, v (B, num_key_value_heads, past + T, head_dim)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel
from transformers.models.bitnet.modeling_bitnet import BitNetDecoderLayer

from ternarylm.configuration import TernaryLMConfig
from ternarylm.quantization import quantize_


def rope_inverse_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """``1 / theta^(2i / head_dim)``, float32 ``[head_dim / 2]``: Llama's default RoPE, which the exporter
    tabulates (non-interleaved "rotate half" convention, as ORT's GroupQueryAttention)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def ternarize_decoder_layers(model: LlamaModel, config: TernaryLMConfig) -> None:
    """Give ``model`` the config's decoder layers: BitNet's (with sub-norms) where ``config.sub_norms``, then
    swap their linears for ``BitLinear`` when the config is ternary (names seen as ``model.layers.*``)."""
    if config.sub_norms:
        model.layers = nn.ModuleList(BitNetDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        model.init_weights()  # initialises the new layers (the Llama ones they replace had been)
        # Known limit: transformers registers output_hidden_states / output_attentions recording per model
        # class (Llama's layers), so a sub_norms model returns none; nothing in ternarylm asks for them.
    if config.precision == "ternary":
        quantize_(model.layers, config.ternary_config(), prefix="model.layers")


class TernaryLMPreTrainedModel(LlamaPreTrainedModel):
    config_class = TernaryLMConfig
    config: TernaryLMConfig
    _no_split_modules = ["LlamaDecoderLayer", "BitNetDecoderLayer"]  # device_map never splits a layer


class TernaryLMModel(TernaryLMPreTrainedModel, LlamaModel):
    """``LlamaModel`` (embedding, decoder layers, final norm, rotary embedding) with ternary linears."""

    def __init__(self, config: TernaryLMConfig):
        super().__init__(config)
        ternarize_decoder_layers(self, config)


class TernaryLMForCausalLM(TernaryLMPreTrainedModel, LlamaForCausalLM):
    """``LlamaForCausalLM`` with ternary decoder linears: loss, caching and generation are Llama's."""

    def __init__(self, config: TernaryLMConfig):
        super().__init__(config)
        ternarize_decoder_layers(self.model, config)


AutoConfig.register("ternarylm", TernaryLMConfig, exist_ok=True)
AutoModelForCausalLM.register(TernaryLMConfig, TernaryLMForCausalLM, exist_ok=True)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
