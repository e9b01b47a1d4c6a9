"""A small ONNX graph builder: nodes named as paths (``/model/layers.0/attn/qkv_proj``), initializers,
constants de-duplicated, and deterministic output (no random names, no timestamps).

Initializers are written straight into the ModelProto that ``model()`` returns: ``helper.make_graph`` and
``make_model`` would copy every tensor twice more, which for a 128k-vocabulary embedding and head is
gigabytes of peak memory."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    def __init__(self, name: str):
        self.name = name
        self.proto = onnx.ModelProto()
        self.proto.graph.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers = self.proto.graph.initializer  # filled in place (see the module docstring)
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._const_cache: dict[tuple, str] = {}
        self._names: set[str] = set()

    def _unique(self, name: str) -> str:
        base, i = name, 1
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def op(self, op_type: str, inputs: list[str], name: str, n_out: int = 1, domain: str = "",
           outputs: list[str] | None = None, **attrs) -> str | list[str]:
        """Add a node; returns its output name (or names when ``n_out > 1``)."""
        node_name = self._unique(name)
        outs = outputs or [f"{node_name}/output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=node_name, domain=domain or None,
                                           **attrs))
        return outs[0] if n_out == 1 else outs

    def initializer(self, name: str, array: np.ndarray) -> str:
        # np.asarray, not ascontiguousarray: 0-d scalars must stay 0-d (Range, CumSum axis, ...)
        _fill_tensor(self.initializers.add(), name, np.asarray(array, order="C"))
        self._names.add(name)
        return name

    def const(self, value, dtype=np.int64) -> str:
        """A shared small constant initializer (ints for shapes/axes, floats for scalars)."""
        arr = np.array(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_cache:
            name = f"const/{arr.dtype.name}/{'x'.join(map(str, arr.shape)) or 'scalar'}/{len(self._const_cache)}"
            self._const_cache[key] = self.initializer(name, arr)
        return self._const_cache[key]

    def input(self, name: str, elem_type: int, shape: list):
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        self._names.add(name)
        return name

    def optional_input(self, name: str, default: np.ndarray) -> str:
        """A graph input with a default: an initializer of the same name, which a caller may override (ONNX
        IR >= 4); clients that do not know the input simply leave it out."""
        default = np.asarray(default)
        self.input(name, np_to_onnx_type(default.dtype), list(default.shape))
        _fill_tensor(self.initializers.add(), name, default)
        return name

    def output(self, name: str, elem_type: int, shape: list):
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def model(self, opset_imports: list, functions: list | None = None, doc: str = "") -> onnx.ModelProto:
        """The ModelProto (what ``helper.make_model(helper.make_graph(...))`` builds, without copying the
        initializers). Call once."""
        model, graph = self.proto, self.proto.graph
        graph.node.extend(self.nodes)
        graph.input.extend(self.inputs)
        graph.output.extend(self.outputs)
        model.ir_version = 10
        model.opset_import.extend(opset_imports)
        model.functions.extend(functions or [])
        model.producer_name = "ternarylm"
        model.doc_string = doc
        return model


_RAW_DTYPES = {np.dtype(t) for t in (np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16, np.int32,
                                      np.int64, np.uint16, np.uint32, np.uint64)}


def _fill_tensor(tensor: onnx.TensorProto, name: str, array: np.ndarray) -> None:
    """``numpy_helper.from_array`` into an existing TensorProto: plain little-endian numbers go in as raw bytes
    directly (one copy); other types (int4, bool, ...) through numpy_helper."""
    if array.dtype in _RAW_DTYPES and np.little_endian:
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = array.tobytes()
    else:
        tensor.CopyFrom(numpy_helper.from_array(array, name=name))


def np_to_onnx_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
INT64 = TensorProto.INT64
