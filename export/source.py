"""What ``ternary-export`` reads: a ``ckpt.pt`` from ternary-train, or a Hugging Face folder holding a ternary
model (BitNet b1.58, a BitNet-quantised Llama, our own ``save_pretrained``; a hub name when online), as one
checkpoint dict. Everything after this module is the same for both."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ternarylm.format.hashing import sha256_file


def check_source(path) -> None:
    """The cheap checks (before any progress bar): a checkpoint file is a zip; a folder has config.json;
    anything else must look like a hub name (``org/model``)."""
    from ternarylm.checkpoint import check_checkpoint_file
    from ternarylm.hf.folder import HFError, looks_like_hub_name, read_config

    p = Path(path).expanduser()
    if p.is_dir():
        read_config(p)
    elif p.is_file():
        check_checkpoint_file(p)
    elif not looks_like_hub_name(str(path)) or p.suffix in (".pt", ".pth", ".bin"):
        raise HFError(f"{path} does not exist; pass the ckpt.pt written by ternary-train or a Hugging Face "
                      "model folder (config.json + model.safetensors + tokenizer.json)")


def load_source(path) -> dict:
    """The checkpoint dict (``load_checkpoint``'s keys) of a ckpt.pt or a Hugging Face folder / hub name."""
    from ternarylm.checkpoint import load_checkpoint
    from ternarylm.hf.ternary_in import checkpoint_from_hf

    p = Path(path).expanduser()
    if p.is_file() or str(path).endswith((".pt", ".pth")):
        return load_checkpoint(p)
    return checkpoint_from_hf(str(path))


def source_sha256(path, ckpt: dict) -> str:
    """sha256 of a checkpoint file; for a Hugging Face folder, of its files' names and sha256s (sorted)."""
    folder = (ckpt.get("hf_source") or {}).get("folder")
    if folder is None:
        return sha256_file(Path(path))
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()
