"""The NumPy reference runtime, in llama2.c's shape: config -> weights -> run state -> forward.

It runs an export folder (any target: the weight format is a parameter, see ``weights.py``) with
nothing but numpy and onnx (to read the initializers). It mirrors ``ternarylm.modeling`` exactly:
pre-norm RMSNorm, RoPE ("rotate half"), grouped-query attention with a KV cache, SwiGLU (or BitNet's
squared ReLU, and its sub-layer RMSNorms before o_proj and down_proj, as config.json says), the LM head, and BitLinear's per-token absmax int8 activation fake-quant before each ternary or kept
4/8-bit matmul whose weight entry says ``act_bits = 8``. Mixed-precision exports load layer by layer
(ternary, 4/8-bit integer, float; a fused q/k/v or gate/up whose parts differ is a ConcatLinear).

Shapes: B batch, T new tokens, S = past + T keys, D hidden, nh / nkv query / key-value heads,
hd head dim, V vocab.

Ternary matmul kernel: int8 trits + float32 scales, converted block by block into an L2-sized
float32 buffer and multiplied with float32 BLAS (measurements and the alternatives rejected are in
``weights.py``'s docstring). No fp32 copy of the ternary weights is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ternarylm.format.architecture import ModelConfig
from ternarylm.runtime_py.weights import Embedding, Initializers, embedding_from_entry, linear_from_entry

# ---- weights -----------------------------------------------------------------------------------
@dataclass
class LayerWeights:
    input_norm: np.ndarray  # (D,)
    qkv: object  # linear D -> (nh + 2 nkv) hd, rows q, k, v
    o_proj: object  # linear nh hd -> D
    post_norm: np.ndarray  # (D,)
    gate_up: object  # linear D -> 2 I, rows gate, up
    down: object  # linear I -> D
    attn_sub_norm: np.ndarray | None = None  # (nh hd,) before o_proj (BitNet's sub_norms)
    ffn_sub_norm: np.ndarray | None = None  # (I,) before down_proj


@dataclass
class Weights:
    embed: Embedding  # ids (B, T) -> (B, T, D)
    layers: list[LayerWeights]
    final_norm: np.ndarray  # (D,)
    lm_head: object  # linear D -> V
    rope_cos: np.ndarray  # (max_pos, hd)
    rope_sin: np.ndarray  # (max_pos, hd)

    @classmethod
    def from_onnx(cls, model, weight_map: dict, config: ModelConfig) -> Weights:
        """``model``: an onnx ModelProto (its initializer bytes are released as they are read)."""
        inits = Initializers(model)

        def entry(name):
            if name not in weight_map:
                raise ValueError(f"config.json's weight map has no {name!r}; re-export the model")
            return weight_map[name]

        def norm(name):
            return inits.get(entry(name)["weight"]).astype(np.float32, copy=False)

        def linear(name):
            return linear_from_entry(name, entry(name), inits, weight_map)

        layers = []
        for i in range(config.num_hidden_layers):
            p = f"model.layers.{i}"
            sub = ({"attn_sub_norm": norm(f"{p}.self_attn.attn_sub_norm"), "ffn_sub_norm": norm(f"{p}.mlp.ffn_sub_norm")}
                   if config.sub_norms else {})
            layers.append(LayerWeights(
                input_norm=norm(f"{p}.input_layernorm"), qkv=linear(f"{p}.self_attn.qkv_proj"),
                o_proj=linear(f"{p}.self_attn.o_proj"), post_norm=norm(f"{p}.post_attention_layernorm"),
                gate_up=linear(f"{p}.mlp.gate_up_proj"), down=linear(f"{p}.mlp.down_proj"), **sub))
        cos, sin = rope_tables(config, inits)
        return cls(embed=embedding_from_entry(entry("model.embed_tokens"), inits), layers=layers,
                   final_norm=norm("model.norm"), lm_head=linear("lm_head"), rope_cos=cos, rope_sin=sin)


def rope_tables(config: ModelConfig, inits: Initializers | None = None):
    """cos/sin ``(max_pos, hd)``: the export's own tables when it has them, else from ``rope_theta``."""
    hd = config.head_dim
    for cos_name, sin_name in (("model.rotary.cos", "model.rotary.sin"),
                               ("model.rotary.cos_cache", "model.rotary.sin_cache")):
        if inits is not None and cos_name in inits and sin_name in inits:
            cos, sin = inits.get(cos_name).astype(np.float32), inits.get(sin_name).astype(np.float32)
            if cos.shape[-1] == hd // 2:  # half tables (GroupQueryAttention's cos_cache)
                cos, sin = np.concatenate([cos, cos], 1), np.concatenate([sin, sin], 1)
            return cos, sin
    inv_freq = (1.0 / (np.float32(config.rope_theta) ** (np.arange(0, hd, 2, dtype=np.float32) / hd)))
    freqs = np.arange(config.max_position_embeddings, dtype=np.float32)[:, None] * inv_freq.astype(np.float32)
    emb = np.concatenate([freqs, freqs], 1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


# ---- run state ---------------------------------------------------------------------------------
class KVCache:
    """Per-layer keys (after RoPE) and values ``(B, nkv, capacity, hd)``; grows by doubling."""

    def __init__(self, config: ModelConfig, batch_size: int = 1):
        self.config, self.batch_size, self.length = config, batch_size, 0
        self.keys: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def append(self, layer: int, k: np.ndarray, v: np.ndarray):
        """Store ``k, v`` ``(B, nkv, T, hd)`` after ``self.length``; return the keys/values so far."""
        end = self.length + k.shape[2]
        if layer == len(self.keys):
            self.keys.append(np.empty((*k.shape[:2], 0, k.shape[3]), np.float32))
            self.values.append(np.empty_like(self.keys[-1]))
        if end > self.keys[layer].shape[2]:
            cap = min(max(end, 2 * self.keys[layer].shape[2], 64), max(end, self.config.max_position_embeddings))
            for store in (self.keys, self.values):
                grown = np.empty((*k.shape[:2], cap, k.shape[3]), np.float32)
                grown[:, :, : self.length] = store[layer][:, :, : self.length]
                store[layer] = grown
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


# ---- primitives --------------------------------------------------------------------------------
def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    return weight * (x * (1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps))))


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Non-interleaved RoPE: ``x * cos + rotate_half(x) * sin``; x ``(B, H, T, hd)``, cos/sin ``(B, 1, T, hd)``."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def causal_mask(attention_mask: np.ndarray | None, t: int, past: int) -> np.ndarray:
    """Boolean ``(B or 1, 1, T, S)``: causal minus padded keys; the diagonal always stays visible."""
    s = past + t
    q_pos = np.arange(past, s)[:, None]
    k_pos = np.arange(s)[None, :]
    mask = (k_pos <= q_pos)[None, None]
    if attention_mask is not None:
        keep = np.asarray(attention_mask)[:, None, None, -s:].astype(bool)
        mask = (mask & keep) | (k_pos == q_pos)[None, None]
    return mask


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grouped-query attention. q ``(B, nh, T, hd)``, k/v ``(B, nkv, S, hd)``, mask ``(B|1, 1, T, S)``."""
    b, nh, t, hd = q.shape
    nkv = k.shape[1]
    qg = q.reshape(b, nkv, nh // nkv * t, hd)  # query heads h = kv * rep + r share kv head `kv`
    scores = (qg @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(hd))  # (B, nkv, rep T, S)
    scores = scores.reshape(b, nkv, nh // nkv, t, -1)
    scores = np.where(mask[:, :, None], scores, np.float32(-np.inf))
    probs = softmax(scores).reshape(b, nkv, nh // nkv * t, -1)
    return (probs @ v).reshape(b, nh, t, hd)


def swiglu(gate_up: np.ndarray) -> np.ndarray:
    """``silu(gate) * up`` for the fused ``(..., 2 I)`` projection (rows gate, then up)."""
    gate, up = np.split(gate_up, 2, axis=-1)
    with np.errstate(over="ignore"):
        return gate / (np.float32(1.0) + np.exp(-gate)) * up


def relu2_glu(gate_up: np.ndarray) -> np.ndarray:
    """``relu(gate)^2 * up`` (BitNet b1.58's gating), same layout as ``swiglu``."""
    gate, up = np.split(gate_up, 2, axis=-1)
    relu = np.maximum(gate, np.float32(0.0))
    return relu * relu * up


GATED_ACTIVATIONS = {"silu": swiglu, "relu2": relu2_glu}  # config.json architecture.hidden_act


# ---- model -------------------------------------------------------------------------------------
class NumpyDecoder:
    """The decoder with its KV cache. ``forward`` appends the new tokens to the cache.

    Not thread-safe: one instance per generating thread.
    """

    name = "numpy"

    def __init__(self, config: ModelConfig, weights: Weights):
        self.config, self.weights = config, weights
        self.cache = KVCache(config)

    @classmethod
    def from_onnx(cls, model, config_json: dict) -> NumpyDecoder:
        config = ModelConfig.from_config_json(config_json)
        return cls(config, Weights.from_onnx(model, config_json.get("weights") or {}, config))

    @property
    def past_length(self) -> int:
        return self.cache.length

    def reset(self, batch_size: int = 1):
        self.cache = KVCache(self.config, batch_size)

    def forward(self, input_ids, position_ids=None, attention_mask=None, last_only: bool = False) -> np.ndarray:
        """input_ids ``(B, T)`` int64 -> logits ``(B, T, V)`` float32 (``(B, 1, V)`` when ``last_only``).

        ``position_ids`` default to ``past + arange(T)``; ``attention_mask`` ``(B, past + T)`` (1 = keep)
        defaults to all ones.
        """
        c, w = self.config, self.weights
        input_ids = np.asarray(input_ids, np.int64)
        b, t = input_ids.shape
        past = self.cache.length
        if past and b != self.cache.batch_size:
            raise ValueError(f"batch size {b} differs from the cached {self.cache.batch_size}; call reset()")
        self.cache.batch_size = b
        if past + t > c.max_position_embeddings:
            raise ValueError(f"{past + t} tokens exceed the model's context of {c.max_position_embeddings}")
        if position_ids is None:
            position_ids = np.broadcast_to(np.arange(past, past + t), (b, t))
        pos = np.asarray(position_ids, np.int64)
        cos, sin = w.rope_cos[pos][:, None], w.rope_sin[pos][:, None]  # (B, 1, T, hd)
        mask = causal_mask(attention_mask, t, past)
        x = w.embed(input_ids)  # (B, T, D)
        gated = GATED_ACTIVATIONS[c.hidden_act]
        for i, layer in enumerate(w.layers):
            x = x + self._attention_block(rms_norm(x, layer.input_norm, c.rms_norm_eps), layer, i, cos, sin, mask)
            h = gated(layer.gate_up(rms_norm(x, layer.post_norm, c.rms_norm_eps)))
            x = x + layer.down(self._sub_norm(h, layer.ffn_sub_norm))
        self.cache.length += t
        if last_only:
            x = x[:, -1:]
        return w.lm_head(rms_norm(x, w.final_norm, c.rms_norm_eps)).astype(np.float32, copy=False)

    def _attention_block(self, h, layer: LayerWeights, i: int, cos, sin, mask) -> np.ndarray:
        c = self.config
        b, t, _ = h.shape
        nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        qkv = layer.qkv(h)  # (B, T, (nh + 2 nkv) hd)
        q, k, v = np.split(qkv, [nh * hd, (nh + nkv) * hd], axis=-1)
        q = rope(q.reshape(b, t, nh, hd).transpose(0, 2, 1, 3), cos, sin)  # (B, nh, T, hd)
        k = rope(k.reshape(b, t, nkv, hd).transpose(0, 2, 1, 3), cos, sin)  # (B, nkv, T, hd)
        v = v.reshape(b, t, nkv, hd).transpose(0, 2, 1, 3)
        keys, values = self.cache.append(i, k, v)  # (B, nkv, S, hd)
        y = attention(q, keys, values, mask)  # (B, nh, T, hd)
        return layer.o_proj(self._sub_norm(y.transpose(0, 2, 1, 3).reshape(b, t, nh * hd), layer.attn_sub_norm))

    def _sub_norm(self, x: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
        return x if weight is None else rms_norm(x, weight, self.config.rms_norm_eps)
