"""One sha256-of-a-file helper for checkpoints, token caches, export manifests and device plans.

In ``format`` because the folder contract depends on it (manifest.json records every file's sha256)
and the on-device side verifies folders and plans with it on a Pi, without torch.
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
