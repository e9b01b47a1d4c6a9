"""Export: packed ternary weights, ONNX emission with the ``ai.ternarylm::TernaryMatMul`` custom op,
lowering passes for specific runtimes, the deployable folder. Importing this package needs no torch;
reading a checkpoint (``export_checkpoint``) does."""

from __future__ import annotations

from ternarylm.export.targets import TARGETS, Target, get_target


def export_checkpoint(*args, **kwargs):
    """ckpt.pt -> deployable folder; see ``ternarylm.export.api.export_checkpoint``."""
    from ternarylm.export.api import export_checkpoint as _export

    return _export(*args, **kwargs)


def lower(model, config_json: dict, *, bits: int = 2, block_size: int = 32, accuracy_level: int = 4):
    """Rewrite the ternary matmuls of an exported model (canonical TernaryMatMul or an earlier
    MatMulNBits lowering) into MatMulNBits with the given settings, in place; no torch needed.
    Layers kept at 4/8 bits (mixed precision) in canonical form become MatMulNBits of their own bits.
    ``config_json`` is the folder's config.json dict; its weight map is updated to match."""
    from ternarylm.export.lowering import int_to_matmul_nbits, ternary_to_matmul_nbits

    weights = config_json["weights"]
    ternary_to_matmul_nbits(model, weights, bits=bits, block_size=block_size, accuracy_level=accuracy_level)
    lowering = config_json.setdefault("export", {}).setdefault("lowering", {})
    lowering["ternary_matmul"] = {"op": "com.microsoft::MatMulNBits", "bits": bits, "block_size": block_size,
                                  "accuracy_level": accuracy_level}
    kept = int_to_matmul_nbits(model, weights, accuracy_level=accuracy_level)
    if kept:
        lowering["int_matmul"] = kept
    return model, config_json


__all__ = ["TARGETS", "Target", "get_target", "export_checkpoint", "lower"]
