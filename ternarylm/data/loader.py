"""Training and evaluation batches cut from a memory-mapped token array (torch lives only here).

A batch is a LongTensor ``[batch, seq_len + 1]`` of consecutive tokens: inputs ``w[:, :-1]``,
targets ``w[:, 1:]`` (or pass ``w`` as both ``input_ids`` and ``labels`` to a Hugging Face causal
LM, which shifts them itself). Windows ignore document boundaries; the ``eos`` between documents
tells the model where one ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ternarylm.data.errors import DataError

IGNORE_INDEX = -100  # label of a context-only position (torch's cross_entropy default)


class RandomWindowSampler:
    """Windows at uniformly random offsets in ``tokens[start:end]``, reproducible from ``seed``.

    Distributed runs: every rank builds the sampler with the same ``seed`` and its own ``rank``.
    Each step one shared generator draws ``world_size * batch_size`` offsets and a rank keeps its
    slice, so ranks see different windows, the global batch is the same as a single process
    drawing ``world_size * batch_size``, and the generator state is identical on every rank:
    rank 0's checkpoint resumes them all.
    """

    def __init__(self, tokens: np.ndarray, start: int, end: int, seq_len: int, batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1):
        _check_range(tokens, start, end, seq_len)
        if batch_size < 1:
            raise DataError(f"batch size {batch_size} must be positive")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} must be in [0, world_size={world_size})")
        self.tokens, self.start, self.end = tokens, int(start), int(end)
        self.seq_len, self.batch_size = int(seq_len), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.generator = torch.Generator().manual_seed(int(seed))

    def next_batch(self) -> torch.Tensor:
        """LongTensor ``[batch_size, seq_len + 1]``."""
        n = self.world_size * self.batch_size
        starts = torch.randint(self.start, self.end - self.seq_len, (n,), generator=self.generator)
        mine = starts[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return _gather(self.tokens, mine.numpy(), self.seq_len)

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        """``{"generator": ByteTensor}``: safe for ``torch.load(weights_only=True)``."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        gen = state.get("generator") if isinstance(state, dict) else None
        if not isinstance(gen, torch.Tensor) or gen.dtype != torch.uint8:
            raise DataError("sampler state has no 'generator' byte tensor; "
                            "the checkpoint's rng entry is damaged")
        self.generator.set_state(gen.cpu())


def eval_windows(tokens: np.ndarray, start: int, end: int, seq_len: int, batch_size: int,
                 max_batches: int | None = None) -> Iterator[torch.Tensor]:
    """Non-overlapping windows ``[b, seq_len + 1]`` in order over ``tokens[start:end]``.

    Consecutive windows share one token, so every token after ``start`` is predicted exactly
    once, except a tail of fewer than ``seq_len`` tokens; ``eval_labeled_windows`` scores it too.
    """
    _check_range(tokens, start, end, seq_len)
    starts, _ = _eval_starts(start, end, seq_len, tail=False)
    for i in _batch_slices(len(starts), batch_size, max_batches):
        yield _gather(tokens, starts[i], seq_len)


def eval_labeled_windows(tokens: np.ndarray, start: int, end: int, seq_len: int, batch_size: int,
                         max_batches: int | None = None
                         ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(windows, labels)``: ``eval_windows`` plus a last window ending at ``end`` whose already
    scored positions are ``IGNORE_INDEX`` in ``labels``: every token after ``start`` counts once."""
    _check_range(tokens, start, end, seq_len)
    starts, n_context = _eval_starts(start, end, seq_len, tail=True)
    for i in _batch_slices(len(starts), batch_size, max_batches):
        windows = _gather(tokens, starts[i], seq_len)
        labels = windows.clone()
        if n_context and i.stop == len(starts):
            labels[-1, :n_context] = IGNORE_INDEX
        yield windows, labels


def _eval_starts(start: int, end: int, seq_len: int, tail: bool) -> tuple[np.ndarray, int]:
    """Window offsets, and the number of context-only positions of the tail window (0: none)."""
    n_full, rest = divmod(end - start - 1, seq_len)
    starts = start + seq_len * np.arange(n_full, dtype=np.int64)
    if tail and rest and n_full:
        return np.append(starts, end - seq_len - 1), seq_len + 1 - rest
    return starts, 0


def _batch_slices(n: int, batch_size: int, max_batches: int | None) -> Iterator[slice]:
    if batch_size < 1:
        raise DataError(f"batch size {batch_size} must be positive")
    for b, lo in enumerate(range(0, n, batch_size)):
        if max_batches is not None and b >= max_batches:
            return
        yield slice(lo, min(lo + batch_size, n))


def _gather(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> torch.Tensor:
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(seq_len + 1)  # (B, T+1)
    return torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))


def _check_range(tokens: np.ndarray, start: int, end: int, seq_len: int) -> None:
    if seq_len < 1:
        raise DataError(f"sequence length {seq_len} must be positive; e.g. --seq-len 256")
    if not 0 <= start <= end <= len(tokens):
        raise DataError(f"token range [{start}, {end}) is outside the corpus's "
                        f"{len(tokens)} tokens")
    if end - start < seq_len + 1:
        raise DataError(f"token range has {end - start} tokens, fewer than one sequence of "
                        f"{seq_len + 1}; add data or lower --seq-len")
