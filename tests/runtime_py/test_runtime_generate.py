"""generate() and the sampler: the golden greedy test (NumPy == onnxruntime == PyTorch) and sampling
semantics shared by both engines."""

from __future__ import annotations

import numpy as np
import pytest

from ternarylm.runtime_py import ContextError, SamplingConfig, generate, load_numpy, load_ort, sample_next

torch = pytest.importorskip("torch")

NEW = 24


@pytest.mark.parametrize("name", ["portable-2bit", "portable-base3"])
def test_greedy_tokens_equal_across_numpy_ort_pytorch(name, export_dir, trained, prompt_ids):
    model, _ = trained
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                             max_new_tokens=NEW, do_sample=False, eos_token_id=0, pad_token_id=1)
    expected = out[0, len(prompt_ids):].tolist()
    folder = export_dir(name)
    got_np, stats_np = generate(load_numpy(folder), prompt_ids, NEW, eos_id=0)
    got_ort, stats_ort = generate(load_ort(folder), prompt_ids, NEW, eos_id=0)
    assert got_np == got_ort == expected
    assert len(set(expected)) > 3  # the trained model says something, not one token repeated
    assert stats_np.engine == "numpy" and stats_ort.engine == "ort"


def test_sampled_tokens_equal_across_engines_and_reproducible(export_dir, prompt_ids):
    folder = export_dir("gqa-portable")  # act_bits 0: both engines agree to float rounding
    opts = dict(temperature=0.9, top_k=50, top_p=0.95, seed=7)
    a, _ = generate(load_numpy(folder), prompt_ids, 16, **opts)
    b, _ = generate(load_ort(folder), prompt_ids, 16, **opts)
    c, _ = generate(load_numpy(folder), prompt_ids, 16, **opts)
    d, _ = generate(load_numpy(folder), prompt_ids, 16, **{**opts, "seed": 8})
    assert a == b == c
    assert a != d


def test_stats_streaming_and_stops(export_dir, prompt_ids):
    engine = load_numpy(export_dir("portable-2bit"))
    seen = []
    ids, stats = generate(engine, prompt_ids, 5, on_token=seen.append)
    assert seen == ids and len(ids) == 5 and stats.stop_reason == "length"
    assert stats.prompt_tokens == len(prompt_ids) and stats.new_tokens == 5
    assert stats.prefill_s > 0 and stats.decode_tokens_per_s > 0 and "tokens/s" in stats.summary()
    stopped, stats = generate(engine, prompt_ids, 5, eos_id=ids[0])
    assert stopped == ids[:1] and stats.stop_reason == "eos"
    context = engine.config.max_position_embeddings
    long_prompt = (prompt_ids * context)[: context - 3]
    ids, stats = generate(engine, long_prompt, 10)
    assert len(ids) == 3 and stats.stop_reason == "context"
    with pytest.raises(ContextError, match=f"context is {context}"):
        generate(engine, (prompt_ids * context)[: context + 1], 1)
    with pytest.raises(ValueError, match="empty"):
        generate(engine, [], 1)


def test_sampler_semantics():
    rng = np.random.default_rng(0)
    logits = np.array([1.0, 3.0, 2.0, -1.0, 3.0])
    assert sample_next(logits, SamplingConfig(), rng) == 1  # greedy: first of the tied maxima
    for cfg in (SamplingConfig(2.0, top_k=1), SamplingConfig(5.0, top_p=1e-6)):
        assert {sample_next(logits, cfg, rng) for _ in range(50)} == {1}
    assert {sample_next(logits, SamplingConfig(1.0, top_k=3), rng) for _ in range(300)} == {1, 4, 2}
    draws = [sample_next(np.log([1.0, 3.0]), SamplingConfig(1.0), rng) for _ in range(4000)]
    assert abs(np.mean(draws) - 0.75) < 0.03
    seq = [sample_next(logits, SamplingConfig(1.0), np.random.default_rng(3)) for _ in range(3)]
    assert len(set(seq)) == 1  # same seed, same draw
    for bad in (dict(temperature=-1), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            SamplingConfig(**bad)
