"""Validation windows for an analysis, built the way ``ternary-eval`` builds them.

The run's own data, or ``--data``/``--dataset``, tokenised with the checkpoint's tokenizer into a
temporary token cache and split like training (``ternarylm.training.args.run_args_for_eval``, shared with
ternary-eval). Windows are cloned out of the cache: every sensitivity evaluation reuses them.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

from ternarylm.checkpoint import tokenizer_from_checkpoint


@dataclasses.dataclass
class EvalData:
    windows: list  # LongTensors [B, T+1], fixed: every evaluation uses exactly these
    seq_len: int
    batch_size: int
    split: str
    source: object  # what was read: "training data of the run" or the --data/--dataset given
    token_range: tuple[int, int]


def validation_windows(ckpt: dict, data=(), dataset: str | None = None, dataset_config: str | None = None,
                       split: str = "val", seq_len: int | None = None, batch_size: int = 8,
                       eval_tokens: int | None = 4096, eval_batches: int | None = None) -> EvalData:
    """Up to ``eval_batches`` batches (or enough for ``eval_tokens`` predicted tokens) of ``split``."""
    from ternarylm.data.loader import eval_windows
    from ternarylm.training.args import run_args_for_eval
    from ternarylm.training.prepare import prepare_tokens

    args = run_args_for_eval(ckpt, data, dataset, dataset_config)
    seq_len = seq_len or args.seq_len
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if eval_batches is None:
        if eval_tokens is None or eval_tokens < 1:
            raise ValueError("--eval-tokens must be at least 1")
        eval_batches = max(1, math.ceil(eval_tokens / (seq_len * batch_size)))
    elif eval_batches < 1:
        raise ValueError("--eval-batches must be at least 1")
    tokenizer = tokenizer_from_checkpoint(ckpt)
    with tempfile.TemporaryDirectory(prefix="ternary-analyze-") as tmp:
        cache = prepare_tokens(args, tokenizer, Path(tmp))
        _, (v0, v1) = cache.split(args.val_fraction, seq_len)
        start, end = {"val": (v0, v1), "all": (0, cache.n_tokens)}[split]
        windows = [w.clone() for w in eval_windows(cache.tokens, start, end, seq_len, batch_size,
                                                   max_batches=eval_batches)]
    source = (list(data) if data else {"dataset": dataset} if dataset else
              "training data of the run" + ("" if args.data or args.dataset else
                                            f" (built-in synthetic stories, {args.stories})"))
    return EvalData(windows, seq_len, batch_size, split, source, (int(start), int(end)))
