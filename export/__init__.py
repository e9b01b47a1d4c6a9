"""Export: packed ternary weights, ONNX emission with the ``ai.ternarylm::TernaryMatMul`` custom op,
lowering passes for specific runtimes, the deployable folder. Importing this package needs no torch;
reading a checkpoint (``export_checkpoint``) does. ``lower`` (re-lowering an exported model to other
MatMulNBits settings) is ``ternarylm.format.relower.lower``, re-exported here."""

from __future__ import annotations

from ternarylm.format.targets import TARGETS, Target, get_target


def lower(*args, **kwargs):
    """Re-lower an export's ternary matmuls; see ``ternarylm.format.relower.lower`` (imports onnx on use)."""
    from ternarylm.format.relower import lower as _lower

    return _lower(*args, **kwargs)


def export_checkpoint(*args, **kwargs):
    """ckpt.pt -> deployable folder; see ``ternarylm.export.api.export_checkpoint``."""
    from ternarylm.export.api import export_checkpoint as _export

    return _export(*args, **kwargs)


__all__ = ["TARGETS", "Target", "get_target", "export_checkpoint", "lower"]
