"""``ternarylm.format``: the worked examples of its docstrings, the MatMulNBits round trip, the one
``is_ternary_entry`` rule, and that the package imports nothing of ternarylm outside itself."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import ternarylm.format
from ternarylm.format.codecs import (
    from_matmul_nbits,
    pack_codes,
    symmetric_block_quantize,
    to_matmul_nbits,
    unpack_codes,
)
from ternarylm.format.entries import is_ternary_entry


def test_codec_worked_examples():
    assert pack_codes(np.array([3, 12], np.uint8), 4)[0] == 0xC3
    assert unpack_codes(np.array([0xC3], np.uint8), 4).tolist() == [3, 12]
    assert pack_codes(np.array([2, 1, 0, 2], np.uint8), 2)[0] == 0x86
    b, _, zp = to_matmul_nbits(np.array([[1, 0, -1, 1] * 32]), np.ones((1, 1), np.float32), 2, 32)
    assert b[0, 0, 0] == 0x86 and zp.tolist() == [0x55]
    codes, scales = symmetric_block_quantize(np.array([[0.5, -1.0]], np.float32), 8, 2)
    assert codes.tolist() == [[192, 1]] and scales[0, 0] == pytest.approx(1 / 127)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_from_matmul_nbits_inverts_to_matmul_nbits(bits):
    rng = np.random.default_rng(bits)
    trits = rng.integers(-1, 2, (6, 96)).astype(np.int8)
    scales = rng.uniform(0.5, 1.5, (6, 3)).astype(np.float32)
    b, block_scales, zp = to_matmul_nbits(trits, scales, bits, 32)
    # without zero points the default 2**(bits-1) applies: the exporter's own at 4/8 bits
    for zero_points in (zp, None) if bits != 2 else (zp,):
        codes, got = from_matmul_nbits(b.reshape(-1), block_scales.reshape(-1), 6, 96, bits, 32, zero_points)
        assert np.array_equal(codes, trits) and np.array_equal(got, scales)


def test_is_ternary_entry():
    assert is_ternary_entry("model.layers.0.mlp.down_proj", {"kind": "ternary"})
    old = {"kind": "nbits", "act_bits": 8}  # written before mixed precision: no weight_bits
    assert is_ternary_entry("model.layers.0.mlp.down_proj", old)
    assert not is_ternary_entry("lm_head", old)
    assert is_ternary_entry("x", {"kind": "nbits", "weight_bits": 2})
    assert not is_ternary_entry("x", {"kind": "nbits", "weight_bits": 4, "act_bits": 8})
    assert not is_ternary_entry("x", {"kind": "int", "weight_bits": 2})
    assert not is_ternary_entry("x", {"kind": "dense", "weight_bits": 2})


def test_format_imports_only_itself():
    """The contract package is the bottom layer: nothing of ternarylm outside it, no torch."""
    root = Path(ternarylm.format.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert not name.startswith(("torch", "transformers")), f"{path.name} imports {name}"
                if name.startswith("ternarylm"):
                    assert name.startswith("ternarylm.format"), f"{path.name} imports {name}"


def test_saving_twice_replaces_the_external_data(tmp_path):
    """A re-tune saves its plan's model under the same name again: the data file must be replaced, not
    appended to (onnx appends), or it grows with stale bytes at every run."""
    import onnx
    from onnx import helper, numpy_helper

    from ternarylm.format.folder import model_file_bytes, save_with_external_data

    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], [w])
    model = helper.make_model(graph)
    path = tmp_path / "model.cpu.onnx"
    for _ in range(2):
        save_with_external_data(onnx.load_from_string(model.SerializeToString()), path)
        assert (tmp_path / "model.cpu.onnx.data").stat().st_size == 4096 * 4
    loaded = onnx.load(str(path))
    assert np.array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), numpy_helper.to_array(w))
    assert model_file_bytes(path) == path.stat().st_size + 4096 * 4


def test_models_over_two_gigabytes_are_checked_from_their_file():
    """A ModelProto over protobuf's 2 GB cannot be serialised (``ByteSize`` itself fails), so the in-memory
    check is skipped for it and ``model_files`` checks the saved file; the estimate reads only shapes."""
    import onnx
    from onnx import TensorProto, helper

    from ternarylm.format.folder import PROTOBUF_LIMIT, fits_one_message

    small = helper.make_model(helper.make_graph([], "g", [], [], [helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)]))
    assert fits_one_message(small)
    big = onnx.ModelProto()
    t = big.graph.initializer.add()  # shape only: a 128256 x 4400 float32 head is over 2 GB
    t.name, t.data_type = "head", TensorProto.FLOAT
    t.dims.extend([128256, 4400])
    assert 128256 * 4400 * 4 > PROTOBUF_LIMIT and not fits_one_message(big)
