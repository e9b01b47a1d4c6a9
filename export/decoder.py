"""Emit the canonical decoder graph: KV cache, the ONNX LLM ecosystem's IO names, TernaryMatMul linears.

Two attention styles share everything else:

- ``standard``: only standard ONNX ops (opset 21) plus the TernaryMatMul function: runs anywhere,
  ``onnx.reference`` included; the ``portable``, ``fp32`` and ``fp16`` targets use it.
- ``fused``: onnxruntime's contrib decoder ops (GroupQueryAttention with rotary inside,
  SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization, QuickGelu as SiLU), as
  onnxruntime-genai's model builder emits them; the ``ort-*`` targets use it.

Linears are emitted by their kept precision: TernaryMatMul (ternary), per-row int8 activation
fake-quant + blocked DequantizeLinear + MatMul (4/8-bit kept layers, standard ops), MatMul (full
precision: fp checkpoints and 16-bit layers); a fused group whose parts differ is emitted part by
part and concatenated. The lowering passes then rewrite them for a runtime. Node names read as
paths: ``/model/layers.0/attn/...``.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import helper
from ternarylm.export.graph import FLOAT, FLOAT16, INT64, GraphBuilder
from ternarylm.export.weights import (
    FULL_BITS,
    ExportWeights,
    IntWeight,
    LinearParts,
    TernaryWeight,
    rope_tables,
)

from ternarylm.format.custom_op import OP_TYPE, function_proto
from ternarylm.format.entries import CONCAT, DENSE, EMBEDDING, INT, NORM, TERNARY
from ternarylm.format.onnx_names import LOGITS_TO_KEEP, MS_DOMAIN, OPSET, TERNARY_DOMAIN
from ternarylm.format.trits import EPS, TRITS_PER_BYTE, pack

NEG_INF = {FLOAT: -1e9, FLOAT16: -65504.0}


class DecoderEmitter:
    def __init__(self, arch: dict, weights: ExportWeights, *, attention: str = "standard",
                 dtype: int = FLOAT, packing: str = "2bit", act_bits: int = 8):
        self.a, self.w = arch, weights
        self.attention, self.dt, self.packing, self.act_bits = attention, dtype, packing, act_bits
        self.np_dt = np.float16 if dtype == FLOAT16 else np.float32
        self.g = GraphBuilder("ternarylm_decoder")
        self.weight_map: dict[str, dict] = {}
        self.uses_ternary_op = False

    # ---- primitives -------------------------------------------------------------------------
    def linear(self, x: str, name: str, path: str) -> str:
        return self.emit_linear(x, name, self.w.linears[name], path)

    def emit_linear(self, x: str, name: str, w, path: str) -> str:
        """One logical linear by its kind: ternary, kept integer, full precision, or mixed parts."""
        if isinstance(w, LinearParts):
            return self.concat_parts(x, name, w, path)
        if isinstance(w, TernaryWeight):
            return self.ternary(x, name, w, path)
        if isinstance(w, IntWeight):
            return self.int_linear(x, name, w, path)
        return self.dense(x, name, w, path, weight_bits=FULL_BITS)

    def ternary(self, x: str, name: str, w: TernaryWeight, path: str) -> str:
        n, k = w.shape
        g = k // w.scales.shape[1]
        packed = self.g.initializer(f"{name}.weight.packed", pack(w.trits, self.packing))
        scales = self.g.initializer(f"{name}.weight.scales", w.scales.astype(np.float32))
        self.weight_map[name] = dict(kind=TERNARY, packed=packed, scales=scales, packing=self.packing,
                                     K=k, N=n, group_size=g, act_bits=self.act_bits, weight_bits=w.bits)
        self.uses_ternary_op = True
        per = TRITS_PER_BYTE[self.packing]
        return self.g.op(OP_TYPE, [x, packed, scales], f"{path}/TernaryMatMul", domain=TERNARY_DOMAIN,
                         K=k, N=n, packing=self.packing, group_size=g, act_bits=self.act_bits,
                         trits_per_byte=per, code_base=4 if per == 4 else 3)

    def int_linear(self, x: str, name: str, w: IntWeight, path: str, act_bits: int | None = None) -> str:
        """A 4/8-bit layer with standard ops only: per-row int8 activation fake-quant (as training),
        then ``DequantizeLinear`` (blocked, INT4/INT8 ``[N, K]``, blocks along K) -> Transpose -> MatMul.
        ``[N, K]`` + Transpose, not ``[K, N]`` with axis 0: onnxruntime fuses DequantizeLinear(axis 0)
        + MatMul into MatMulNBits with block-quantised activations, which is no longer exact.
        ``act_bits`` overrides the model's (0 for a block-quantised LM head: weights only)."""
        act_bits = self.act_bits if act_bits is None else act_bits
        n, k = w.shape
        storage = ml_dtypes.int4 if w.bits == 4 else np.int8
        codes = self.g.initializer(f"{name}.weight.q{w.bits}", w.codes.astype(storage))
        scales = self.g.initializer(f"{name}.weight.q{w.bits}.scales", w.scales.astype(np.float32))
        self.weight_map[name] = {"kind": INT, "weight": codes, "scales": scales, "layout": "NK",
                                 "dtype": "int4" if w.bits == 4 else "int8", "bits": w.bits,
                                 "block_size": w.block_size, "K": k, "N": n, "act_bits": act_bits,
                                 "weight_bits": w.bits}
        x_in = self.quantize_activations(x, f"{path}/act_quant") if act_bits == 8 else x
        w_nk = self.g.op("DequantizeLinear", [codes, scales], f"{path}/DequantizeLinear", axis=1,
                         block_size=w.block_size)
        w_kn = self.g.op("Transpose", [w_nk], f"{path}/Transpose", perm=[1, 0])
        if self.dt != FLOAT:
            w_kn = self.g.op("Cast", [w_kn], f"{path}/Cast", to=self.dt)
        return self.g.op("MatMul", [x_in, w_kn], f"{path}/MatMul")

    def quantize_activations(self, x: str, path: str) -> str:
        """Per-row absmax int8 fake-quant, the op sequence of TernaryMatMul's body (= BitLinear's)."""
        g, dt = self.g, self.np_dt
        x_max = g.op("ReduceMax", [g.op("Abs", [x], f"{path}/Abs"), g.const([-1])], f"{path}/ReduceMax", keepdims=1)
        safe = g.op("Max", [x_max, g.const(EPS, dt)], f"{path}/Max")
        scale = g.op("Div", [g.const(127.0, dt), safe], f"{path}/Scale")
        rounded = g.op("Round", [g.op("Mul", [x, scale], f"{path}/Mul")], f"{path}/Round")
        clipped = g.op("Clip", [rounded, g.const(-128.0, dt), g.const(127.0, dt)], f"{path}/Clip")
        return g.op("Div", [clipped, scale], f"{path}/Div")

    def concat_parts(self, x: str, name: str, w: LinearParts, path: str) -> str:
        """A fused linear whose parts differ in precision: each part, then Concat on the last axis."""
        parent = path.rsplit("/", 1)[0]
        outs = [self.emit_linear(x, part, pw, f"{parent}/{part.rsplit('.', 1)[1]}") for part, pw in w.parts]
        n, k = w.shape
        self.weight_map[name] = {"kind": CONCAT, "parts": [part for part, _ in w.parts], "axis": -1, "K": k, "N": n}
        return self.g.op("Concat", outs, f"{path}/Concat", axis=-1)

    def dense(self, x: str, name: str, w_nk: np.ndarray, path: str, weight_bits: int | None = None) -> str:
        weight = self.g.initializer(f"{name}.weight", np.ascontiguousarray(w_nk.T, dtype=self.np_dt))
        self.weight_map[name] = dict(kind=DENSE, weight=weight, layout="KN", dtype=np.dtype(self.np_dt).name,
                                     K=w_nk.shape[1], N=w_nk.shape[0])
        if weight_bits is not None:
            self.weight_map[name]["weight_bits"] = weight_bits
        return self.g.op("MatMul", [x, weight], f"{path}/MatMul")

    def rms_norm(self, x: str, name: str, path: str, weight: np.ndarray, np_dtype=None) -> str:
        """Standard-op RMSNorm in the graph's float type, or ``np_dtype`` (float32 inside an fp16 graph)."""
        np_dtype = np_dtype or self.np_dt
        gamma = self.norm_weight(name, weight, np_dtype)
        sq = self.g.op("Mul", [x, x], f"{path}/Pow")
        mean = self.g.op("ReduceMean", [sq, self.g.const([-1])], f"{path}/ReduceMean", keepdims=1)
        eps = self.g.const(self.a["rms_norm_eps"], np_dtype)
        rms = self.g.op("Sqrt", [self.g.op("Add", [mean, eps], f"{path}/AddEps")], f"{path}/Sqrt")
        return self.g.op("Mul", [self.g.op("Div", [x, rms], f"{path}/Div"), gamma], f"{path}/MulGamma")

    def norm_weight(self, name: str, weight: np.ndarray, np_dtype=None) -> str:
        init = self.g.initializer(f"{name}.weight", weight.astype(np_dtype or self.np_dt))
        self.weight_map[name] = dict(kind=NORM, weight=init)
        return init

    # ---- graph ------------------------------------------------------------------------------
    def build(self):
        a, g = self.a, self.g
        L, hkv, hd = a["num_hidden_layers"], a["num_key_value_heads"], a["head_dim"]
        g.input("input_ids", INT64, ["batch_size", "sequence_length"])
        g.input("attention_mask", INT64, ["batch_size", "total_sequence_length"])
        g.input("position_ids", INT64, ["batch_size", "sequence_length"])
        for i in range(L):
            for kv in ("key", "value"):
                g.input(f"past_key_values.{i}.{kv}", self.dt, ["batch_size", hkv, "past_sequence_length", hd])
        g.output("logits", FLOAT, ["batch_size", "logits_length", a["vocab_size"]])  # T, or logits_to_keep
        for i in range(L):
            for kv in ("key", "value"):
                g.output(f"present.{i}.{kv}", self.dt, ["batch_size", hkv, "total_sequence_length", hd])

        table = g.initializer("model.embed_tokens.weight", self.w.embed.astype(self.np_dt, copy=False))
        self.weight_map["model.embed_tokens"] = dict(kind=EMBEDDING, weight=table, dtype=np.dtype(self.np_dt).name)
        x = g.op("Gather", [table, "input_ids"], "/model/embed_tokens/Gather")
        if self.attention == "fused":
            h = self.build_fused_layers(x)
        else:
            h = self.build_standard_layers(x)
        h = self.keep_last_positions(h)
        if isinstance(self.w.lm_head, IntWeight):  # block-quantised head in standard ops (portable)
            logits = self.int_linear(h, "lm_head", self.w.lm_head, "/lm_head", act_bits=0)
        else:
            logits = self.dense(h, "lm_head", self.w.lm_head, "/lm_head")
        if self.dt != FLOAT:
            logits = g.op("Cast", [logits], "/lm_head/Cast", to=FLOAT)
        g.op("Identity", [logits], "/logits/Identity", outputs=["logits"])
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(TERNARY_DOMAIN, 1),
                  helper.make_opsetid(MS_DOMAIN, 1)]
        functions = [function_proto()] if self.uses_ternary_op else []
        return g.model(opsets, functions, doc="TernaryLM decoder exported by ternarylm"), self.weight_map

    def keep_last_positions(self, h: str) -> str:
        """The optional input ``logits_to_keep`` (int64 scalar, default 0 = every position; transformers'
        argument of that name): k > 0 computes the LM head for the last k positions only, which is all a
        prefill needs. A client that does not feed it gets the full ``(B, T, V)`` logits, as before."""
        g = self.g
        keep = g.optional_input(LOGITS_TO_KEEP, np.array(0, np.int64))
        start = g.op("Neg", [g.op("Reshape", [keep, g.const([1])], "/logits_to_keep/Reshape")], "/logits_to_keep/Neg")
        return g.op("Slice", [h, start, g.const([np.iinfo(np.int64).max]), g.const([1])], "/logits_to_keep/Slice")

    # ---- standard-op decoder ---------------------------------------------------------------
    def build_standard_layers(self, x: str) -> str:
        a, g = self.a, self.g
        hd = a["head_dim"]
        cos_t, sin_t = rope_tables(hd, a["rope_theta"], a["max_position_embeddings"])
        cos_full = g.initializer("model.rotary.cos", np.concatenate([cos_t, cos_t], 1).astype(self.np_dt))
        sin_full = g.initializer("model.rotary.sin", np.concatenate([sin_t, sin_t], 1).astype(self.np_dt))
        axis1 = g.const([1])
        cos = g.op("Unsqueeze", [g.op("Gather", [cos_full, "position_ids"], "/model/rotary/GatherCos"), axis1],
                   "/model/rotary/UnsqueezeCos")
        sin = g.op("Unsqueeze", [g.op("Gather", [sin_full, "position_ids"], "/model/rotary/GatherSin"), axis1],
                   "/model/rotary/UnsqueezeSin")
        bias = self.attention_bias()
        for i in range(a["num_hidden_layers"]):
            p, path = f"model.layers.{i}", f"/model/layers.{i}"
            h = self.rms_norm(x, f"{p}.input_layernorm", f"{path}/input_layernorm", self.w.norms[f"{p}.input_layernorm"])
            attn = self.standard_attention(h, i, cos, sin, bias)
            x = g.op("Add", [x, attn], f"{path}/attn/ResidualAdd")
            h = self.rms_norm(x, f"{p}.post_attention_layernorm", f"{path}/post_attention_layernorm",
                              self.w.norms[f"{p}.post_attention_layernorm"])
            x = g.op("Add", [x, self.mlp(h, i, fused=False)], f"{path}/mlp/ResidualAdd")
        return self.rms_norm(x, "model.norm", "/model/norm", self.w.final_norm)

    def attention_bias(self) -> str:
        """[B, 1, T, S] additive mask: causal and padding, the diagonal always visible."""
        g, p = self.g, "/model/attn_mask"
        one, zero = g.const(1), g.const(0)
        t = g.op("Gather", [g.op("Shape", ["input_ids"], f"{p}/ShapeIds"), one], f"{p}/SeqLen", axis=0)
        s = g.op("Gather", [g.op("Shape", ["attention_mask"], f"{p}/ShapeMask"), one], f"{p}/TotalLen", axis=0)
        past = g.op("Sub", [s, t], f"{p}/PastLen")
        q_pos = g.op("Unsqueeze", [g.op("Range", [past, s, one], f"{p}/QueryPos"), g.const([1])], f"{p}/QueryCol")
        k_pos = g.op("Unsqueeze", [g.op("Range", [zero, s, one], f"{p}/KeyPos"), g.const([0])], f"{p}/KeyRow")
        causal = g.op("LessOrEqual", [k_pos, q_pos], f"{p}/Causal")
        diag = g.op("Equal", [k_pos, q_pos], f"{p}/Diagonal")
        keep = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], f"{p}/CastBool", to=9), g.const([1, 2])],
                    f"{p}/PadMask")
        allowed = g.op("Or", [g.op("And", [causal, keep], f"{p}/And"), diag], f"{p}/Or")
        return g.op("Where", [allowed, g.const(0.0, self.np_dt), g.const(NEG_INF[self.dt], self.np_dt)],
                    f"{p}/Where")

    def rope(self, x: str, cos: str, sin: str, path: str) -> str:
        g, half = self.g, self.a["head_dim"] // 2
        x1, x2 = g.op("Split", [x, g.const([half, half])], f"{path}/Split", n_out=2, axis=-1)
        rotated = g.op("Concat", [g.op("Neg", [x2], f"{path}/Neg"), x1], f"{path}/Concat", axis=-1)
        return g.op("Add", [g.op("Mul", [x, cos], f"{path}/MulCos"), g.op("Mul", [rotated, sin], f"{path}/MulSin")],
                    f"{path}/Add")

    def standard_attention(self, h: str, i: int, cos: str, sin: str, bias: str) -> str:
        a, g = self.a, self.g
        nh, hkv, hd = a["num_attention_heads"], a["num_key_value_heads"], a["head_dim"]
        p, path = f"model.layers.{i}.self_attn", f"/model/layers.{i}/attn"
        qkv = self.linear(h, f"{p}.qkv_proj", f"{path}/qkv_proj")
        q, k, v = g.op("Split", [qkv, g.const([nh * hd, hkv * hd, hkv * hd])], f"{path}/SplitQKV", n_out=3, axis=-1)

        def heads(t, n, name):  # (B, T, n*hd) -> (B, n, T, hd)
            r = g.op("Reshape", [t, g.const([0, 0, n, hd])], f"{path}/{name}/Reshape")
            return g.op("Transpose", [r], f"{path}/{name}/Transpose", perm=[0, 2, 1, 3])

        q = self.rope(heads(q, nh, "q"), cos, sin, f"{path}/q_rotary")
        k = self.rope(heads(k, hkv, "k"), cos, sin, f"{path}/k_rotary")
        v = heads(v, hkv, "v")
        k = g.op("Concat", [f"past_key_values.{i}.key", k], f"{path}/k_cache/Concat", axis=2,
                 outputs=[f"present.{i}.key"])
        v = g.op("Concat", [f"past_key_values.{i}.value", v], f"{path}/v_cache/Concat", axis=2,
                 outputs=[f"present.{i}.value"])
        if hkv != nh:  # grouped-query attention: repeat each kv head nh/hkv times
            k, v = (self.repeat_kv(t, nh // hkv, f"{path}/{n}_repeat") for t, n in ((k, "k"), (v, "v")))
        kt = g.op("Transpose", [k], f"{path}/k/TransposeT", perm=[0, 1, 3, 2])
        scores = g.op("Mul", [g.op("MatMul", [q, kt], f"{path}/QK"), g.const(1.0 / np.sqrt(hd), self.np_dt)],
                      f"{path}/Scale")
        probs = g.op("Softmax", [g.op("Add", [scores, bias], f"{path}/Mask")], f"{path}/Softmax", axis=-1)
        y = g.op("Transpose", [g.op("MatMul", [probs, v], f"{path}/PV")], f"{path}/y/Transpose", perm=[0, 2, 1, 3])
        y = g.op("Reshape", [y, g.const([0, 0, nh * hd])], f"{path}/y/Reshape")
        return self.linear(self.sub_norm(y, f"{p}.attn_sub_norm", f"{path}/attn_sub_norm"), f"{p}.o_proj",
                           f"{path}/o_proj")

    def repeat_kv(self, t: str, rep: int, path: str) -> str:
        g = self.g
        shape = g.op("Shape", [t], f"{path}/Shape")
        b_h = g.op("Slice", [shape, g.const([0]), g.const([2])], f"{path}/SliceBH")
        s_d = g.op("Slice", [shape, g.const([2]), g.const([4])], f"{path}/SliceSD")
        expanded_shape = g.op("Concat", [b_h, g.const([rep]), s_d], f"{path}/ExpandShape", axis=0)
        x = g.op("Expand", [g.op("Unsqueeze", [t, g.const([2])], f"{path}/Unsqueeze"), expanded_shape],
                 f"{path}/Expand")
        h_total = g.op("Mul", [g.op("Slice", [shape, g.const([1]), g.const([2])], f"{path}/SliceH"),
                               g.const([rep])], f"{path}/Heads")
        merged = g.op("Concat", [g.op("Slice", [shape, g.const([0]), g.const([1])], f"{path}/SliceB"), h_total, s_d],
                      f"{path}/MergedShape", axis=0)
        return g.op("Reshape", [x, merged], f"{path}/Reshape")

    def mlp(self, h: str, i: int, fused: bool) -> str:
        g, inter = self.g, self.a["intermediate_size"]
        p, path = f"model.layers.{i}.mlp", f"/model/layers.{i}/mlp"
        gu = self.linear(h, f"{p}.gate_up_proj", f"{path}/gate_up_proj")
        gate, up = g.op("Split", [gu, g.const([inter, inter])], f"{path}/Split", n_out=2, axis=-1)
        # In an fp16 graph relu(gate)^2 * up and the sub-norm's x*x overflow easily: they run in float32.
        wide = self.dt == FLOAT16 and (self.a.get("hidden_act", "silu") == "relu2" or self.a.get("sub_norms"))
        if wide:
            gate = g.op("Cast", [gate], f"{path}/CastGate", to=FLOAT)
            up = g.op("Cast", [up], f"{path}/CastUp", to=FLOAT)
        if self.a.get("hidden_act", "silu") == "relu2":  # BitNet b1.58: relu(gate)^2
            relu = g.op("Relu", [gate], f"{path}/act_fn/Relu")
            act = g.op("Mul", [relu, relu], f"{path}/act_fn/Square")
        elif fused:
            act = g.op("QuickGelu", [gate], f"{path}/act_fn/QuickGelu", domain=MS_DOMAIN, alpha=1.0)
        else:
            act = g.op("Mul", [gate, g.op("Sigmoid", [gate], f"{path}/act_fn/Sigmoid")], f"{path}/act_fn/Mul")
        h = self.sub_norm(g.op("Mul", [act, up], f"{path}/Mul"), f"{p}.ffn_sub_norm", f"{path}/ffn_sub_norm",
                          is_float32=wide)
        if wide:
            h = g.op("Cast", [h], f"{path}/CastBack", to=self.dt)
        return self.linear(h, f"{p}.down_proj", f"{path}/down_proj")

    def sub_norm(self, x: str, name: str, path: str, is_float32: bool = False) -> str:
        """BitNet's RMSNorm before o_proj / down_proj where the architecture has them (``sub_norms``); in an
        fp16 graph it runs in float32 (as transformers' BitNetRMSNorm does). ``is_float32``: ``x`` already is."""
        if not self.a.get("sub_norms"):
            return x
        if self.dt == FLOAT or is_float32:
            return self.rms_norm(x, name, path, self.w.norms[name], np.float32 if is_float32 else None)
        x32 = self.g.op("Cast", [x], f"{path}/CastIn", to=FLOAT)
        y = self.rms_norm(x32, name, path, self.w.norms[name], np.float32)
        return self.g.op("Cast", [y], f"{path}/CastOut", to=self.dt)

    # ---- onnxruntime fused decoder ---------------------------------------------------------
    def build_fused_layers(self, x: str) -> str:
        a, g = self.a, self.g
        eps = float(a["rms_norm_eps"])
        cos_t, sin_t = rope_tables(a["head_dim"], a["rope_theta"], a["max_position_embeddings"])
        cos = g.initializer("model.rotary.cos_cache", cos_t.astype(self.np_dt))
        sin = g.initializer("model.rotary.sin_cache", sin_t.astype(self.np_dt))
        p = "/model/attn_mask"
        seqlens = g.op("Cast", [g.op("Sub", [g.op("ReduceSum", ["attention_mask", g.const([1])], f"{p}/ReduceSum",
                                                   keepdims=0), g.const(1)], f"{p}/Sub")],
                       f"{p}/SeqLensK", to=6)
        total = g.op("Cast", [g.op("Gather", [g.op("Shape", ["attention_mask"], f"{p}/Shape"), g.const(1)],
                                   f"{p}/TotalLen", axis=0)], f"{p}/TotalSeqLen", to=6)
        residual, delta = x, None
        for i in range(a["num_hidden_layers"]):
            pre, path = f"model.layers.{i}", f"/model/layers.{i}"
            if delta is None:  # standard ops once: SimplifiedLayerNormalization fails onnx.checker
                h = self.rms_norm(residual, f"{pre}.input_layernorm", f"{path}/input_layernorm",
                                  self.w.norms[f"{pre}.input_layernorm"])
            else:
                gamma = self.norm_weight(f"{pre}.input_layernorm", self.w.norms[f"{pre}.input_layernorm"])
                h, _, _, residual = g.op("SkipSimplifiedLayerNormalization", [residual, delta, gamma],
                                         f"{path}/input_layernorm/SkipLayerNorm", n_out=4, domain=MS_DOMAIN,
                                         epsilon=eps)
            attn = self.fused_attention(h, i, seqlens, total, cos, sin)
            gamma = self.norm_weight(f"{pre}.post_attention_layernorm", self.w.norms[f"{pre}.post_attention_layernorm"])
            h, _, _, residual = g.op("SkipSimplifiedLayerNormalization", [residual, attn, gamma],
                                     f"{path}/post_attention_layernorm/SkipLayerNorm", n_out=4, domain=MS_DOMAIN,
                                     epsilon=eps)
            delta = self.mlp(h, i, fused=True)
        gamma = self.norm_weight("model.norm", self.w.final_norm)
        out, _, _, _ = g.op("SkipSimplifiedLayerNormalization", [residual, delta, gamma], "/model/norm/SkipLayerNorm",
                            n_out=4, domain=MS_DOMAIN, epsilon=eps)
        return out

    def fused_attention(self, h, i, seqlens, total, cos, sin) -> str:
        a, g = self.a, self.g
        p, path = f"model.layers.{i}.self_attn", f"/model/layers.{i}/attn"
        qkv = self.linear(h, f"{p}.qkv_proj", f"{path}/qkv_proj")
        y = g.op("GroupQueryAttention",
                 [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens, total, cos, sin],
                 f"{path}/GroupQueryAttention", domain=MS_DOMAIN,
                 outputs=[f"{path}/GroupQueryAttention/output_0", f"present.{i}.key", f"present.{i}.value"],
                 num_heads=a["num_attention_heads"], kv_num_heads=a["num_key_value_heads"], do_rotary=1,
                 rotary_interleaved=0, scale=float(1.0 / np.sqrt(a["head_dim"])))
        return self.linear(self.sub_norm(y, f"{p}.attn_sub_norm", f"{path}/attn_sub_norm"), f"{p}.o_proj",
                           f"{path}/o_proj")


def architecture(config) -> dict:
    return dict(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
                num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim,
                intermediate_size=config.intermediate_size, max_position_embeddings=config.max_position_embeddings,
                rope_theta=config.rope_theta, rms_norm_eps=config.rms_norm_eps,
                hidden_act=config.hidden_act, sub_norms=config.sub_norms)
