"""Lowering passes: graph rewrites of the canonical model for one runtime. Each pass takes the model
and the config's weight map and rewrites both in place; registries, not if/elif chains, pick them.
They live in ``format`` because both the exporter and the device tuner (``ternary-profile --tune``,
without torch) run them, and they must keep model.onnx and config.json's weight map in step.

- ``ternary_to_matmul_nbits(bits, block_size, accuracy_level)``: TernaryMatMul -> com.microsoft
  MatMulNBits with codes t + zero_point (exact; 2-bit: zp 1, 4-bit: zp 8).
- ``ternary_to_dense(dtype)``: TernaryMatMul -> MatMul on dequantised float weights (the dense twin).
- ``int_to_matmul_nbits(accuracy_level)``: a kept 4/8-bit layer (activation fake-quant + blocked
  DequantizeLinear + MatMul) -> MatMulNBits bits 4/8 with its exact codes (q + 2**(bits-1), the
  default zero point) and block scales.
- ``int_to_dense(dtype)``: a kept 4/8-bit layer -> MatMul on its dequantised float weights.
- ``quantize_head(bits, block_size)``: the float LM-head MatMul -> MatMulNBits (block absmax, symmetric);
  for standard-op graphs the exporter's ``head_int_weight`` hands the emitter the same codes instead.
- ``quantize_embedding(bits, block_size)``: the float Gather table -> int8/int4 codes + block scales,
  dequantised after the Gather with standard ops (only the gathered rows are ever dequantised).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ternarylm.format.codecs import (
    from_matmul_nbits,
    pack_codes,
    symmetric_block_quantize,
    to_matmul_nbits,
)
from ternarylm.format.custom_op import OP_TYPE
from ternarylm.format.entries import (
    DENSE,
    EMBEDDING,
    INT,
    NBITS,
    TERNARY,
    TERNARY_BITS,
    is_ternary_entry,
)
from ternarylm.format.onnx_names import MS_DOMAIN, TERNARY_DOMAIN
from ternarylm.format.trits import dequantize, unpack


class _Graph:
    """Initializer lookup and replacement over a ModelProto's main graph."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.inits = {t.name: t for t in self.graph.initializer}

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.inits[name])

    def remove(self, name: str):
        self.graph.initializer.remove(self.inits.pop(name))

    def add(self, name: str, array: np.ndarray) -> str:
        tensor = numpy_helper.from_array(np.ascontiguousarray(array), name=name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name


def _activation_dtype(model) -> type:
    """float16 when the decoder runs in fp16 (its KV inputs say so): MatMulNBits scales must match."""
    for inp in model.graph.input:
        if inp.name.startswith("past_key_values") and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16:
            return np.float16
    return np.float32


def ternary_weight_arrays(g: _Graph, entry: dict):
    """(trits int8 [N, K], scales float32 [N, groups]) of a ternary or ternary-as-MatMulNBits entry."""
    if entry["kind"] == TERNARY:
        return unpack(g.array(entry["packed"]), entry["K"], entry["packing"]), g.array(entry["scales"])
    zp = g.array(entry["zero_points"]) if entry.get("zero_points") else None
    trits, scales = from_matmul_nbits(g.array(entry["B"]), g.array(entry["scales"]), entry["N"], entry["K"],
                                      entry["bits"], entry["block_size"], zero_points=zp)
    if trits.min() < -1 or trits.max() > 1:
        raise ValueError(f"MatMulNBits weights {entry['B']} are not ternary; only ternary layers can be re-lowered")
    return trits.astype(np.int8), scales


def _ternary_nodes(model, weight_map):
    """(node, logical name, entry) for every ternary matmul, canonical or already lowered."""
    by_input = {}
    for name, e in weight_map.items():
        if e["kind"] == TERNARY:
            by_input[e["packed"]] = name
        elif is_ternary_entry(name, e):
            by_input[e["B"]] = name
    for node in list(model.graph.node):
        if node.op_type in (OP_TYPE, "MatMulNBits") and len(node.input) > 1 and node.input[1] in by_input:
            name = by_input[node.input[1]]
            yield node, name, weight_map[name]


def _remove_entry_initializers(g: _Graph, entry: dict):
    for key in ("packed", "scales", "B", "zero_points"):
        if key in entry and entry[key] in g.inits:
            g.remove(entry[key])


def ternary_to_matmul_nbits(model, weight_map, bits: int = 2, block_size: int = 32, accuracy_level: int = 4):
    if bits not in (2, 4, 8):
        raise ValueError(f"MatMulNBits bits must be 2, 4 or 8, got {bits}")
    g = _Graph(model)
    # Encode every layer before touching the graph: a refusal (e.g. a block larger than the scale
    # group) leaves the model and the weight map as they were.
    encoded = [(node, name, e, to_matmul_nbits(*ternary_weight_arrays(g, e), bits, block_size))
               for node, name, e in list(_ternary_nodes(model, weight_map))]
    for node, name, e, (packed, block_scales, zps) in encoded:
        _remove_entry_initializers(g, e)
        b = g.add(f"{name}.weight.q{bits}", packed)
        s = g.add(f"{name}.weight.q{bits}.scales", block_scales.reshape(-1).astype(_activation_dtype(model)))
        z = g.add(f"{name}.weight.q{bits}.zero_points", zps)
        base = node.name.rsplit("/", 1)[0]
        new = helper.make_node("MatMulNBits", [node.input[0], b, s, z], list(node.output),
                               name=f"{base}/MatMulNBits", domain=MS_DOMAIN,
                               K=e["K"], N=e["N"], bits=bits, block_size=block_size, accuracy_level=accuracy_level)
        _replace_node(model.graph, node, new)
        weight_map[name] = {"kind": NBITS, "B": b, "scales": s, "zero_points": z, "bits": bits,
                            "block_size": block_size, "K": e["K"], "N": e["N"], "act_bits": e["act_bits"],
                            "accuracy_level": accuracy_level, "weight_bits": TERNARY_BITS}
    _drop_function(model, OP_TYPE)


def ternary_to_dense(model, weight_map, dtype=np.float32):
    g = _Graph(model)
    for node, name, e in list(_ternary_nodes(model, weight_map)):
        trits, scales = ternary_weight_arrays(g, e)
        w = dequantize(trits, scales).T.astype(dtype)  # [K, N]
        _remove_entry_initializers(g, e)
        weight = g.add(f"{name}.weight", w)
        new = helper.make_node("MatMul", [node.input[0], weight], list(node.output),
                               name=f"{node.name.rsplit('/', 1)[0]}/MatMul")
        _replace_node(model.graph, node, new)
        weight_map[name] = {"kind": DENSE, "weight": weight, "layout": "KN", "dtype": np.dtype(dtype).name,
                            "K": e["K"], "N": e["N"], "weight_bits": TERNARY_BITS}
    _drop_function(model, OP_TYPE)


def _int_linears(model, weight_map):
    """``(name, entry, nodes, x, matmul)`` per kept 4/8-bit layer: the nodes under its path (activation
    quant, DequantizeLinear, Transpose, Cast, MatMul), its input activation and its final MatMul."""
    produced_by_graph = {o for n in model.graph.node for o in n.output}
    for name, e in list(weight_map.items()):
        if e.get("kind") != INT:
            continue
        dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == e["weight"])
        base = dq.name.rsplit("/", 1)[0] + "/"
        nodes = [n for n in model.graph.node if n.name.startswith(base)]
        inside = {o for n in nodes for o in n.output}
        outside = {i for n in nodes for i in n.input if i and i not in inside and i in produced_by_graph}
        outside |= {i for n in nodes for i in n.input if i and i in {v.name for v in model.graph.input}}
        if len(outside) != 1:
            raise ValueError(f"{name}: expected one activation input under {base}, found {sorted(outside)}; "
                             "re-export from the checkpoint")
        matmul = next(n for n in nodes if n.op_type == "MatMul")
        yield name, e, nodes, outside.pop(), matmul


def _replace_nodes(graph, old: list, anchor, new):
    """Put ``new`` where ``anchor`` was (its inputs are produced before it) and drop ``old``."""
    _replace_node(graph, anchor, new)
    for n in old:
        if n is not anchor:
            graph.node.remove(n)


def _int_arrays(g: _Graph, e: dict):
    """(codes int8 [N, K], scales float32 [N, K / block_size]) of a kept integer layer."""
    codes = g.array(e["weight"]).astype(np.int8)
    if e.get("layout", "NK") != "NK":
        codes = codes.T
    return codes, g.array(e["scales"]).astype(np.float32).reshape(e["N"], -1)


def int_to_matmul_nbits(model, weight_map, accuracy_level: int = 4):
    """Kept 4/8-bit layers -> MatMulNBits (their act fake-quant is replaced by MatMulNBits' own, as
    for ternary layers). Codes are exact; no zero-point input (the default 2**(bits-1) applies).
    Returns what was done (config.json's ``export.lowering.int_matmul``), or None when no layer is kept."""
    g = _Graph(model)
    act = _activation_dtype(model)
    kept = list(_int_linears(model, weight_map))
    if not kept:
        return None
    info = {"op": "com.microsoft::MatMulNBits", "bits": sorted({int(e["bits"]) for _, e, *_ in kept}),
            "block_size": int(kept[0][1]["block_size"]), "accuracy_level": accuracy_level}
    for name, e, nodes, x, matmul in kept:
        codes, scales = _int_arrays(g, e)
        bits, bs = int(e["bits"]), int(e["block_size"])
        packed, block_scales, _ = to_matmul_nbits(codes, scales, bits, bs)
        for key in ("weight", "scales"):
            g.remove(e[key])
        b = g.add(f"{name}.weight.q{bits}", packed)
        s = g.add(f"{name}.weight.q{bits}.scales", block_scales.reshape(-1).astype(act))
        base = matmul.name.rsplit("/", 1)[0]
        new = helper.make_node("MatMulNBits", [x, b, s], list(matmul.output), name=f"{base}/MatMulNBits",
                               domain=MS_DOMAIN, K=e["K"], N=e["N"], bits=bits, block_size=bs,
                               accuracy_level=accuracy_level)
        _replace_nodes(model.graph, nodes, matmul, new)
        weight_map[name] = {"kind": NBITS, "B": b, "scales": s, "zero_points": None, "bits": bits,
                            "block_size": bs, "K": e["K"], "N": e["N"], "act_bits": e["act_bits"],
                            "accuracy_level": accuracy_level, "weight_bits": bits}
    prune_constants(model)
    return info


def int_to_dense(model, weight_map, dtype=np.float32):
    """Kept 4/8-bit layers -> MatMul on ``codes * scales`` (the dense twin; no activation quant)."""
    g = _Graph(model)
    for name, e, nodes, x, matmul in list(_int_linears(model, weight_map)):
        codes, scales = _int_arrays(g, e)
        w = (codes.astype(np.float32) * np.repeat(scales, int(e["block_size"]), axis=1)).T.astype(dtype)
        for key in ("weight", "scales"):
            g.remove(e[key])
        weight = g.add(f"{name}.weight", w)
        new = helper.make_node("MatMul", [x, weight], list(matmul.output),
                               name=f"{matmul.name.rsplit('/', 1)[0]}/MatMul")
        _replace_nodes(model.graph, nodes, matmul, new)
        weight_map[name] = {"kind": DENSE, "weight": weight, "layout": "KN", "dtype": np.dtype(dtype).name,
                            "K": e["K"], "N": e["N"], "weight_bits": e["weight_bits"]}
    prune_constants(model)


def prune_constants(model):
    """Drop shared ``const/...`` initializers that no node reads any more (after a rewrite)."""
    used = {i for n in model.graph.node for i in n.input}
    for t in [t for t in model.graph.initializer if t.name.startswith("const/") and t.name not in used]:
        model.graph.initializer.remove(t)


def quantize_head(model, weight_map, bits: int = 8, block_size: int = 32, accuracy_level: int = 4):
    """The float LM-head MatMul -> onnxruntime's MatMulNBits, block-quantised int8/int4."""
    if bits not in (4, 8):
        raise ValueError(f"LM head bits must be 4 or 8, got {bits}")
    g = _Graph(model)
    e = weight_map["lm_head"]
    node = next(n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] == e["weight"])
    w_nk = g.array(e["weight"]).T  # [K, N] stored; symmetric_block_quantize reads it in row chunks
    k = w_nk.shape[1]
    if k % block_size:
        raise ValueError(f"block size {block_size} does not divide hidden size {k}")
    codes, scales = symmetric_block_quantize(w_nk, bits, block_size)
    signed = codes.astype(np.int16) - 2 ** (bits - 1)  # the ternary packer handles any signed codes
    packed, block_scales, zps = to_matmul_nbits(signed, scales, bits, block_size)
    g.remove(e["weight"])
    b = g.add(f"lm_head.weight.q{bits}", packed)
    s = g.add(f"lm_head.weight.q{bits}.scales", block_scales.reshape(-1).astype(_activation_dtype(model)))
    z = g.add(f"lm_head.weight.q{bits}.zero_points", zps)
    new = helper.make_node("MatMulNBits", [node.input[0], b, s, z], list(node.output), name="/lm_head/MatMulNBits",
                           domain=MS_DOMAIN, K=k, N=w_nk.shape[0], bits=bits, block_size=block_size,
                           accuracy_level=accuracy_level)
    _replace_node(model.graph, node, new)
    weight_map["lm_head"] = {"kind": NBITS, "B": b, "scales": s, "zero_points": z, "bits": bits,
                             "block_size": block_size, "K": k, "N": w_nk.shape[0], "act_bits": 0,
                             "accuracy_level": accuracy_level, "weight_bits": bits}


def quantize_embedding(model, weight_map, bits: int = 8, block_size: int = 32):
    """Gather(table) -> Gather(codes) and Gather(scales), unpacked/dequantised with standard ops."""
    if bits not in (4, 8):
        raise ValueError(f"embedding bits must be 4 or 8, got {bits}")
    g = _Graph(model)
    e = weight_map["model.embed_tokens"]
    node = next(n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == e["weight"])
    table = g.array(e["weight"])
    out_dtype = table.dtype
    d = table.shape[1]
    if d % block_size:
        raise ValueError(f"block size {block_size} does not divide hidden size {d}")
    codes, scales = symmetric_block_quantize(table, bits, block_size)  # codes = q + zp
    del table
    signed = (codes.astype(np.int16) - 2 ** (bits - 1)).astype(np.int8)
    g.remove(e["weight"])
    p = "/model/embed_tokens"
    ids = node.input[1]
    new_nodes = []
    if bits == 8:
        q = g.add("model.embed_tokens.weight.q8", signed)
        rows = f"{p}/GatherCodes/output_0"
        new_nodes.append(helper.make_node("Gather", [q, ids], [rows], name=f"{p}/GatherCodes"))
    else:  # two int4 values per byte, low nibble first, stored as uint8 code (q + 8)
        q = g.add("model.embed_tokens.weight.q4", pack_codes(codes, 4))
        shifts = g.add("model.embed_tokens.q4_shifts", np.array([0, 4], np.uint8))
        mask = g.add("model.embed_tokens.q4_mask", np.array(15, np.uint8))
        eight = g.add("model.embed_tokens.q4_zero_point", np.array(8, np.int8))
        flat = g.add("model.embed_tokens.q4_shape", np.array([0, 0, d], np.int64))
        axis = g.add("model.embed_tokens.q4_axis", np.array([-1], np.int64))
        n = [f"{p}/{x}/output_0" for x in ("GatherCodes", "Unsqueeze", "BitShift", "BitwiseAnd", "Reshape",
                                           "CastInt8", "SubZeroPoint")]
        new_nodes += [
            helper.make_node("Gather", [q, ids], [n[0]], name=f"{p}/GatherCodes"),
            helper.make_node("Unsqueeze", [n[0], axis], [n[1]], name=f"{p}/Unsqueeze"),
            helper.make_node("BitShift", [n[1], shifts], [n[2]], name=f"{p}/BitShift", direction="RIGHT"),
            helper.make_node("BitwiseAnd", [n[2], mask], [n[3]], name=f"{p}/BitwiseAnd"),
            helper.make_node("Reshape", [n[3], flat], [n[4]], name=f"{p}/Reshape"),
            helper.make_node("Cast", [n[4]], [n[5]], name=f"{p}/CastInt8", to=onnx.TensorProto.INT8),
            helper.make_node("Sub", [n[5], eight], [n[6]], name=f"{p}/SubZeroPoint"),
        ]
        rows = n[6]
    s = g.add(f"model.embed_tokens.weight.q{bits}.scales", scales)
    per_block = g.add("model.embed_tokens.block_shape", np.array([0, 0, d // block_size, block_size], np.int64))
    unblock = g.add("model.embed_tokens.row_shape", np.array([0, 0, d], np.int64))
    last = g.add("model.embed_tokens.last_axis", np.array([-1], np.int64))
    to = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(out_dtype))
    names = [f"{p}/{x}/output_0" for x in ("Cast", "ReshapeBlocks", "GatherScales", "UnsqueezeScales", "Mul")]
    new_nodes += [
        helper.make_node("Cast", [rows], [names[0]], name=f"{p}/Cast", to=to),
        helper.make_node("Reshape", [names[0], per_block], [names[1]], name=f"{p}/ReshapeBlocks"),
        helper.make_node("Gather", [s, ids], [names[2]], name=f"{p}/GatherScales"),
        helper.make_node("Unsqueeze", [names[2], last], [names[3]], name=f"{p}/UnsqueezeScales"),
    ]
    if to != onnx.TensorProto.FLOAT:
        new_nodes.append(helper.make_node("Cast", [names[3]], [names[3] + "_cast"], name=f"{p}/CastScales", to=to))
        names[3] += "_cast"
    new_nodes += [
        helper.make_node("Mul", [names[1], names[3]], [names[4]], name=f"{p}/Mul"),
        helper.make_node("Reshape", [names[4], unblock], list(node.output), name=f"{p}/ReshapeRows"),
    ]
    idx = list(model.graph.node).index(node)
    model.graph.node.remove(node)
    for j, nn in enumerate(new_nodes):
        model.graph.node.insert(idx + j, nn)
    weight_map["model.embed_tokens"] = {"kind": EMBEDDING, "quant": q, "scales": s, "bits": bits,
                                        "block_size": block_size, "dtype": np.dtype(out_dtype).name}


def _replace_node(graph, old, new):
    idx = list(graph.node).index(old)
    graph.node.remove(old)
    graph.node.insert(idx, new)


def _drop_function(model, op_type):
    if not any(n.op_type == op_type for n in model.graph.node):
        keep = [f for f in model.functions if f.name != op_type]
        del model.functions[:]
        model.functions.extend(keep)
        keep_ops = [o for o in model.opset_import if o.domain != TERNARY_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(keep_ops)
