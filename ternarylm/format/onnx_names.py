"""The ONNX names an export folder's graph is written with: the opset and the two operator domains.
The emitter, the custom op and the lowering passes all refer to them, so they live here once."""

from __future__ import annotations

OPSET = 21  # the default ("") domain's opset of every export
MS_DOMAIN = "com.microsoft"  # onnxruntime's contrib ops (MatMulNBits, GroupQueryAttention, ...)
TERNARY_DOMAIN = "ai.ternarylm"  # TernaryMatMul (custom_op.py)
