"""onnxruntime's ``com.microsoft::MatMulNBits`` run on hand-made codes, checked against a NumPy product
written from onnxruntime's documented layout, and the project's encoder checked against the same bytes.

Why: every exported model's ternary matmuls run through this op, and the runtimes' own readers share
the project's codec; a layout bug (scales stored transposed, codes packed in the wrong order) moves
the logits of a real model by a few percent only, but moves these products by O(1).

The layout, from docs/ContribOperators.md (com.microsoft.MatMulNBits) of onnxruntime:

- ``B`` uint8 ``[N, k_blocks, block_size * bits / 8]``, ``k_blocks = ceil(K / block_size)``: each row's
  codes along K, packed inside each block, the first code in the lowest bits of its byte;
- ``scales`` ``[N, k_blocks]`` (row-major: the scale of row n, block j is element ``n * k_blocks + j``);
- ``zero_points`` (optional) uint8 ``[N, ceil(k_blocks * bits / 8)]``, packed like ``B`` per row;
  without them the zero point is ``2**(bits - 1)``;
- ``W[n, k] = (code[n, k] - zp[n, k // bs]) * scale[n, k // bs]`` and ``Y = A @ W.T``.

Tolerance (accuracy_level 0: A stays fp32, the dot products are fp32): ``|Y - Y_ref| <= 1e-6 *
(|A| @ |W|.T)`` elementwise, ``Y_ref`` in float64. An fp32 dot product of K terms is off by at most
``K * 2**-24 * sum|a w|`` (2.3e-5 at K = 384) and typically by ``sqrt(K) * 2**-24`` (1.2e-6); onnxruntime
1.32 measured <= 1.4e-7. Any layout error is of the order of ``sum|a w|`` itself.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ternarylm.format.codecs import (
    from_matmul_nbits,
    pack_codes,
    to_matmul_nbits,
    unpack_codes,
)

TOL = 1e-6
CASES = [(bits, bs) for bits in (2, 4, 8) for bs in (32, 64, 128)]


def spec_pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes ``[..., L]`` -> bytes ``[..., L * bits / 8]``: code ``i`` of each byte at bit ``bits * i``."""
    per = 8 // bits
    codes = np.asarray(codes, np.uint8)
    out = np.zeros(codes.shape[:-1] + (codes.shape[-1] // per,), np.uint8)
    for i in range(per):
        out |= (codes[..., i::per] << np.uint8(bits * i)).astype(np.uint8)
    return out


def spec_inputs(codes: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, bits: int, bs: int):
    """(B, scales, zero points) as onnxruntime documents them, from codes ``[N, K]`` (K padded with 0
    to whole blocks), per-block scales and zero points ``[N, k_blocks]``."""
    n, k = codes.shape
    blocks = -(-k // bs)
    padded = np.zeros((n, blocks * bs), np.uint8)
    padded[:, :k] = codes
    b = spec_pack(padded.reshape(n, blocks, bs), bits)
    if zero_points is None:
        return b, scales.reshape(-1), None
    per = 8 // bits
    zp = np.zeros((n, -(-blocks // per) * per), np.uint8)
    zp[:, :blocks] = zero_points
    return b, scales.reshape(-1), spec_pack(zp, bits).reshape(-1)


def spec_weight(codes, scales, zero_points, bits: int, bs: int) -> np.ndarray:
    """``W[n, k] = (code - zp[n, k // bs]) * scale[n, k // bs]`` in float64."""
    k = codes.shape[1]
    if zero_points is None:
        zero_points = np.full(scales.shape, 2 ** (bits - 1))
    block = np.arange(k) // bs
    return (codes.astype(np.float64) - zero_points[:, block]) * scales.astype(np.float64)[:, block]


def run_matmul_nbits(a: np.ndarray, b, scales, zero_points, *, n: int, k: int, bits: int, bs: int) -> np.ndarray:
    """One MatMulNBits node (accuracy_level 0) in an onnxruntime CPU session; returns ``Y``."""
    inits = [numpy_helper.from_array(np.ascontiguousarray(b), "B"),
             numpy_helper.from_array(np.ascontiguousarray(scales, np.float32), "scales")]
    names = ["A", "B", "scales"]
    if zero_points is not None:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(zero_points, np.uint8), "zero_points"))
        names.append("zero_points")
    node = helper.make_node("MatMulNBits", names, ["Y"], domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=bs, accuracy_level=0)
    graph = helper.make_graph([node], "matmul_nbits", [helper.make_tensor_value_info("A", TensorProto.FLOAT, a.shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, (a.shape[0], n))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"A": a})[0]


def assert_product(y: np.ndarray, a: np.ndarray, w: np.ndarray):
    """``y == a @ w.T`` within TOL of the fp32 dot-product scale (module docstring)."""
    a64 = a.astype(np.float64)
    err = np.abs(y - a64 @ w.T)
    bound = TOL * (np.abs(a64) @ np.abs(w).T)
    assert (err <= bound).all(), f"max error / bound = {(err / bound).max():.3g}"


@pytest.mark.parametrize("explicit_zero_points", [True, False], ids=["zp", "default-zp"])
@pytest.mark.parametrize("ragged", [False, True], ids=["K=3bs", "K=2bs+16"])
@pytest.mark.parametrize("bits,bs", CASES)
def test_ort_matches_numpy_on_hand_made_codes(bits, bs, ragged, explicit_zero_points):
    """Random codes, a different scale per (row, block) and random zero points: ORT's product is the
    documented dequantisation's (3 blocks per row so the packed zero points need padding at 2 and 4 bits;
    K a block short of 16 columns, which ORT accepts, exercises the padded last block)."""
    rng = np.random.default_rng(1000 * bits + bs + ragged)
    n, m = 5, 3
    k = 2 * bs + 16 if ragged else 3 * bs
    blocks = -(-k // bs)
    codes = rng.integers(0, 2**bits, (n, k)).astype(np.uint8)
    scales = rng.uniform(0.25, 2.0, (n, blocks)).astype(np.float32)
    zero_points = rng.integers(0, 2**bits, (n, blocks)).astype(np.uint8) if explicit_zero_points else None
    a = rng.standard_normal((m, k)).astype(np.float32)
    b, s, z = spec_inputs(codes, scales, zero_points, bits, bs)
    y = run_matmul_nbits(a, b, s, z, n=n, k=k, bits=bits, bs=bs)
    assert_product(y, a, spec_weight(codes, scales, zero_points, bits, bs))


@pytest.mark.parametrize("bits,bs", CASES)
def test_project_codec_reads_and_writes_the_documented_bytes(bits, bs):
    """``pack_codes`` / ``unpack_codes`` / ``from_matmul_nbits`` agree byte for byte with the documented
    layout (explicit, non-default zero points; codes minus zero point and per-block scales come back)."""
    rng = np.random.default_rng(7 * bits + bs)
    n, k = 4, 3 * bs
    codes = rng.integers(0, 2**bits, (n, k)).astype(np.uint8)
    scales = rng.uniform(0.25, 2.0, (n, 3)).astype(np.float32)
    zero_points = rng.integers(0, 2**bits, (n, 3)).astype(np.uint8)
    b, s, z = spec_inputs(codes, scales, zero_points, bits, bs)
    np.testing.assert_array_equal(pack_codes(codes.reshape(n, 3, bs), bits), b)
    np.testing.assert_array_equal(unpack_codes(b, bits).reshape(n, k), codes)
    signed, got_scales = from_matmul_nbits(b, s, n, k, bits, bs, zero_points=z)
    np.testing.assert_array_equal(signed, codes.astype(np.int16) - np.repeat(zero_points, bs, axis=1))
    np.testing.assert_array_equal(got_scales, scales)


@pytest.mark.parametrize("group_blocks", [1, 2], ids=["group=block", "group=2*block"])
@pytest.mark.parametrize("bits,bs", CASES)
def test_to_matmul_nbits_is_the_documented_layout_and_ort_computes_trits_times_scales(bits, bs, group_blocks):
    """The exporter's encoder on ternary weights with a different scale per (row, group): its bytes are
    the documented ones (codes t + zero point, scales one per (row, block) in row-major order, zero points
    packed per row), and ORT on exactly what the lowering writes (scales flattened) computes
    ``A @ (t * scale).T``. Storing the block scales transposed fails here."""
    rng = np.random.default_rng(31 * bits + bs + group_blocks)
    n, blocks, m = 6, 4, 3
    k = blocks * bs
    trits = rng.integers(-1, 2, (n, k)).astype(np.int8)
    group_scales = rng.uniform(0.25, 2.0, (n, blocks // group_blocks)).astype(np.float32)
    b, block_scales, zps = to_matmul_nbits(trits, group_scales, bits, bs)

    zp = 1 if bits == 2 else 2 ** (bits - 1)
    expected_scales = np.repeat(group_scales, group_blocks, axis=1)  # [N, blocks]
    want_b, want_s, want_z = spec_inputs((trits.astype(np.int16) + zp).astype(np.uint8), expected_scales,
                                         np.full((n, blocks), zp, np.uint8), bits, bs)
    np.testing.assert_array_equal(b, want_b)
    np.testing.assert_array_equal(np.asarray(block_scales).reshape(-1), want_s)
    np.testing.assert_array_equal(zps, want_z)

    a = rng.standard_normal((m, k)).astype(np.float32)
    y = run_matmul_nbits(a, b, np.asarray(block_scales).reshape(-1), zps, n=n, k=k, bits=bits, bs=bs)
    w = trits.astype(np.float64) * np.repeat(group_scales.astype(np.float64), k // group_scales.shape[1], axis=1)
    assert_product(y, a, w)
    codes, scales_back = from_matmul_nbits(b, block_scales, n, k, bits, bs, zero_points=zps)
    np.testing.assert_array_equal(codes, trits)
    np.testing.assert_array_equal(scales_back, expected_scales)


@pytest.mark.parametrize("bits", [4, 8])
def test_block_quantised_int_codes_through_the_encoder(bits):
    """The int4/int8 LM head and kept layers pass signed codes through the same encoder: ORT computes
    ``A @ (q * scale).T`` with the full code range, both extremes included."""
    rng = np.random.default_rng(bits)
    n, k, bs = 5, 96, 32
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    q = rng.integers(lo, hi + 1, (n, k)).astype(np.int16)
    q[0, :2] = lo, hi
    scales = rng.uniform(0.01, 0.1, (n, k // bs)).astype(np.float32)
    b, block_scales, zps = to_matmul_nbits(q, scales, bits, bs)
    a = rng.standard_normal((2, k)).astype(np.float32)
    y = run_matmul_nbits(a, b, block_scales.reshape(-1), zps, n=n, k=k, bits=bits, bs=bs)
    assert_product(y, a, q * np.repeat(scales.astype(np.float64), bs, axis=1))


def test_block_larger_than_the_scale_group_is_exact_or_refused():
    """MatMulNBits has one scale per block: a block spanning two scale groups is lowered only when their
    scales agree (then ORT computes the original model) and otherwise refused in one line."""
    rng = np.random.default_rng(0)
    n, k = 4, 256
    trits = rng.integers(-1, 2, (n, k)).astype(np.int8)
    uniform = np.repeat(rng.uniform(0.5, 1.5, (n, 2)).astype(np.float32), 4, axis=1)  # group 32, equal per 128
    b, block_scales, zps = to_matmul_nbits(trits, uniform, 2, 128)
    np.testing.assert_array_equal(block_scales, uniform[:, ::4])
    a = rng.standard_normal((2, k)).astype(np.float32)
    y = run_matmul_nbits(a, b, block_scales.reshape(-1), zps, n=n, k=k, bits=2, bs=128)
    assert_product(y, a, trits * np.repeat(uniform.astype(np.float64), 32, axis=1))

    differing = uniform.copy()
    differing[2, 5] *= 2  # one group of one row: [1, 2]-like scales inside a 64-block
    for bs in (64, 128):
        with pytest.raises(ValueError, match=rf"^block_size {bs} is larger than the checkpoint's scale group 32 "
                                             r".*use block size 32 or less$") as info:
            to_matmul_nbits(trits, differing, 2, bs)
        assert "\n" not in str(info.value)
    _, s32, _ = to_matmul_nbits(trits, differing, 2, 32)  # the suggested fix works
    np.testing.assert_array_equal(s32, differing)


def _canonical_model(trits: np.ndarray, scales: np.ndarray, m: int):
    """A one-layer canonical graph ``Y = TernaryMatMul(X, packed trits, scales)`` (2bit packing,
    act_bits 0) and its config.json dict, as the exporter writes them."""
    from ternarylm.format.custom_op import function_proto
    from ternarylm.format.onnx_names import MS_DOMAIN, OPSET, TERNARY_DOMAIN
    from ternarylm.format.trits import pack

    n, k = trits.shape
    g = k // scales.shape[1]
    node = helper.make_node("TernaryMatMul", ["X", "layer.packed", "layer.scales"], ["Y"], name="/layer/TernaryMatMul",
                            domain=TERNARY_DOMAIN, K=k, N=n, packing="2bit", group_size=g, act_bits=0,
                            trits_per_byte=4, code_base=4)
    graph = helper.make_graph([node], "one-layer", [helper.make_tensor_value_info("X", TensorProto.FLOAT, (m, k))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, (m, n))],
                              [numpy_helper.from_array(pack(trits, "2bit"), "layer.packed"),
                               numpy_helper.from_array(scales, "layer.scales")])
    model = helper.make_model(graph, functions=[function_proto()], opset_imports=[
        helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1), helper.make_opsetid(TERNARY_DOMAIN, 1)])
    config = {"weights": {"model.layers.0.mlp.down_proj": {
        "kind": "ternary", "packed": "layer.packed", "scales": "layer.scales", "packing": "2bit", "K": k, "N": n,
        "group_size": g, "act_bits": 0}}}
    return model, config


def _run(model, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": x})[0]


@pytest.mark.parametrize("bits,bs", [(2, 32), (2, 64), (4, 32), (4, 64), (8, 64)])
def test_relowered_graph_computes_the_checkpoint_layer(bits, bs):
    """``relower.lower`` (what ``--tune`` and ``ternarylm.export.lower`` run) on a layer with a different
    scale per (row, group of 64): the MatMulNBits graph it writes computes ``X @ (t * scale).T``, as the
    canonical graph does. Storing the block scales transposed in the lowering fails here."""
    from ternarylm.format.relower import lower

    rng = np.random.default_rng(bits * bs)
    n, k, m = 6, 256, 3
    trits = rng.integers(-1, 2, (n, k)).astype(np.int8)
    scales = rng.uniform(0.25, 2.0, (n, k // 64)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = trits * np.repeat(scales.astype(np.float64), 64, axis=1)
    model, config = _canonical_model(trits, scales, m)
    assert_product(_run(model, x), x, w)
    lowered, config = lower(model, config, bits=bits, block_size=bs, accuracy_level=0)
    assert [nd.op_type for nd in lowered.graph.node] == ["MatMulNBits"]
    assert config["weights"]["model.layers.0.mlp.down_proj"]["block_size"] == bs
    assert_product(_run(lowered, x), x, w)


def test_relower_refuses_a_block_larger_than_the_scale_group_and_changes_nothing():
    """Group-32 scales that differ cannot be lowered to block 64 or 128 (one scale per block): ``lower``
    raises one line naming the fix and leaves the model and config untouched; an earlier MatMulNBits
    lowering at block 32 is refused the same way (its scales are per block of 32)."""
    from ternarylm.format.relower import lower

    rng = np.random.default_rng(5)
    n, k = 4, 128
    trits = rng.integers(-1, 2, (n, k)).astype(np.int8)
    scales = rng.uniform(0.25, 2.0, (n, k // 32)).astype(np.float32)
    model, config = _canonical_model(trits, scales, 2)
    before_model, before_config = model.SerializeToString(), repr(config)
    for bs in (64, 128):
        with pytest.raises(ValueError, match=rf"^block_size {bs} is larger than the checkpoint's scale group 32 "
                                             r".*use block size 32 or less$"):
            lower(model, config, bits=2, block_size=bs, accuracy_level=4)
        assert model.SerializeToString() == before_model and repr(config) == before_config

    lowered, config = lower(model, config, bits=2, block_size=32, accuracy_level=0)
    once = lowered.SerializeToString()
    with pytest.raises(ValueError, match="larger than the checkpoint's scale group 32"):
        lower(lowered, config, bits=2, block_size=128, accuracy_level=0)
    assert lowered.SerializeToString() == once
    x = rng.standard_normal((2, k)).astype(np.float32)
    assert_product(_run(lowered, x), x, trits * np.repeat(scales.astype(np.float64), 32, axis=1))
