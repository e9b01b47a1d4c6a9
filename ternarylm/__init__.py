"""TernaryLM: train natively ternary {-1, 0, +1} language models and ship them to edge devices.

Public import paths (the same for a wheel and for a source checkout):

- ``ternarylm``            model, quantizer, data, training, evaluation (torch imported lazily)
- ``ternarylm.export``     packing, ONNX emission, custom op, lowering passes   (repo folder ``export/``)
- ``ternarylm.runtime_py`` pure-NumPy reference runtime                         (repo folder ``runtime_py/``)
- ``ternarylm.devices``    device profiles, detection, profiler                 (repo folder ``devices/``)

Importing ``ternarylm`` never imports torch or transformers, so a device needs only the core install.
"""

from __future__ import annotations

from pathlib import Path as _Path

__version__ = "0.1.0"

# A wheel installs export/, runtime_py/ and devices/ inside this package (pyproject's package-dir).
# In a source checkout or an editable install they sit beside it at the repo root: let the import
# system look there too, so that ``ternarylm.export`` means the same thing in both layouts.
_here = _Path(__file__).resolve().parent
_repo = _here.parent
if not (_here / "export").is_dir() and (_repo / "export" / "__init__.py").is_file() and (
    _repo / "pyproject.toml"
).is_file():
    __path__.append(str(_repo))  # type: ignore[name-defined]  # noqa: F821

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
