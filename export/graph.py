"""A small ONNX graph builder: nodes named as paths (``/model/layers.0/attn/qkv_proj``), initializers,
constants de-duplicated, and deterministic output (no random names, no timestamps)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    def __init__(self, name: str):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
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
        self.initializers.append(numpy_helper.from_array(np.asarray(array, order="C"), name=name))
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
        self.initializers.append(numpy_helper.from_array(default, name=name))
        return name

    def output(self, name: str, elem_type: int, shape: list):
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))

    def model(self, opset_imports: list, functions: list | None = None, doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=opset_imports, functions=functions or [],
                                  producer_name="ternarylm", doc_string=doc)
        model.ir_version = 10
        return model


def np_to_onnx_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
INT64 = TensorProto.INT64
