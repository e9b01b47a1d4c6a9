"""One sha256-of-a-file helper for checkpoints, token caches, export manifests and device plans.

Torch-free on purpose: the on-device side (export folders, plans) imports it on a Pi.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file's bytes, read in ``chunk``-sized pieces (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
