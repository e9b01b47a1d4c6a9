"""``ai.ternarylm::TernaryMatMul``: the canonical ternary matmul, its schema and a function body.

Part of the folder contract: a canonical ``model.onnx`` calls this op, so the exporter that writes it
and the lowering passes that rewrite it (``lowering.py``, also run on a device by ``--tune``) share
this one definition.

``Y = X @ (trits * scales).T`` where trits are unpacked from ``W_packed`` (layouts in ``trits.py``).
With ``act_bits=8`` X is first fake-quantised per row (absmax int8), exactly as ``BitLinear`` does in
training. The model-local function body below uses only standard ONNX ops, so ``onnx.reference``,
onnxruntime and any other runtime can execute the op without a plugin; the lowering passes replace
it with fast kernels for specific runtimes. Example node::

    TernaryMatMul(X [1, 5, 256], W_packed uint8 [64, 64], scales [64, 1];
                  K=256, N=64, packing="2bit", group_size=256, act_bits=8, trits_per_byte=4, code_base=4)
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, defs, helper

from ternarylm.format.onnx_names import OPSET, TERNARY_DOMAIN

OP_TYPE = "TernaryMatMul"
ATTRIBUTES = ("K", "N", "packing", "group_size", "act_bits", "trits_per_byte", "code_base")


def register_schema():
    """Register the op schema with ``onnx.defs`` so ``onnx.checker`` (full check) knows it."""
    if defs.has(OP_TYPE, TERNARY_DOMAIN):
        return
    a = defs.OpSchema.AttrType
    schema = defs.OpSchema(
        OP_TYPE, TERNARY_DOMAIN, 1,
        doc="Matmul with packed ternary {-1,0,+1} weights and absmean scales (see ternarylm docs/FORMATS.md).",
        inputs=[defs.OpSchema.FormalParameter("X", "T", "activations [..., K]"),
                defs.OpSchema.FormalParameter("W_packed", "tensor(uint8)", "packed trits [N, ceil(K/per)]"),
                defs.OpSchema.FormalParameter("scales", "tensor(float)", "scales [N, K/group_size]")],
        outputs=[defs.OpSchema.FormalParameter("Y", "T", "[..., N]")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "activation type")],
        attributes=[defs.OpSchema.Attribute("K", a.INT, "input features"),
                    defs.OpSchema.Attribute("N", a.INT, "output features"),
                    defs.OpSchema.Attribute("packing", a.STRING, "'2bit' or 'base3'"),
                    defs.OpSchema.Attribute("group_size", a.INT, "input columns per scale"),
                    defs.OpSchema.Attribute("act_bits", a.INT, "8: per-row absmax int8 fake-quant of X; 0: off"),
                    defs.OpSchema.Attribute("trits_per_byte", a.INT, "4 (2bit) or 5 (base3)"),
                    defs.OpSchema.Attribute("code_base", a.INT, "4 (2bit) or 3 (base3)")],
    )
    defs.register_schema(schema)


def _ref_const(out: str, attr: str) -> onnx.NodeProto:
    node = helper.make_node("Constant", [], [out])
    ref = onnx.AttributeProto()
    ref.name, ref.ref_attr_name, ref.type = "value_int", attr, onnx.AttributeProto.INT
    node.attribute.append(ref)
    return node


def function_proto() -> onnx.FunctionProto:
    """The function body: unpack codes by integer division, dequantise, optional act-quant, MatMul."""
    n = helper.make_node
    i64 = TensorProto.INT64
    nodes = [
        _ref_const("K", "K"), _ref_const("N", "N"), _ref_const("G", "group_size"),
        _ref_const("per", "trits_per_byte"), _ref_const("base", "code_base"), _ref_const("act_bits", "act_bits"),
        n("Constant", [], ["zero"], value=helper.make_tensor("zero", i64, [], [0])),
        n("Constant", [], ["one"], value=helper.make_tensor("one", i64, [], [1])),
        n("Constant", [], ["minus1"], value=helper.make_tensor("minus1", i64, [1], [-1])),
        n("Constant", [], ["ax0"], value=helper.make_tensor("ax0", i64, [1], [0])),
        n("Constant", [], ["ax_last"], value=helper.make_tensor("ax_last", i64, [1], [-1])),
        # digits: codes[n, b, i] = (byte // base**i) % base   (LSB-first for 2bit, base-3 digits for base3)
        n("Range", ["zero", "per", "one"], ["digit_idx"]),
        n("Pow", ["base", "digit_idx"], ["powers"]),
        n("Cast", ["W_packed"], ["bytes64"], to=i64),
        n("Unsqueeze", ["bytes64", "ax_last"], ["bytes3d"]),
        n("Div", ["bytes3d", "powers"], ["shifted"]),
        n("Mod", ["shifted", "base"], ["codes3d"]),
        n("Unsqueeze", ["N", "ax0"], ["N1"]),
        n("Concat", ["N1", "minus1"], ["rows_shape"], axis=0),
        n("Reshape", ["codes3d", "rows_shape"], ["codes_padded"]),
        n("Unsqueeze", ["K", "ax0"], ["K1"]),
        n("Constant", [], ["start0"], value=helper.make_tensor("start0", i64, [1], [0])),
        n("Constant", [], ["axis1"], value=helper.make_tensor("axis1", i64, [1], [1])),
        n("Slice", ["codes_padded", "start0", "K1", "axis1"], ["codes"]),
        n("Sub", ["codes", "one"], ["trits64"]),
        n("Cast", ["trits64"], ["trits"], to=TensorProto.FLOAT),
        # dequantise: [N, K/G, G] * scales[N, K/G, 1]
        n("Div", ["K", "G"], ["n_groups"]),
        n("Unsqueeze", ["n_groups", "ax0"], ["n_groups1"]),
        n("Unsqueeze", ["G", "ax0"], ["G1"]),
        n("Concat", ["N1", "n_groups1", "G1"], ["grouped_shape"], axis=0),
        n("Reshape", ["trits", "grouped_shape"], ["trits_grouped"]),
        n("Unsqueeze", ["scales", "ax_last"], ["scales3d"]),
        n("Mul", ["trits_grouped", "scales3d"], ["w_grouped"]),
        n("Concat", ["N1", "K1"], ["w_shape"], axis=0),
        n("Reshape", ["w_grouped", "w_shape"], ["w_float"]),
        n("CastLike", ["w_float", "X"], ["w"]),
        n("Transpose", ["w"], ["w_t"], perm=[1, 0]),
        # activation fake-quant (per row absmax -> int8 grid), selected by act_bits != 0
        n("Abs", ["X"], ["x_abs"]),
        n("ReduceMax", ["x_abs", "ax_last"], ["x_max"], keepdims=1),
        n("Constant", [], ["eps"], value=helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-5])),
        n("CastLike", ["eps", "X"], ["eps_t"]),
        n("Max", ["x_max", "eps_t"], ["x_max_safe"]),
        n("Constant", [], ["q127"], value=helper.make_tensor("q127", TensorProto.FLOAT, [], [127.0])),
        n("Constant", [], ["qm128"], value=helper.make_tensor("qm128", TensorProto.FLOAT, [], [-128.0])),
        n("CastLike", ["q127", "X"], ["q127_t"]),
        n("CastLike", ["qm128", "X"], ["qm128_t"]),
        n("Div", ["q127_t", "x_max_safe"], ["x_scale"]),
        n("Mul", ["X", "x_scale"], ["x_scaled"]),
        n("Round", ["x_scaled"], ["x_round"]),
        n("Clip", ["x_round", "qm128_t", "q127_t"], ["x_clip"]),
        n("Div", ["x_clip", "x_scale"], ["x_q"]),
        n("Cast", ["act_bits"], ["act_on"], to=TensorProto.BOOL),
        n("Where", ["act_on", "x_q", "X"], ["x_in"]),
        n("MatMul", ["x_in", "w_t"], ["Y"]),
    ]
    return helper.make_function(TERNARY_DOMAIN, OP_TYPE, ["X", "W_packed", "scales"], ["Y"], nodes,
                                [helper.make_opsetid("", OPSET)], attributes=list(ATTRIBUTES))


register_schema()
