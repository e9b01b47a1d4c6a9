"""ckpt.pt -> one GGUF file for llama.cpp (``ternary-export gguf``); the mapping is in docs/GGUF.md.

The decoder linears go out in one of llama.cpp's ternary types, built from the very trits and scales
the ONNX exporter ships (``export.weights.extract_weights``, the training forward's absmean rule):

- ``tq2_0``: 256 weights per block, 2 bits per trit + one fp16 scale ``d`` (2.06 bits/weight);
- ``tq1_0``: 256 weights per block, base-3 packed trits + one fp16 ``d`` (1.69 bits/weight);
- ``q4_0`` (exact fallback): 32 weights per block, codes ``t + 8`` + one fp16 ``d`` (4.5 bits/weight),
  for checkpoints TQ blocks cannot hold: rows not a multiple of 256 (the ``small`` preset's 384) and
  group scales (group 32/64/128 repeat exactly onto blocks of 32).

Exactness: every trit is written as is. The block scale ``d`` is the layer's float32 absmean scale
rounded to fp16 by the format (relative error <= 2**-11 = 4.9e-4 while the scale is >= 6.1e-5, fp16's
smallest normal; smaller scales keep an absolute error <= 2**-25). Per-tensor and per-channel scales
map exactly onto TQ blocks when the row length K is a multiple of 256 (the row's scale is repeated in
each of its blocks). Group-scaled checkpoints (groups of 32/64/128 < 256) are refused for TQ types:
a TQ block has one scale, so they would need an approximation; ``--type q4_0`` holds them exactly.

Other tensors: layers the mixed-precision plan keeps at 8 bits -> Q8_0 (their int8 codes and one
scale per 32 inputs are exactly a Q8_0 block, scale rounded to fp16), at 4 bits -> Q4_0 (likewise,
code + 8), at 16 bits (and linears training never quantised) -> F16; the embedding and LM head ->
Q8_0 or Q4_0 (llama.cpp's own quantisers on the float weights, through gguf-py) or F16; RMSNorm gains -> F32.

Q/K rows are permuted as llama.cpp's convert_hf_to_gguf.py does for the llama architecture: the
model is transformers' Llama, whose RoPE rotates the halves (x_i, x_{i + d/2}) of each head, while
llama.cpp's llama RoPE rotates adjacent pairs (x_2i, x_2i+1). Permuting whole rows keeps each
row's trits and scale together, so it is exact; attention scores are unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

QTYPES = ("tq2_0", "tq1_0", "q4_0")
FLOAT_TYPES = ("q8_0", "q4_0", "f16")  # the embedding and LM head (llama.cpp's own quantiser)
TQ_BLOCK = 256
Q_BLOCK = 32
# llama.cpp's name for the GPT-2 pre-tokenizer regex, which byte-level BPE with use_regex uses
# ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+).
PRE_TOKENIZER = "gpt-2"


@dataclass
class GGUFResult:
    """What ``export_gguf`` wrote: the file, its size, how many tensors of each GGML type, and the
    largest relative change fp16 rounding made to a trit/int block scale."""

    path: Path
    n_bytes: int
    types: dict = field(default_factory=dict)
    max_scale_rounding: float = 0.0


@dataclass
class _Tensor:
    name: str
    data: np.ndarray  # float32/float16 array, or uint8 [rows, bytes per row] for a quantised type
    qtype: object  # gguf.GGMLQuantizationType
    shape: tuple  # logical numpy shape (rows, cols) or (n,)


def export_gguf(ckpt_path, out_path, qtype: str = "tq2_0", lm_head: str = "q8_0", embedding: str = "q8_0",
                force: bool = False, name: str | None = None) -> GGUFResult:
    """Write the causal-LM checkpoint ``ckpt_path`` to the GGUF file ``out_path`` (llama architecture).

    ``qtype``: the ternary linears' type (``tq2_0``, ``tq1_0`` or the exact fallback ``q4_0``);
    ``lm_head`` / ``embedding``: ``q8_0``, ``q4_0`` or ``f16``. Refuses an existing ``out_path`` unless ``force``.
    Every check runs before anything is written; the file is written to a temporary sibling and
    renamed into place, so a failure leaves nothing behind (and an existing file untouched).
    Trits are exact; block scales are rounded to fp16 by the format (see the module docstring).
    """
    from ternarylm.export.source import load_source

    _check_choice("--type", qtype, QTYPES)
    _check_choice("--lm-head", lm_head, FLOAT_TYPES)
    _check_choice("--embedding", embedding, FLOAT_TYPES)
    out_path = Path(out_path)
    if out_path.is_dir():
        raise IsADirectoryError(f"{out_path} is a folder; pass a file path such as model.gguf to --out")
    if out_path.exists() and not force:
        raise FileExistsError(f"{out_path} already exists; pass --force to replace it or choose another --out")
    ckpt = load_source(ckpt_path)
    kv, tensors, rounding = build_gguf(ckpt, qtype, lm_head, embedding,
                                       name=name or _source_name(ckpt_path),
                                       source=_source_fields(ckpt_path, ckpt))
    _write_atomic(out_path, kv, tensors)
    types: dict[str, int] = {}
    for t in tensors:
        types[t.qtype.name] = types.get(t.qtype.name, 0) + 1
    return GGUFResult(out_path, out_path.stat().st_size, dict(sorted(types.items())), rounding)


def build_gguf(ckpt: dict, qtype: str, lm_head: str = "q8_0", embedding: str = "q8_0", name: str = "ternarylm",
               source: dict | None = None):
    """Everything the file holds, checked, before a byte is written: ``(metadata, tensors,
    max_scale_rounding)``; ``metadata`` is ``[(key, value, GGUFValueType | None), ...]``."""
    import gguf

    from ternarylm.checkpoint import config_from_checkpoint
    from ternarylm.export.weights import extract_weights
    from ternarylm.format.entries import CAUSAL_LM

    kind = ckpt.get("kind", CAUSAL_LM)
    if kind != CAUSAL_LM:
        raise ValueError(f"this is a {kind} checkpoint; GGUF export writes causal language models (llama.cpp's llama "
                         "architecture has no classifier head) - export it with ternary-export onnx")
    config = config_from_checkpoint(ckpt)
    quant = config.ternary_config()
    if config.precision != "ternary":
        raise ValueError(f"the checkpoint is full precision (precision=fp), so it has no trits for --type {qtype}; "
                         "export a ternary checkpoint, or convert the fp model with llama.cpp's convert_hf_to_gguf.py")
    if qtype != "q4_0" and quant.granularity == "group":
        raise ValueError(f"the checkpoint has group scales (group_size {quant.group_size}), which do not map onto "
                         f"{qtype.upper()}'s 256-wide blocks with one scale; use --type q4_0 (exact, 4.5 bits/weight) "
                         "or train with --granularity channel")
    if config.sub_norms or config.hidden_act != "silu":
        raise ValueError("the checkpoint has BitNet b1.58's architecture (sub-layer norms and/or squared-ReLU MLP), "
                         "which this GGUF writer's llama architecture cannot hold; export it with ternary-export onnx")
    d = config.hidden_size
    for what, value in (("--embedding", embedding), ("--lm-head", lm_head)):
        if value in ("q8_0", "q4_0") and d % Q_BLOCK:
            raise ValueError(f"hidden_size {d} is not a multiple of {Q_BLOCK}, which {value.upper()} blocks need for {what}; "
                             f"pass {what} f16")
    tok = tokenizer_metadata(ckpt["tokenizer_json"], config.vocab_size)
    weights = extract_weights(ckpt["model"], config, trit_scales=ckpt.get("trit_scales"))
    enc = _Encoder(gguf, qtype, config)

    tensors = [enc.float_tensor("token_embd.weight", weights.embed, embedding)]
    h, kvh, hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    for i in range(config.num_hidden_layers):
        p, b = f"model.layers.{i}", f"blk.{i}"
        qkv = weights.linears[f"{p}.self_attn.qkv_proj"]
        q_rows, kv_rows = h * hd, kvh * hd
        q = _rows(qkv, 0, q_rows)
        k = _rows(qkv, q_rows, q_rows + kv_rows)
        v = _rows(qkv, q_rows + kv_rows, q_rows + 2 * kv_rows)
        gate_up = weights.linears[f"{p}.mlp.gate_up_proj"]
        n_ff = config.intermediate_size
        tensors += [
            enc.norm(f"{b}.attn_norm.weight", weights.norms[f"{p}.input_layernorm"]),
            enc.linear(f"{b}.attn_q.weight", _permute_rows(q, h), f"{p}.self_attn.q_proj"),
            enc.linear(f"{b}.attn_k.weight", _permute_rows(k, kvh), f"{p}.self_attn.k_proj"),
            enc.linear(f"{b}.attn_v.weight", v, f"{p}.self_attn.v_proj"),
            enc.linear(f"{b}.attn_output.weight", weights.linears[f"{p}.self_attn.o_proj"], f"{p}.self_attn.o_proj"),
            enc.norm(f"{b}.ffn_norm.weight", weights.norms[f"{p}.post_attention_layernorm"]),
            enc.linear(f"{b}.ffn_gate.weight", _rows(gate_up, 0, n_ff), f"{p}.mlp.gate_proj"),
            enc.linear(f"{b}.ffn_up.weight", _rows(gate_up, n_ff, 2 * n_ff), f"{p}.mlp.up_proj"),
            enc.linear(f"{b}.ffn_down.weight", weights.linears[f"{p}.mlp.down_proj"], f"{p}.mlp.down_proj"),
        ]
    tensors += [enc.norm("output_norm.weight", weights.final_norm),
                enc.float_tensor("output.weight", weights.lm_head, lm_head)]

    V = gguf.GGUFValueType
    file_type = {"tq2_0": gguf.LlamaFileType.MOSTLY_TQ2_0, "tq1_0": gguf.LlamaFileType.MOSTLY_TQ1_0,
                 "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[qtype]
    arch = "llama"
    kv = [
        ("general.name", name, V.STRING),
        ("general.file_type", int(file_type), V.UINT32),
        ("general.quantization_version", gguf.GGML_QUANT_VERSION, V.UINT32),
        (f"{arch}.vocab_size", config.vocab_size, V.UINT32),
        (f"{arch}.context_length", config.max_position_embeddings, V.UINT32),
        (f"{arch}.embedding_length", d, V.UINT32),
        (f"{arch}.block_count", config.num_hidden_layers, V.UINT32),
        (f"{arch}.feed_forward_length", config.intermediate_size, V.UINT32),
        (f"{arch}.attention.head_count", h, V.UINT32),
        (f"{arch}.attention.head_count_kv", kvh, V.UINT32),
        (f"{arch}.attention.key_length", hd, V.UINT32),
        (f"{arch}.attention.value_length", hd, V.UINT32),
        (f"{arch}.rope.dimension_count", hd, V.UINT32),
        (f"{arch}.rope.freq_base", float(config.rope_theta), V.FLOAT32),
        (f"{arch}.attention.layer_norm_rms_epsilon", float(config.rms_norm_eps), V.FLOAT32),
        *tok,
        ("ternarylm.scale_granularity", quant.granularity, V.STRING),
        ("ternarylm.activation_bits", quant.activation_bits, V.UINT32),
        *[(f"ternarylm.{k}", v, V.STRING if isinstance(v, str) else V.UINT64) for k, v in (source or {}).items()],
    ]
    return kv, tensors, enc.max_scale_rounding


def tokenizer_metadata(tok_json: str, vocab_size: int) -> list:
    """``tokenizer.ggml.*`` for a byte-level BPE tokenizer (GPT-2 style, what ternary-train trains):
    llama.cpp's ``gpt2`` model with the ``gpt-2`` pre-tokenizer gives the same ids. Tokens are the
    vocabulary's strings in id order (padded to the model's vocab_size with unused ``[PAD{i}]``),
    merges as ``"left right"``; added special tokens are CONTROL, other added tokens USER_DEFINED."""
    import gguf
    from tokenizers import Tokenizer

    from ternarylm.format.tokens import special_token_ids

    spec = json.loads(tok_json)
    model = spec.get("model") or {}
    kind = model.get("type")
    if kind != "BPE" or not _byte_level(spec.get("pre_tokenizer")) or spec.get("normalizer"):
        raise ValueError(f"the checkpoint's tokenizer is not a plain byte-level BPE (model {kind}, pre-tokenizer "
                         f"{(spec.get('pre_tokenizer') or {}).get('type')}, normalizer "
                         f"{(spec.get('normalizer') or {}).get('type')}); GGUF export writes GPT-2 style tokenizers "
                         "only - train with ternary-train's default tokenizer or export with ternary-export onnx")
    if model.get("ignore_merges"):
        raise ValueError("the checkpoint's BPE tokenizer has ignore_merges set, which llama.cpp's gpt-2 tokenizer "
                         "does not do; export with ternary-export onnx")
    tok = Tokenizer.from_str(tok_json)
    vocab = tok.get_vocab(with_added_tokens=True)
    n = len(vocab)
    if sorted(vocab.values()) != list(range(n)):
        raise ValueError("the checkpoint's tokenizer has gaps in its token ids; GGUF needs ids 0..n-1")
    if n > vocab_size:
        raise ValueError(f"the tokenizer has {n} tokens but the model's vocab_size is {vocab_size}; the checkpoint "
                         "is inconsistent - retrain with vocab_size >= the tokenizer's size")
    tokens = [""] * n
    for text, i in vocab.items():
        tokens[i] = text
    T = gguf.TokenType
    types = [int(T.NORMAL)] * n
    for added in spec.get("added_tokens") or []:
        types[added["id"]] = int(T.CONTROL if added.get("special") else T.USER_DEFINED)
    for i in range(n, vocab_size):  # rows the model has beyond the tokenizer (a pinned vocab_size)
        tokens.append(f"[PAD{i}]")
        types.append(int(T.UNUSED))
    merges = []
    for m in model.get("merges") or []:
        parts = m.split(" ") if isinstance(m, str) else list(m)
        if len(parts) != 2 or any(" " in p for p in parts):
            raise ValueError(f"the tokenizer's BPE merge {m!r} has a space inside a token, which GGUF's "
                             "'left right' merge strings cannot hold; export with ternary-export onnx")
        merges.append(" ".join(parts))
    special = special_token_ids(tok)
    plain, full = tok.encode("a", add_special_tokens=False).ids, tok.encode("a").ids
    add_bos, add_eos = full[:1] != plain[:1], full[-1:] != plain[-1:]  # what encode(prompt) adds
    V = gguf.GGUFValueType
    kv = [("tokenizer.ggml.model", "gpt2", V.STRING), ("tokenizer.ggml.pre", PRE_TOKENIZER, V.STRING),
          ("tokenizer.ggml.tokens", tokens, V.ARRAY), ("tokenizer.ggml.token_type", types, V.ARRAY),
          ("tokenizer.ggml.merges", merges, V.ARRAY)]
    for key, name in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("padding_token_id", "pad")):
        if special[name] is not None:
            kv.append((f"tokenizer.ggml.{key}", int(special[name]), V.UINT32))
    kv += [("tokenizer.ggml.add_bos_token", bool(add_bos), V.BOOL),
           ("tokenizer.ggml.add_eos_token", bool(add_eos), V.BOOL)]
    return kv


def _byte_level(pre) -> bool:
    """A ByteLevel pre-tokenizer with the GPT-2 regex and no prefix space (alone or the only step)."""
    if not pre:
        return False
    if pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers") or []
        return len(steps) == 1 and _byte_level(steps[0])
    return (pre.get("type") == "ByteLevel" and pre.get("use_regex", True) is True
            and not pre.get("add_prefix_space", False))


def _check_choice(option: str, value, choices):
    if value not in choices:
        raise ValueError(f"{option} must be one of {', '.join(choices)}, got {value!r}")


def _source_name(path) -> str:
    """The model's name: a run folder's (``runs/x/ckpt.pt`` -> x), or a Hugging Face folder's / hub name's own."""
    source = Path(path)
    return (source.resolve().parent.name if source.is_file() else source.name) or "ternarylm"


def _source_fields(ckpt_path, ckpt) -> dict:
    import ternarylm
    from ternarylm.export.source import source_sha256

    out = {"package_version": ternarylm.__version__, "source_checkpoint_sha256": source_sha256(ckpt_path, ckpt)}
    if isinstance(ckpt.get("step"), int):
        out["source_step"] = ckpt["step"]
    return out


# --- weights ------------------------------------------------------------------------------------------


def _rows(w, lo: int, hi: int):
    """Rows ``lo:hi`` of a logical weight (one module out of a fused q/k/v or gate/up)."""
    from ternarylm.export.weights import IntWeight, LinearParts, TernaryWeight

    if isinstance(w, LinearParts):  # parts are whole modules, so a module lies inside one part
        start = 0
        for _, part in w.parts:
            end = start + part.shape[0]
            if start <= lo and hi <= end:
                return _rows(part, lo - start, hi - start)
            start = end
        raise AssertionError(f"rows {lo}:{hi} straddle fused parts")
    if isinstance(w, TernaryWeight):
        return TernaryWeight(w.trits[lo:hi], w.scales[lo:hi])
    if isinstance(w, IntWeight):
        return IntWeight(w.codes[lo:hi], w.scales[lo:hi], w.bits)
    return w[lo:hi]


def permutation(n_rows: int, n_head: int) -> np.ndarray:
    """Row order llama.cpp's convert_hf_to_gguf.py gives q/k (``LlamaModel.permute``): per head,
    HF rows [first half | second half] become interleaved pairs, new row 2j <- j, 2j+1 <- j + d/2."""
    hd = n_rows // n_head
    return np.arange(n_rows).reshape(n_head, 2, hd // 2).swapaxes(1, 2).reshape(-1)


def _permute_rows(w, n_head: int):
    from ternarylm.export.weights import IntWeight, TernaryWeight

    idx = permutation(w.shape[0], n_head)
    if isinstance(w, TernaryWeight):
        return TernaryWeight(w.trits[idx], w.scales[idx])
    if isinstance(w, IntWeight):
        return IntWeight(w.codes[idx], w.scales[idx], w.bits)
    return w[idx]


class _Encoder:
    """Turns logical weights into GGUF tensors of the chosen types, checking block fit per tensor."""

    def __init__(self, gguf, qtype: str, config):
        self.gguf, self.qtype, self.config = gguf, qtype, config
        self.T = gguf.GGMLQuantizationType
        self.max_scale_rounding = 0.0

    def _size_name(self, k: int) -> str:
        c = self.config
        if k == c.hidden_size:
            return f"hidden_size {k}"
        if k == c.intermediate_size:
            return f"intermediate_size {k}"
        return f"row length {k}"

    def norm(self, name, w):
        return _Tensor(name, np.ascontiguousarray(w, dtype=np.float32), self.T.F32, tuple(w.shape))

    def float_tensor(self, name, w, kind: str):
        w = np.ascontiguousarray(w, dtype=np.float32)
        if kind == "f16":
            return _Tensor(name, w.astype(np.float16), self.T.F16, w.shape)
        qt = {"q8_0": self.T.Q8_0, "q4_0": self.T.Q4_0}[kind]
        return _Tensor(name, self.gguf.quants.quantize(w, qt), qt, w.shape)

    def linear(self, name, w, module: str):
        from ternarylm.export.weights import IntWeight, TernaryWeight

        if isinstance(w, TernaryWeight):
            return self._ternary(name, w, module)
        if isinstance(w, IntWeight):
            return self._int(name, w)
        w = np.ascontiguousarray(w, dtype=np.float32)  # a 16-bit (full precision) layer
        return _Tensor(name, w.astype(np.float16), self.T.F16, w.shape)

    def _fp16_scales(self, scales: np.ndarray, what: str) -> np.ndarray:
        s32 = np.asarray(scales, dtype=np.float32)
        s16 = s32.astype(np.float16)
        if not np.all(np.isfinite(s16)) or np.any((s16 == 0) & (s32 != 0)):
            raise ValueError(f"{what} has a scale outside fp16's range ({float(np.abs(s32).max()):.3g} / "
                             f"{float(np.abs(s32).min()):.3g}), which GGUF blocks store; export with ternary-export onnx")
        rel = np.abs(s16.astype(np.float32) - s32) / np.maximum(np.abs(s32), np.finfo(np.float32).tiny)
        self.max_scale_rounding = max(self.max_scale_rounding, float(rel.max(initial=0.0)))
        return s16

    def _ternary(self, name, w, module: str):
        n, k = w.trits.shape
        if self.qtype == "q4_0":
            if k % Q_BLOCK:
                raise ValueError(f"{self._size_name(k)} ({module}) is not a multiple of {Q_BLOCK}, which Q4_0 "
                                 "blocks need; export with ternary-export onnx")
            g = k // w.scales.shape[1]
            scales = np.repeat(w.scales, g // Q_BLOCK, axis=1)  # one per block of 32 (groups are 32/64/128/K)
            return _Tensor(name, _q4_0(w.trits, self._fp16_scales(scales, module)), self.T.Q4_0, (n, k))
        if k % TQ_BLOCK:
            raise ValueError(f"{self._size_name(k)} is not a multiple of {TQ_BLOCK}, which {self.qtype.upper()} "
                             f"blocks need ({module}); use --type q4_0 (exact, 4.5 bits/weight) or train with "
                             f"sizes that are multiples of {TQ_BLOCK}")
        if w.scales.shape[1] != 1:  # build_gguf refuses group scales first; a guard for direct callers
            raise ValueError(f"{module} has {w.scales.shape[1]} scales per row; {self.qtype.upper()} needs one")
        qt = self.T.TQ2_0 if self.qtype == "tq2_0" else self.T.TQ1_0
        # llama.cpp's own packing of the trits with d = 1, then d replaced by the row's fp16 scale:
        # the block's trits are bit-exact, its scale is the only rounding.
        packed = self.gguf.quants.quantize(w.trits.astype(np.float32), qt)
        nb = k // TQ_BLOCK
        blocks = packed.reshape(n, nb, -1).copy()
        d = self._fp16_scales(w.scales[:, 0], module)
        blocks[:, :, -2:] = np.repeat(d[:, None], nb, axis=1)[..., None].view(np.uint8)
        return _Tensor(name, blocks.reshape(n, -1), qt, (n, k))

    def _int(self, name, w):
        n, k = w.codes.shape
        if w.block_size != Q_BLOCK:
            raise ValueError(f"{name}: kept layer with block size {w.block_size}, expected {Q_BLOCK}")
        d = self._fp16_scales(w.scales, name)
        if w.bits == 4:
            return _Tensor(name, _q4_0(w.codes, d), self.T.Q4_0, (n, k))
        blocks = np.empty((n, k // Q_BLOCK, 2 + Q_BLOCK), np.uint8)
        blocks[:, :, :2] = d[..., None].view(np.uint8)
        blocks[:, :, 2:] = w.codes.astype(np.int8).reshape(n, k // Q_BLOCK, Q_BLOCK).view(np.uint8)
        return _Tensor(name, blocks.reshape(n, -1), self.T.Q8_0, (n, k))


def _q4_0(codes: np.ndarray, d16: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (fp16 d, then 16 bytes: low nibble = element j, high nibble = element j + 16) of
    signed ``codes`` in [-7, 7] with one fp16 scale per 32: value = (q - 8) * d, q = code + 8."""
    n, k = codes.shape
    q = (codes.astype(np.int16) + 8).astype(np.uint8).reshape(n, k // Q_BLOCK, 2, Q_BLOCK // 2)
    blocks = np.empty((n, k // Q_BLOCK, 2 + Q_BLOCK // 2), np.uint8)
    blocks[:, :, :2] = d16.reshape(n, k // Q_BLOCK)[..., None].view(np.uint8)
    blocks[:, :, 2:] = q[:, :, 0, :] | (q[:, :, 1, :] << 4)
    return blocks.reshape(n, -1)


# --- file -----------------------------------------------------------------------------------------------


def _write_atomic(out_path: Path, kv: list, tensors: list) -> None:
    import gguf

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        for key, value, vtype in kv:
            if vtype == gguf.GGUFValueType.ARRAY:
                writer.add_array(key, value)
            else:
                writer.add_key_value(key, value, vtype)
        for t in tensors:
            if t.qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                writer.add_tensor(t.name, t.data)
            else:
                writer.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
