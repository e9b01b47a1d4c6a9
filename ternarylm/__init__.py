"""TernaryLM: train natively ternary {-1, 0, +1} language models and ship them to edge devices.

Public import paths (the same for a wheel and for a source checkout):

- ``ternarylm``            model, quantizer, data, training, evaluation (torch imported lazily)
- ``ternarylm.export``     packing, ONNX emission, custom op, lowering passes   (repo folder ``export/``)
- ``ternarylm.runtime_py`` pure-NumPy reference runtime                         (repo folder ``runtime_py/``)
- ``ternarylm.devices``    device profiles, detection, profiler                 (repo folder ``devices/``)
- ``ternarylm.format``     the export-folder contract shared by the three above (torch-free)
- ``ternarylm.onnxrt``     the one onnxruntime session builder and decode loop (torch-free)

Importing ``ternarylm`` never imports torch or transformers, so a device needs only the core install.
"""

from __future__ import annotations

__version__ = "0.1.0"

# export/, runtime_py/ and devices/ are mapped under this package by pyproject's package-dir: a wheel
# holds them inside it and an editable install's finder maps them, so there is no path fallback here
# (one would hide a wheel that lacks them). A bare checkout without an install has no ternarylm.export.

_LAZY = {
    "TernaryLMConfig": "ternarylm.configuration",
    "TernaryLMForCausalLM": "ternarylm.modeling",
    "TernaryLMModel": "ternarylm.modeling",
    "TernaryLMForSequenceClassification": "ternarylm.classification",
    "BitLinear": "ternarylm.quantization",
    "TernaryConfig": "ternarylm.quantization",
    "quantize_": "ternarylm.quantization",
}


def __getattr__(name: str):
    """Import torch-backed names on first use so ``import ternarylm`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ternarylm' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
