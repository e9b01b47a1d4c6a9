import io

import numpy as np
import pytest
import torch

from ternarylm.data import DataError, build_token_cache
from ternarylm.data.loader import (
    IGNORE_INDEX,
    RandomWindowSampler,
    eval_labeled_windows,
    eval_windows,
)

TOKENS = np.arange(1000, dtype=np.uint16)  # window contents reveal their offsets


def _draw(sampler, n):
    return [sampler.next_batch() for _ in range(n)]


def test_batches_are_windows_in_range():
    s = RandomWindowSampler(TOKENS, 100, 300, seq_len=16, batch_size=8, seed=0)
    for batch in _draw(s, 20):
        assert batch.shape == (8, 17) and batch.dtype == torch.long
        assert torch.equal(batch - batch[:, :1], torch.arange(17).expand(8, 17))  # contiguous
        assert batch.min() >= 100 and batch.max() < 300


def test_same_seed_same_batches():
    a = _draw(RandomWindowSampler(TOKENS, 0, 1000, 16, 4, seed=7), 3)
    b = _draw(RandomWindowSampler(TOKENS, 0, 1000, 16, 4, seed=7), 3)
    c = _draw(RandomWindowSampler(TOKENS, 0, 1000, 16, 4, seed=8), 3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_resume_draws_the_same_batches():
    s = RandomWindowSampler(TOKENS, 0, 1000, 16, 4, seed=3)
    _draw(s, 3)
    buf = io.BytesIO()
    torch.save({"rng": {"sampler": s.state_dict()}}, buf)
    expected = _draw(s, 2)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["rng"]["sampler"]
    resumed = RandomWindowSampler(TOKENS, 0, 1000, 16, 4, seed=99)
    resumed.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(expected, _draw(resumed, 2)))


def test_ranks_split_one_global_batch():
    whole = RandomWindowSampler(TOKENS, 0, 1000, 16, 8, seed=5)
    ranks = [RandomWindowSampler(TOKENS, 0, 1000, 16, 4, seed=5, rank=r, world_size=2)
             for r in (0, 1)]
    for _ in range(3):
        parts = [r.next_batch() for r in ranks]
        assert not torch.equal(parts[0], parts[1])
        assert torch.equal(torch.cat(parts), whole.next_batch())
    assert torch.equal(ranks[0].state_dict()["generator"], ranks[1].state_dict()["generator"])


def test_sampler_errors():
    with pytest.raises(DataError, match="fewer than one sequence of 17"):
        RandomWindowSampler(TOKENS, 0, 16, 16, 4, seed=0)
    with pytest.raises(DataError, match="rank"):
        RandomWindowSampler(TOKENS, 0, 1000, 16, 4, seed=0, rank=2, world_size=2)
    s = RandomWindowSampler(TOKENS, 0, 1000, 16, 4, seed=0)
    with pytest.raises(DataError, match="generator"):
        s.load_state_dict({})


def test_eval_windows_predict_each_token_once():
    start, end, seq_len = 100, 300, 16  # 199 predictions: 12 full windows + a tail of 7
    windows = list(eval_windows(TOKENS, start, end, seq_len, batch_size=5))
    assert [w.shape[0] for w in windows] == [5, 5, 2]
    targets = torch.cat([w[:, 1:] for w in windows]).flatten().tolist()
    assert targets == list(range(start + 1, start + 1 + 12 * seq_len))
    assert len(list(eval_windows(TOKENS, start, end, seq_len, batch_size=5, max_batches=2))) == 2


def test_eval_labeled_windows_cover_the_tail():
    start, end, seq_len = 100, 300, 16
    scored = []
    for windows, labels in eval_labeled_windows(TOKENS, start, end, seq_len, batch_size=5):
        assert windows.shape == labels.shape and windows[:, -1].max() < end
        keep = labels[:, 1:] != IGNORE_INDEX
        assert torch.equal(labels[:, 1:][keep], windows[:, 1:][keep])
        scored += windows[:, 1:][keep].tolist()
    assert scored == list(range(start + 1, end))
    exact = list(eval_labeled_windows(TOKENS, 0, 33, 16, batch_size=4))  # no tail
    assert len(exact) == 1 and (exact[0][1] != IGNORE_INDEX).all()


def test_sampler_on_a_token_cache(tmp_path, bpe, stories):
    cache = build_token_cache(stories[:50], bpe, tmp_path / "c", eos_id=0, show_progress=False)
    train, val = cache.split(0.1, seq_len=32)
    batch = RandomWindowSampler(cache.tokens, *train, 32, 4, seed=0).next_batch()
    assert batch.shape == (4, 33) and int(batch.max()) < cache.vocab_size
    n_windows = sum(w.shape[0] for w in eval_windows(cache.tokens, *val, 32, 8))
    assert n_windows == (val[1] - val[0] - 1) // 32
