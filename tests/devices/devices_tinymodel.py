"""A tiny decoder export folder built with onnx.helper, for testing the profiler without the exporter.

It follows docs/FORMATS.md section 2 exactly at its edges (IO names, shapes, dtypes, config.json,
manifest.json with sha256 + bytes) and is attention-free inside: per layer the current keys/values
are concatenated to the past ones (present.N.*), the mean of the present values is mixed back into
the hidden state (so logits depend on the cache), then one ternary matmul runs as

    ``nbits``     com.microsoft::MatMulNBits bits=2 (ort-cpu) or, with ``bits=4``, ort-arm64-nodot
    ``dense``     a plain fp32 MatMul on the dequantised weights (the fp32 baseline)
    ``portable``  ai.ternarylm::TernaryMatMul (2bit packing, act_bits 0) with a model-local function body
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ternarylm.format.codecs import to_matmul_nbits
from ternarylm.format.trits import dequantize, pack

# ternary-profile options that keep CLI tests fast: each measurement is a fresh process of about 0.5 s.
FAST = ["--prompt-len", "16", "--decode-tokens", "8", "--warmup", "0", "--repeats", "1"]

ARCH = {"vocab_size": 256, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 128, "max_position_embeddings": 512,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-6}


def _weights(seed: int, arch: dict) -> dict:
    rng = np.random.default_rng(seed)
    d, v, L = arch["hidden_size"], arch["vocab_size"], arch["num_hidden_layers"]
    w = {"embed": rng.standard_normal((v, d)).astype(np.float32) * 0.5,
         "pos": rng.standard_normal((arch["max_position_embeddings"], d)).astype(np.float32) * 0.1,
         "head": (rng.standard_normal((d, v)) / np.sqrt(d)).astype(np.float32)}
    for i in range(L):
        w[f"k{i}"] = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
        w[f"v{i}"] = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
        w[f"t{i}"] = rng.integers(-1, 2, size=(d, d)).astype(np.int8)  # ternary [N, K]
        w[f"s{i}"] = np.full((d, 1), 1.0 / np.sqrt(d), np.float32)  # per-row scale
    return w


def _ternary_function() -> onnx.FunctionProto:
    """TernaryMatMul(X, W_packed, scales) for the 2bit packing, with standard ops only."""
    gs = helper.make_node("Constant", [], ["gs0"], value_int=0)
    gs.attribute[0].ref_attr_name = "group_size"  # the group size comes from the calling node
    nodes = [gs,
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Unsqueeze", ["gs0", "zero"], ["gs"]),
        helper.make_node("Constant", [], ["shifts"], value=numpy_helper.from_array(np.array([0, 2, 4, 6], np.uint8))),
        helper.make_node("Constant", [], ["four"], value=numpy_helper.from_array(np.array(4, np.uint8))),
        helper.make_node("Constant", [], ["last"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Constant", [], ["flat"], value=numpy_helper.from_array(np.array([0, -1], np.int64))),
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1.0, np.float32))),
        helper.make_node("Unsqueeze", ["W_packed", "last"], ["w3"]),
        helper.make_node("BitShift", ["w3", "shifts"], ["sh"], direction="RIGHT"),
        helper.make_node("Mod", ["sh", "four"], ["codes"]),
        helper.make_node("Reshape", ["codes", "flat"], ["codes2"]),
        helper.make_node("Cast", ["codes2"], ["cf"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["cf", "one"], ["trits"]),
        helper.make_node("Concat", ["flat", "gs"], ["gshape"], axis=0),
        helper.make_node("Reshape", ["trits", "gshape"], ["t3"]),
        helper.make_node("Unsqueeze", ["scales", "last"], ["s3"]),
        helper.make_node("Mul", ["t3", "s3"], ["w3d"]),
        helper.make_node("Reshape", ["w3d", "flat"], ["w"]),
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["X", "wt"], ["Y"]),
    ]
    return helper.make_function("ai.ternarylm", "TernaryMatMul", ["X", "W_packed", "scales"], ["Y"], nodes,
                                [helper.make_opsetid("", 17)],
                                attributes=["K", "N", "packing", "group_size", "act_bits"])


def build_model(variant: str = "nbits", **kwargs) -> onnx.ModelProto:
    return build(variant, **kwargs)[0]


def build(variant: str = "nbits", *, block_size: int = 32, accuracy_level: int = 4, kv_dtype: str = "float32",
          seed: int = 0, arch: dict | None = None, bits: int = 2) -> tuple[onnx.ModelProto, dict]:
    """The model and its config.json weight map (docs/FORMATS.md kinds: ternary / nbits / dense)."""
    arch = dict(ARCH, **(arch or {}))
    w = _weights(seed, arch)
    d, L = arch["hidden_size"], arch["num_hidden_layers"]
    kvh, hd = arch["num_key_value_heads"], arch["head_dim"]
    assert kvh * hd == d
    kv_type = TensorProto.FLOAT16 if kv_dtype == "float16" else TensorProto.FLOAT
    inits = [numpy_helper.from_array(w["embed"], "embed"), numpy_helper.from_array(w["pos"], "pos_table"),
             numpy_helper.from_array(w["head"], "lm_head"),
             numpy_helper.from_array(np.array([0, 0, kvh, hd], np.int64), "kv_shape"),
             numpy_helper.from_array(np.array([0, 1, d], np.int64), "ctx_shape"),
             numpy_helper.from_array(np.array(0.01, np.float32), "mask_w"),
             numpy_helper.from_array(np.array(0.5, np.float32), "mix_w")]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_sequence"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", arch["vocab_size"]])]
    nodes = [helper.make_node("Gather", ["embed", "input_ids"], ["tok"]),
             helper.make_node("Gather", ["pos_table", "position_ids"], ["pos"]),
             helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["maskf"], ["mask_mean"], keepdims=0),
             helper.make_node("Mul", ["mask_mean", "mask_w"], ["mask_term"]),
             helper.make_node("Add", ["tok", "pos"], ["h0a"]),
             helper.make_node("Add", ["h0a", "mask_term"], ["h0"])]
    functions = []
    wmap = {"model.embed_tokens": {"kind": "embedding", "weight": "embed", "dtype": "float32"},
            "lm_head": {"kind": "dense", "weight": "lm_head", "layout": "KN", "dtype": "float32"}}
    for i in range(L):
        x = f"h{i}"
        pre = f"/model/layers.{i}"
        for kind in ("key", "value"):
            kw = "k" if kind == "key" else "v"
            past, present = f"past_key_values.{i}.{kind}", f"present.{i}.{kind}"
            inputs.append(helper.make_tensor_value_info(past, kv_type, ["batch", kvh, "past_sequence", hd]))
            outputs.append(helper.make_tensor_value_info(present, kv_type, ["batch", kvh, "total_sequence", hd]))
            inits.append(numpy_helper.from_array(w[f"{kw}{i}"], f"{pre}.{kw}_proj"))
            cur = f"{pre}/{kind}"
            nodes += [helper.make_node("MatMul", [x, f"{pre}.{kw}_proj"], [cur + "/mm"]),
                      helper.make_node("Reshape", [cur + "/mm", "kv_shape"], [cur + "/r"]),
                      helper.make_node("Transpose", [cur + "/r"], [cur + "/t"], perm=[0, 2, 1, 3])]
            last = cur + "/t"
            if kv_type == TensorProto.FLOAT16:
                nodes.append(helper.make_node("Cast", [last], [cur + "/h"], to=kv_type))
                last = cur + "/h"
            nodes.append(helper.make_node("Concat", [past, last], [present], axis=2))
        ctx = f"{pre}/ctx"
        pv = f"present.{i}.value"
        if kv_type == TensorProto.FLOAT16:
            nodes.append(helper.make_node("Cast", [pv], [ctx + "/f"], to=TensorProto.FLOAT))
            pv = ctx + "/f"
        nodes += [helper.make_node("ReduceMean", [pv], [ctx + "/mean"], axes=[2], keepdims=0),
                  helper.make_node("Reshape", [ctx + "/mean", "ctx_shape"], [ctx + "/r"]),
                  helper.make_node("Mul", [ctx + "/r", "mix_w"], [ctx + "/s"]),
                  helper.make_node("Add", [x, ctx + "/s"], [f"{pre}/hc"])]
        t, s = w[f"t{i}"], w[f"s{i}"]
        mm_in, mm_out = f"{pre}/hc", f"{pre}/mlp/out"
        if variant == "dense":
            inits.append(numpy_helper.from_array(dequantize(t, s).T.copy(), f"{pre}.mlp.weight"))
            nodes.append(helper.make_node("MatMul", [mm_in, f"{pre}.mlp.weight"], [mm_out]))
            entry = {"kind": "dense", "weight": f"{pre}.mlp.weight", "layout": "KN", "dtype": "float32"}
        elif variant == "nbits":
            b, sc, zp = to_matmul_nbits(t, s, bits=bits, block_size=block_size)
            inits += [numpy_helper.from_array(b, f"{pre}.mlp.B"), numpy_helper.from_array(sc, f"{pre}.mlp.scales"),
                      numpy_helper.from_array(zp, f"{pre}.mlp.zp")]
            nodes.append(helper.make_node(
                "MatMulNBits", [mm_in, f"{pre}.mlp.B", f"{pre}.mlp.scales", f"{pre}.mlp.zp"], [mm_out],
                domain="com.microsoft", K=d, N=d, bits=bits, block_size=block_size, accuracy_level=accuracy_level))
            entry = {"kind": "nbits", "B": f"{pre}.mlp.B", "scales": f"{pre}.mlp.scales", "zero_points": f"{pre}.mlp.zp",
                     "bits": bits, "block_size": block_size, "K": d, "N": d, "act_bits": 0,
                     "accuracy_level": accuracy_level}
        elif variant == "portable":
            inits += [numpy_helper.from_array(pack(t, "2bit"), f"{pre}.mlp.packed"),
                      numpy_helper.from_array(s, f"{pre}.mlp.scales")]
            nodes.append(helper.make_node(
                "TernaryMatMul", [mm_in, f"{pre}.mlp.packed", f"{pre}.mlp.scales"], [mm_out],
                domain="ai.ternarylm", K=d, N=d, packing="2bit", group_size=d, act_bits=0))
            entry = {"kind": "ternary", "packed": f"{pre}.mlp.packed", "scales": f"{pre}.mlp.scales",
                     "packing": "2bit", "K": d, "N": d, "group_size": d, "act_bits": 0}
        else:
            raise ValueError(variant)
        wmap[f"model.layers.{i}.mlp.down_proj"] = entry
        nodes.append(helper.make_node("Add", [f"{pre}/hc", mm_out], [f"h{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{L}", "lm_head"], ["logits"]))
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    if variant == "portable":
        opsets.append(helper.make_opsetid("ai.ternarylm", 1))
        functions.append(_ternary_function())
    for k, n in enumerate(nodes):  # path-like node names, as the exporter writes them
        n.name = n.name or f"/tiny/{k}/{n.op_type}"
    graph = helper.make_graph(nodes, "tiny-decoder", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=opsets, functions=functions, producer_name="ternarylm-tests")
    model.ir_version = 9
    return model, wmap


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_folder(out: Path, variant: str = "nbits", target: str | None = None, arch: dict | None = None,
                 **kwargs) -> Path:
    """Write an export folder (model.onnx, config.json, manifest.json) and return its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arch = dict(ARCH, **(arch or {}))
    target = target or {"nbits": "ort-cpu", "dense": "fp32", "portable": "portable"}[variant]
    model, wmap = build(variant, arch=arch, **kwargs)
    onnx.save(model, out / "model.onnx")
    config = {"format": "ternarylm-export", "format_version": 1, "architecture": arch,
              "export": {"target": target, "packing": "2bit", "act_bits": 0, "attention": "standard",
                         "activation_dtype": kwargs.get("kv_dtype", "float32")},
              "weights": wmap, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    files = {n: {"sha256": _sha(out / n), "bytes": (out / n).stat().st_size} for n in ("model.onnx", "config.json")}
    manifest = {"format": "ternarylm-export", "format_version": 1, "package_version": "0.1.0",
                "target": target, "packing": "2bit", "source_checkpoint_sha256": "0" * 64, "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out
