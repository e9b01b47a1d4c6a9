"""Re-lowering an existing export: what ``ternary-profile --tune`` does on a device to try other
MatMulNBits settings, and what ``ternarylm.export.lower`` offers the exporter's users. It rewrites
model.onnx and config.json together (weight map and ``export.lowering``), without torch.

Example: ``lower(model, config, bits=2, block_size=64, accuracy_level=4)`` turns every TernaryMatMul
(or an earlier MatMulNBits lowering of a ternary layer) into MatMulNBits bits=2, block 64.
"""

from __future__ import annotations

from ternarylm.format.lowering import int_to_matmul_nbits, ternary_to_matmul_nbits


def lower(model, config_json: dict, *, bits: int = 2, block_size: int = 32, accuracy_level: int = 4):
    """Rewrite the ternary matmuls of an exported model (canonical TernaryMatMul or an earlier
    MatMulNBits lowering) into MatMulNBits with the given settings, in place; no torch needed.
    Layers kept at 4/8 bits (mixed precision) in canonical form become MatMulNBits of their own bits.
    ``config_json`` is the folder's config.json dict; its weight map is updated to match.
    Returns ``(model, config_json)``. A ``block_size`` larger than a layer's scale group is exact only
    when the scales inside each block agree; otherwise ValueError, with the model and config unchanged."""
    weights = config_json["weights"]
    ternary_to_matmul_nbits(model, weights, bits=bits, block_size=block_size, accuracy_level=accuracy_level)
    lowering = config_json.setdefault("export", {}).setdefault("lowering", {})
    lowering["ternary_matmul"] = {"op": "com.microsoft::MatMulNBits", "bits": bits, "block_size": block_size,
                                  "accuracy_level": accuracy_level}
    kept = int_to_matmul_nbits(model, weights, accuracy_level=accuracy_level)
    if kept:
        lowering["int_matmul"] = kept
    return model, config_json
