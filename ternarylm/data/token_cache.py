"""A tokenized corpus on disk: token ids in ``<out>.bin`` plus a JSON sidecar, memory-mapped.

Tokenizing once and memory-mapping keeps training start-up quick and memory flat whatever the
corpus size. ``<out>.bin`` holds every document's ids followed by ``eos_id``, little-endian
``uint16`` when the vocabulary fits (``vocab_size <= 65535``), else ``uint32``. ``<out>.json``
holds ``format``, ``format_version``, ``dtype``, ``n_tokens``, ``n_documents``, ``vocab_size``,
``eos_id``, ``sha256`` (of the .bin: the data fingerprint a checkpoint records),
``tokenizer_sha256`` and ``source``. Both are written under temporary names and moved into place,
the sidecar last: a sidecar means a complete cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ternarylm.data.errors import DataError
from ternarylm.data.tokenizer import tokenizer_sha256, without_padding
from ternarylm.format.hashing import sha256_file as file_sha256

CACHE_FORMAT = "ternarylm-token-cache"
CACHE_VERSION = 1
BATCH_CHARS = 2_000_000  # characters per encode_batch call: bounds memory while building
BATCH_DOCS = 8192
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


def cache_paths(out_path: str | Path) -> tuple[Path, Path]:
    """``(<out>.bin, <out>.json)``; ``out_path`` may be given with or without either suffix."""
    out = Path(out_path)
    if out.suffix in (".bin", ".json"):
        out = out.with_suffix("")
    return out.with_name(out.name + ".bin"), out.with_name(out.name + ".json")


@dataclass
class TokenCache:
    """An opened cache: ``tokens`` is a read-only ``np.memmap`` of all ids."""

    path: Path
    meta: dict
    tokens: np.ndarray

    @classmethod
    def open(cls, path: str | Path) -> TokenCache:
        bin_path, json_path = cache_paths(path)
        if not json_path.is_file():
            raise DataError(f"token cache {bin_path} is missing or incomplete "
                            f"(no {json_path.name}); rebuild it")
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
            dtype, n = DTYPES[meta["dtype"]], int(meta["n_tokens"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"token cache sidecar {json_path} is unreadable ({e}); "
                            "delete it and rebuild") from None
        if meta.get("format") != CACHE_FORMAT or meta.get("format_version", 0) > CACHE_VERSION:
            raise DataError(f"{json_path} is not a token cache this ternarylm can read; "
                            "delete it and rebuild")
        size = bin_path.stat().st_size if bin_path.is_file() else -1
        if size != n * dtype.itemsize:
            raise DataError(f"token cache {bin_path} has {size} bytes, its sidecar expects "
                            f"{n * dtype.itemsize}; delete both files and rebuild")
        return cls(bin_path, meta, np.memmap(bin_path, dtype=dtype, mode="r", shape=(n,)))

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    @property
    def n_documents(self) -> int:
        return int(self.meta["n_documents"])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def fingerprint(self) -> str:
        """sha256 of the .bin (``meta.data_fingerprint`` in a checkpoint)."""
        return self.meta["sha256"]

    def verify(self) -> None:
        """Re-hash the .bin (reads it all); ``DataError`` if it changed since it was written."""
        if file_sha256(self.path) != self.fingerprint:
            raise DataError(f"token cache {self.path} does not match its sha256; "
                            "delete it and rebuild")

    def split(self, val_fraction: float, seq_len: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(train_range, val_range)``, each ``(start, end)``: validation is the last
        ``val_fraction`` of the tokens and at least one window of ``seq_len + 1``;
        ``val_fraction = 0`` gives an empty validation range."""
        if not 0 <= val_fraction < 1:
            raise DataError(f"validation fraction {val_fraction} must be in [0, 1); "
                            "e.g. --val-fraction 0.01")
        if seq_len < 1:
            raise DataError(f"sequence length {seq_len} must be positive; e.g. --seq-len 256")
        n, need = self.n_tokens, seq_len + 1
        n_val = 0 if val_fraction == 0 else max(math.ceil(n * val_fraction), need)
        if n - n_val < need:
            what = "training and one for validation" if val_fraction else "training"
            raise DataError(f"corpus has {n} tokens, fewer than one sequence of {need} for {what}; "
                            "add data or lower --seq-len")
        return (0, n - n_val), (n - n_val, n)


def build_token_cache(documents: Iterable[str], tokenizer, out_path: str | Path, eos_id: int,
                      show_progress: bool = True, source: str = "") -> TokenCache:
    """Tokenize ``documents`` (streamed, in batches) into ``<out>.bin`` + ``<out>.json``."""
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if not 0 <= eos_id < vocab_size:
        raise DataError(f"end-of-document id {eos_id} is outside the tokenizer's "
                        f"vocabulary of {vocab_size}")
    dtype_name = "uint16" if vocab_size <= 65535 else "uint32"
    dtype = DTYPES[dtype_name]
    bin_path, json_path = cache_paths(out_path)
    bin_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_bin, tmp_json = (p.with_name(f"{p.name}.tmp-{os.getpid()}") for p in (bin_path, json_path))
    tok_sha = tokenizer_sha256(tokenizer)
    tokenizer = without_padding(tokenizer)
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    from tqdm import tqdm

    digest, n_tokens, n_docs = hashlib.sha256(), 0, 0
    try:
        bar = tqdm(desc=f"tokenizing -> {bin_path.name}", unit="tok", unit_scale=True,
                   disable=not show_progress)
        with open(tmp_bin, "wb") as fh, bar:
            for batch in _batches(documents):
                ids: list[int] = []
                for enc in encode(batch, add_special_tokens=False):
                    ids.extend(enc.ids)
                    ids.append(eos_id)
                chunk = np.asarray(ids, dtype=dtype).tobytes()
                fh.write(chunk)
                digest.update(chunk)
                n_tokens, n_docs = n_tokens + len(ids), n_docs + len(batch)
                bar.update(len(ids))
            fh.flush()
            os.fsync(fh.fileno())
        if n_docs == 0:
            raise DataError("no documents to tokenize; the data source is empty")
        meta = {"format": CACHE_FORMAT, "format_version": CACHE_VERSION, "dtype": dtype_name,
                "n_tokens": n_tokens, "n_documents": n_docs, "vocab_size": vocab_size,
                "eos_id": eos_id, "sha256": digest.hexdigest(), "tokenizer_sha256": tok_sha,
                "source": source}
        tmp_json.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        json_path.unlink(missing_ok=True)  # never leave an old sidecar describing the new .bin
        os.replace(tmp_bin, bin_path)
        os.replace(tmp_json, json_path)
    finally:
        tmp_bin.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
    return TokenCache.open(bin_path)


def cached_or_build(documents: Iterable[str], tokenizer, cache_dir: str | Path, source_key: str,
                    eos_id: int, show_progress: bool = True) -> TokenCache:
    """The cache keyed by (tokenizer sha256, ``source_key``) in ``cache_dir``, built if absent.

    ``documents`` is only iterated when building, so pass a lazy iterator (``iter_documents``).
    ``source_key`` names the data: ``fingerprint_sources(paths)`` or e.g. ``"stories:5000:seed0"``.
    """
    tok_sha = tokenizer_sha256(tokenizer)
    key = f"{tok_sha}\0{source_key}\0{eos_id}\0{CACHE_VERSION}"
    out = Path(cache_dir) / f"tokens-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if cache_paths(out)[1].is_file():
        try:
            cache = TokenCache.open(out)
            if cache.meta.get("tokenizer_sha256") == tok_sha:
                return cache
        except DataError:
            pass  # a damaged cache is rebuilt below
    return build_token_cache(documents, tokenizer, out, eos_id, show_progress=show_progress,
                             source=source_key)



def _batches(documents: Iterable[str]) -> Iterator[list[str]]:
    """Lists of non-blank documents of about ``BATCH_CHARS`` characters."""
    batch, chars = [], 0
    for doc in documents:
        if not doc.strip():
            continue
        batch.append(doc)
        chars += len(doc)
        if chars >= BATCH_CHARS or len(batch) >= BATCH_DOCS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch
