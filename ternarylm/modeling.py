"""TernaryLM decoder (the reference paper's architecture) as Hugging Face ``PreTrainedModel``s.

Reads top-down: RMSNorm -> rotary embedding -> attention -> SwiGLU MLP -> decoder layer -> model ->
causal-LM head. With ``config.precision == "ternary"`` every linear inside the decoder layers is a
``BitLinear``; the embedding and the (untied) LM head stay full precision. Parameter names follow
Llama's, so the exporter and other tools recognise them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from ternarylm.configuration import TernaryLMConfig
from ternarylm.quantization import quantize_


class TernaryLMRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_inverse_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class TernaryLMRotaryEmbedding(nn.Module):
    """RoPE in the non-interleaved ("rotate half") convention, as Llama and ORT's GroupQueryAttention."""

    def __init__(self, config: TernaryLMConfig):
        super().__init__()
        self.register_buffer("inv_freq", rope_inverse_frequencies(config.head_dim, config.rope_theta),
                             persistent=False)

    def forward(self, position_ids):  # (B, T) -> cos, sin (B, 1, T, hd)
        freqs = position_ids[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[:, None], emb.sin()[:, None]


class TernaryLMAttention(nn.Module):
    def __init__(self, config: TernaryLMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        d = config.hidden_size
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(self, x, cos, sin, mask, past_key_values: Cache | None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx)  # (B, nkv, P+T, hd)
        if self.n_kv != self.n_heads:
            rep = self.n_heads // self.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class TernaryLMMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: TernaryLMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TernaryLMDecoderLayer(nn.Module):
    def __init__(self, config: TernaryLMConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = TernaryLMRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = TernaryLMAttention(config, layer_idx)
        self.post_attention_layernorm = TernaryLMRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = TernaryLMMLP(config)

    def forward(self, x, cos, sin, mask, past_key_values):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, past_key_values)
        return x + self.mlp(self.post_attention_layernorm(x))


class TernaryLMPreTrainedModel(PreTrainedModel):
    config_class = TernaryLMConfig
    base_model_prefix = "model"
    _no_split_modules = ["TernaryLMDecoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, TernaryLMRMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, TernaryLMRotaryEmbedding):
            # Non-persistent buffer: from_pretrained builds on the meta device, so recompute it here.
            with torch.no_grad():
                module.inv_freq.copy_(rope_inverse_frequencies(self.config.head_dim, self.config.rope_theta))


def attention_mask_4d(attention_mask, T: int, past: int, device) -> torch.Tensor:
    """Boolean (B or 1, 1, T, past+T) mask: causal, minus padded keys; the diagonal always stays
    visible so that fully padded query rows give finite values instead of NaN."""
    full = past + T
    q_pos = torch.arange(past, full, device=device)[:, None]
    k_pos = torch.arange(full, device=device)[None, :]
    mask = (k_pos <= q_pos)[None, None]
    if attention_mask is not None:
        keep = attention_mask[:, None, None, -full:].bool()
        mask = (mask & keep) | (k_pos == q_pos)[None, None]
    return mask


class TernaryLMModel(TernaryLMPreTrainedModel):
    def __init__(self, config: TernaryLMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(TernaryLMDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = TernaryLMRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = TernaryLMRotaryEmbedding(config)
        if config.precision == "ternary":
            quantize_(self.layers, config.ternary_config(), prefix="model.layers")
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, cache_position=None, **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        B, T, _ = inputs_embeds.shape
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = torch.arange(past, past + T, device=inputs_embeds.device)[None].expand(B, T)
        cos, sin = self.rotary_emb(position_ids)
        mask = attention_mask_4d(attention_mask, T, past, inputs_embeds.device)
        x = inputs_embeds
        for layer in self.layers:
            x = layer(x, cos.to(x.dtype), sin.to(x.dtype), mask, past_key_values if use_cache else None)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x),
                                       past_key_values=past_key_values if use_cache else None)


class TernaryLMForCausalLM(TernaryLMPreTrainedModel, GenerationMixin):
    def __init__(self, config: TernaryLMConfig):
        super().__init__(config)
        self.model = TernaryLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, cache_position=None, logits_to_keep=0,
                **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache)
        h = out.last_hidden_state
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values)


AutoConfig.register("ternarylm", TernaryLMConfig, exist_ok=True)
AutoModelForCausalLM.register(TernaryLMConfig, TernaryLMForCausalLM, exist_ok=True)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
