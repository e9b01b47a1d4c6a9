"""An export folder as the profiler sees it: manifest verified, architecture and target read.

The folder format is docs/FORMATS.md section 2: ``model.onnx``, ``config.json``, ``manifest.json``
(``files: {name: {"sha256", "bytes"}}``) and tokenizer files. Nothing here parses the ONNX graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ternarylm.hashing import sha256_file

EXPORT_FORMAT = "ternarylm-export"
SUPPORTED_FORMAT_VERSION = 1
# Architecture fields that must agree between a model and its baseline.
ARCH_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "intermediate_size")


class FolderError(ValueError):
    """A model folder that cannot be profiled (missing manifest, hash mismatch, ...)."""


def _json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FolderError(f"{path.parent}: no {path.name}; is this a ternary-export folder?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FolderError(f"{path}: not valid JSON ({e}); re-export the model") from None


@dataclass
class ModelFolder:
    """A verified export folder."""

    path: Path
    manifest: dict
    config: dict
    manifest_sha256: str
    files: dict[str, dict] = field(default_factory=dict)

    @property
    def model_path(self) -> Path:
        return self.path / "model.onnx"

    @property
    def architecture(self) -> dict:
        return self.config.get("architecture", {})

    @property
    def kind(self) -> str:
        """``causal-lm`` (the default) or ``sequence-classification`` (config.json's ``kind``)."""
        return self.config.get("kind") or "causal-lm"

    @property
    def target(self) -> str:
        return self.manifest.get("target") or self.config.get("export", {}).get("target", "unknown")

    @property
    def folder_bytes(self) -> int:
        return sum(int(f.get("bytes", 0)) for f in self.files.values())

    @property
    def model_bytes(self) -> int:
        """``model.onnx`` plus its external-data files (anything named ``model.onnx*`` / ``*.data``)."""
        return sum(int(f.get("bytes", 0)) for n, f in self.files.items()
                   if n.startswith("model.onnx") or n.endswith(".data"))

    def info(self) -> dict:
        """What report.json records about the model."""
        m = self.manifest
        return {
            "dir": str(self.path),
            "target": self.target,
            "packing": m.get("packing"),
            "package_version": m.get("package_version"),
            "source_checkpoint_sha256": m.get("source_checkpoint_sha256"),
            "manifest_sha256": self.manifest_sha256,
            "model_bytes": self.model_bytes,
            "folder_bytes": self.folder_bytes,
            "architecture": self.architecture,
        }

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> ModelFolder:
        """Read and (by default) verify every file's size and sha256 against manifest.json."""
        path = Path(path)
        if not path.is_dir():
            raise FolderError(f"{path}: not a folder; pass the folder ternary-export wrote")
        manifest_path = path / "manifest.json"
        manifest = _json(manifest_path, "manifest")
        check_format(manifest, manifest_path)
        files = manifest.get("files")
        if not isinstance(files, dict) or "model.onnx" not in files:
            raise FolderError(f"{manifest_path}: no 'files' entry for model.onnx; re-export the model")
        if verify:
            for name, entry in files.items():
                f = path / name
                if not f.is_file():
                    raise FolderError(f"{path}: {name} is listed in manifest.json but missing")
                size = f.stat().st_size
                if "bytes" in entry and size != int(entry["bytes"]):
                    raise FolderError(f"{f}: {size} bytes, manifest says {entry['bytes']} (truncated or "
                                      "modified); re-export the model")
                if "sha256" in entry and sha256_file(f) != entry["sha256"]:
                    raise FolderError(f"{f}: sha256 does not match manifest.json (modified or corrupt); "
                                      "re-export the model")
        config = _json(path / "config.json", "config") if (path / "config.json").is_file() else {}
        return cls(path=path, manifest=manifest, config=config,
                   manifest_sha256=sha256_file(manifest_path), files=files)


def check_format(doc: dict, path: Path) -> None:
    """manifest.json and config.json both carry ``format`` / ``format_version``: refuse a foreign file
    or one newer than this ternarylm reads."""
    if doc.get("format") not in (None, EXPORT_FORMAT):
        raise FolderError(f"{path}: format {doc.get('format')!r} is not {EXPORT_FORMAT!r}")
    version = doc.get("format_version", 1)
    if not isinstance(version, int) or version > SUPPORTED_FORMAT_VERSION:
        raise FolderError(f"{path}: format_version {version} is newer than this ternarylm reads "
                          f"({SUPPORTED_FORMAT_VERSION}); upgrade ternarylm")


def architecture_mismatch(a: dict, b: dict) -> list[str]:
    """Fields where two architectures differ (``name: a != b``); empty when they agree."""
    return [f"{k}: {a.get(k)} != {b.get(k)}" for k in ARCH_KEYS
            if k in a and k in b and a[k] != b[k]] + [
        f"{k}: missing in one of them" for k in ARCH_KEYS if (k in a) != (k in b)]
