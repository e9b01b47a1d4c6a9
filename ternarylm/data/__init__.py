"""Data: corpora, tokenizers, token caches and batch samplers for training and evaluation.

Importing this package loads numpy and tokenizers only; the torch-backed samplers in ``loader`` are
imported on first use, like the model in ``ternarylm``.
"""

from __future__ import annotations

from ternarylm.data.errors import DataError
from ternarylm.data.sources import fingerprint_sources, iter_documents, iter_hf_dataset
from ternarylm.data.stories import DEFAULT_STORIES, synthetic_stories
from ternarylm.data.token_cache import TokenCache, build_token_cache, cached_or_build
from ternarylm.data.tokenizer import (
    load_tokenizer,
    tokenizer_from_json,
    tokenizer_sha256,
    tokenizer_to_json,
    train_bpe_tokenizer,
)
from ternarylm.format.tokens import special_token_ids

_LAZY = {
    "RandomWindowSampler": "ternarylm.data.loader",
    "eval_windows": "ternarylm.data.loader",
    "eval_labeled_windows": "ternarylm.data.loader",
}


def __getattr__(name: str):
    """Import torch-backed names on first use so ``import ternarylm.data`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ternarylm.data' has no attribute {name!r}")


__all__ = [
    "DEFAULT_STORIES", "DataError", "RandomWindowSampler", "TokenCache", "build_token_cache",
    "cached_or_build", "eval_labeled_windows", "eval_windows", "fingerprint_sources",
    "iter_documents", "iter_hf_dataset", "load_tokenizer", "special_token_ids", "synthetic_stories",
    "tokenizer_from_json", "tokenizer_sha256", "tokenizer_to_json", "train_bpe_tokenizer",
]
