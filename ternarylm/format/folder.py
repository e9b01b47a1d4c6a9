"""The export folder (docs/FORMATS.md section 2): written by ``ternary-export``, opened by ``ternary-run``
and ``ternary-profile``. Writer and readers share this module so the manifest, the format version and
the checks cannot drift apart.

A folder holds ``model.onnx``, ``config.json``, tokenizer files and ``manifest.json``::

    {"format": "ternarylm-export", "format_version": 1, "target": "ort-cpu", ...,
     "files": {"model.onnx": {"sha256": "9f2c...", "bytes": 123456}, ...}}

It is written to a temp sibling and renamed at the end (never half-written); opening it verifies every
file's size and sha256 and refuses a foreign or newer format. ``check_graph`` refuses a config.json that
does not describe its model.onnx. Nothing here needs torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ternarylm.format.entries import CAUSAL_LM
from ternarylm.format.hashing import sha256_file

EXPORT_FORMAT = "ternarylm-export"
EXPORT_FORMAT_VERSION = 2  # the newest this ternarylm reads; a folder says the oldest reader it needs
# (format_version_for in architecture.py: 2 only when the model uses BitNet's architecture fields)
# Architecture fields that must agree between a model and its baseline.
ARCH_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "intermediate_size")


class FolderError(ValueError):
    """A model folder that cannot be used (missing manifest, hash mismatch, foreign format, ...)."""


# ---- writing -------------------------------------------------------------------------------------
def json_bytes(data: dict) -> bytes:
    """The folder's JSON files: sorted keys and a trailing newline, so exports are byte-identical."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def dump_json(path: Path, data: dict):
    path.write_bytes(json_bytes(data))


MODEL_DATA = "model.onnx.data"
EXTERNAL_DATA_THRESHOLD = 1024  # initializers of at least this many bytes go to model.onnx.data


def model_files(model) -> dict[str, bytes]:
    """``model.onnx`` (the graph) and ``model.onnx.data`` (every initializer of 1 KB or more, as ONNX
    external data). onnxruntime memory-maps the data file instead of parsing the weights into the
    protobuf and copying them out again: on the 132m ort-cpu export that is 38 MB less resident memory
    after loading, a 31 MB lower peak and a load 0.1 s faster, at the same speed. Every ONNX reader
    (onnx.load, onnx.reference, onnxruntime, onnxruntime-genai) follows the reference by itself."""
    import tempfile

    import onnx

    too_big_to_check_in_memory = not fits_one_message(model)
    saved = onnx.ModelProto()
    saved.CopyFrom(model)  # saving as external data empties the initializers it moves: keep the caller's intact
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        save_with_external_data(saved, path)
        if too_big_to_check_in_memory:  # the checker reads a model over 2 GB from its file (check_onnx skipped it)
            onnx.checker.check_model(str(path))
        files = {"model.onnx": path.read_bytes()}
        if (Path(tmp) / MODEL_DATA).exists():
            files[MODEL_DATA] = (Path(tmp) / MODEL_DATA).read_bytes()
    return files


PROTOBUF_LIMIT = 2**31 - 1  # bytes: a ModelProto this large cannot be serialised in one piece


def fits_one_message(model, margin: int = 64 << 20) -> bool:
    """Whether ``model`` serialises as one protobuf message (under 2 GB). Estimated from the initializers'
    shapes: ``ByteSize()`` itself fails beyond the limit."""
    import numpy as np
    from onnx import helper

    def nbytes(t) -> int:
        if t.data_location == t.EXTERNAL:
            return 0
        return int(np.prod(t.dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize

    return sum(nbytes(t) for t in model.graph.initializer) + margin < PROTOBUF_LIMIT


def check_onnx(model, full_check: bool = False) -> None:
    """``onnx.checker.check_model`` on a model in memory, where it fits one protobuf message (under 2 GB); a
    larger one (a 128k-vocabulary float head, a 2B fp32 twin) is checked from its file by ``model_files``."""
    import onnx

    if fits_one_message(model):
        onnx.checker.check_model(model, full_check=full_check)


def save_with_external_data(model, path: str | os.PathLike) -> None:
    """Save ``model`` as ``path`` plus ``<name>.data`` (initializers of 1 KB or more). A data file left by an
    earlier save is removed first: onnx appends to it, which would grow it with stale bytes."""
    import onnx

    path = Path(path)
    path.with_name(path.name + ".data").unlink(missing_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=EXTERNAL_DATA_THRESHOLD)


def model_file_bytes(path: str | os.PathLike) -> int:
    """Size of an ONNX file plus its external data beside it (``<name>.data``)."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def write_folder_atomically(out_dir: Path, write, force: bool) -> Path:
    """Fill a temporary sibling of ``out_dir`` with ``write(tmp_dir)``, then rename it into place (replacing
    an existing folder only when ``force``): a failure at any point leaves no half-written folder and the
    old one untouched."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise FileExistsError(f"{out_dir} already exists; pass --force to replace it or choose another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def write_export_folder(out_dir: Path, files: dict[str, bytes], manifest_extra: dict, force: bool,
                        format_version: int = 1) -> Path:
    """Write ``files`` plus manifest.json into ``out_dir`` atomically (temp sibling + rename);
    ``format_version``: the oldest reader the folder needs (config.json says the same)."""

    def write(tmp: Path) -> None:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        manifest = {"format": EXPORT_FORMAT, "format_version": format_version, **manifest_extra,
                    "files": {name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
                              for name in sorted(files)}}
        dump_json(tmp / "manifest.json", manifest)

    return write_folder_atomically(out_dir, write, force)


# ---- reading -------------------------------------------------------------------------------------
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
        return self.config.get("kind") or CAUSAL_LM

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
        """What a profiler's report.json records about the model."""
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
    if not isinstance(version, int) or version > EXPORT_FORMAT_VERSION:
        raise FolderError(f"{path}: format_version {version} is newer than this ternarylm reads "
                          f"({EXPORT_FORMAT_VERSION}); upgrade ternarylm")


def architecture_mismatch(a: dict, b: dict) -> list[str]:
    """Fields where two architectures differ (``name: a != b``); empty when they agree. BitNet's fields
    (``hidden_act``, ``sub_norms``) count too, absent meaning their defaults (older folders)."""
    from ternarylm.format.architecture import VARIANT_DEFAULTS

    a, b = {**VARIANT_DEFAULTS, **a}, {**VARIANT_DEFAULTS, **b}
    return [f"{k}: {a.get(k)} != {b.get(k)}" for k in (*ARCH_KEYS, *VARIANT_DEFAULTS)
            if k in a and k in b and a[k] != b[k]] + [
        f"{k}: missing in one of them" for k in ARCH_KEYS if (k in a) != (k in b)]


# ---- config.json against model.onnx --------------------------------------------------------------
_PAST_KEY = re.compile(r"^past_key_values\.(\d+)\.key$")


def check_graph(folder: ModelFolder, model) -> None:
    """Refuse a config.json whose ``architecture`` does not describe model.onnx (``model``: its
    ModelProto, weights optional): the NumPy engine would silently run another model and onnxruntime
    would fail mid-generation. Language models only (a classifier has no KV inputs or logits to read)."""
    arch = folder.architecture
    found = graph_architecture(model, folder.config.get("weights") or {})
    for name, value in found.items():
        if value is not None and arch.get(name) != value:
            raise FolderError(f"{folder.path / 'config.json'}: architecture.{name} is {arch.get(name)} but "
                              f"model.onnx has {value}; the files do not belong together - re-export the checkpoint")


def graph_architecture(model, weight_map: dict) -> dict:
    """What model.onnx itself fixes: layers (its ``past_key_values.{i}.key`` inputs), kv heads and
    head_dim (their shapes), vocab (the logits), hidden size (the final norm); None where unknown."""
    inputs = {i.name: _dims(i) for i in model.graph.input}
    outputs = {o.name: _dims(o) for o in model.graph.output}
    layers = [int(m.group(1)) for n in inputs if (m := _PAST_KEY.match(n))]
    past = inputs.get("past_key_values.0.key") or []
    logits = outputs.get("logits") or []
    return {
        "num_hidden_layers": len(layers) or None,
        "num_key_value_heads": past[1] if len(past) == 4 else None,
        "head_dim": past[3] if len(past) == 4 else None,
        "vocab_size": logits[-1] if len(logits) == 3 else None,
        "hidden_size": _initializer_dim(model, (weight_map.get("model.norm") or {}).get("weight")),
    }


def _dims(value_info) -> list[int | None]:
    """A graph input's/output's shape; None for a symbolic or unknown dimension."""
    return [d.dim_value or None for d in value_info.type.tensor_type.shape.dim]


def _initializer_dim(model, name: str | None) -> int | None:
    """The length of a 1-D initializer (a norm's weight), or None."""
    if name:
        for t in model.graph.initializer:
            if t.name == name and len(t.dims) == 1:
                return int(t.dims[0])
    return None
