"""Turn training options into a tokenizer and a memory-mapped token cache inside the run folder."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

from ternarylm.data import DataError
from ternarylm.data.sources import iter_documents, iter_hf_dataset
from ternarylm.data.stories import synthetic_stories
from ternarylm.data.token_cache import TokenCache, build_token_cache
from ternarylm.data.tokenizer import load_tokenizer, train_bpe_tokenizer
from ternarylm.format.tokens import special_token_ids

TOKENIZER_TRAINING_DOCS = 200_000  # enough text to learn merges; the rest is only tokenized


def documents(args):
    """A fresh iterator over the training documents the options point at."""
    if args.dataset:
        return iter_hf_dataset(args.dataset, split=args.dataset_split, text_field=args.text_field,
                               config=args.dataset_config)
    if args.data:
        return iter_documents(args.data)
    return iter(synthetic_stories(args.stories, seed=0))


def source_description(args) -> dict:
    if args.dataset:
        return {"dataset": args.dataset, "config": args.dataset_config, "split": args.dataset_split}
    if args.data:
        return {"data": [str(Path(p).resolve()) for p in args.data]}
    return {"synthetic_stories": args.stories}


def prepare_tokenizer(args, default_vocab: int, tokenizer_json: str | None = None):
    """Tokenizer from the checkpoint (resume), a user path/name, or BPE trained on the data."""
    from tokenizers import Tokenizer

    if tokenizer_json is not None:
        return Tokenizer.from_str(tokenizer_json)
    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    docs = itertools.islice(documents(args), TOKENIZER_TRAINING_DOCS)
    return train_bpe_tokenizer(docs, args.vocab_size or default_vocab)


def prepare_tokens(args, tokenizer, run_dir: Path) -> TokenCache:
    """Build (or reuse) ``run_dir/data/tokens.bin`` for this tokenizer and data source."""
    key = hashlib.sha256(
        (tokenizer.to_str() + json.dumps(source_description(args), sort_keys=True)).encode()
    ).hexdigest()[:16]
    cache_path = run_dir / "data" / f"tokens-{key}"
    if Path(str(cache_path) + ".bin").is_file() and Path(str(cache_path) + ".json").is_file():
        return TokenCache.open(cache_path)
    eos = special_token_ids(tokenizer)["eos"]
    if eos is None:
        raise DataError("the tokenizer has no end-of-text token; use a tokenizer with </s>, [SEP] or <|endoftext|>")
    return build_token_cache(documents(args), tokenizer, cache_path, eos_id=eos, show_progress=args.progress)
