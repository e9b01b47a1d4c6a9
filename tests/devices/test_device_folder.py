"""Export folders: manifest verification and architecture comparison."""

from __future__ import annotations

import json

import pytest

from ternarylm.format.folder import FolderError, ModelFolder, architecture_mismatch


def test_open_verifies_and_reads(tiny_exports):
    f = ModelFolder.open(tiny_exports["nbits"])
    assert f.target == "ort-cpu" and f.architecture["num_hidden_layers"] == 2
    info = f.info()
    assert info["model_bytes"] == f.model_path.stat().st_size and info["folder_bytes"] > info["model_bytes"]
    assert len(info["manifest_sha256"]) == 64 and info["packing"] == "2bit"


def test_not_a_folder(tmp_path):
    with pytest.raises(FolderError, match="not a folder"):
        ModelFolder.open(tmp_path / "nope")


def test_missing_manifest(export_copy):
    d = export_copy("nbits")
    (d / "manifest.json").unlink()
    with pytest.raises(FolderError, match="no manifest.json"):
        ModelFolder.open(d)


def test_tampered_model_fails_sha256(export_copy):
    d = export_copy("nbits")
    data = bytearray((d / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (d / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(FolderError, match="sha256 does not match"):
        ModelFolder.open(d)


def test_truncated_model_fails_size(export_copy):
    d = export_copy("nbits")
    data = (d / "model.onnx").read_bytes()
    (d / "model.onnx").write_bytes(data[:-10])
    with pytest.raises(FolderError, match="bytes, manifest says"):
        ModelFolder.open(d)


def test_newer_format_version_refused(export_copy):
    d = export_copy("nbits")
    m = json.loads((d / "manifest.json").read_text())
    m["format_version"] = 99
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FolderError, match="newer than this ternarylm reads"):
        ModelFolder.open(d)


def test_architecture_mismatch():
    a = {"hidden_size": 128, "num_hidden_layers": 2, "vocab_size": 256}
    assert architecture_mismatch(a, dict(a)) == []
    assert architecture_mismatch(a, {**a, "hidden_size": 64}) == ["hidden_size: 128 != 64"]
