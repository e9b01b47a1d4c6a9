"""The ONNX names an export folder's graph is written with: the opset, the two operator domains and the
optional ``logits_to_keep`` input. The emitter, the custom op, the lowering passes and the onnxruntime
decoder all refer to them, so they live here once."""

from __future__ import annotations

OPSET = 21  # the default ("") domain's opset of every export
MS_DOMAIN = "com.microsoft"  # onnxruntime's contrib ops (MatMulNBits, GroupQueryAttention, ...)
TERNARY_DOMAIN = "ai.ternarylm"  # TernaryMatMul (custom_op.py)
LOGITS_TO_KEEP = "logits_to_keep"  # optional decoder input: the LM head for the last k positions only (0 = all)
