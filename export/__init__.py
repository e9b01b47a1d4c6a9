"""Export: packed ternary weights, ONNX emission with the TernaryMatMul custom op, lowering passes."""
