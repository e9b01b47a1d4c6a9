"""Helpers for tests that build tiny models in-process (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def quick_train(model, tokenizer, steps: int, *, stories: int = 200, batch_size: int = 16):
    """A few AdamW steps of next-token loss on the synthetic stories (64-token windows, fixed seed),
    so that greedy decoding has clear winners; returns the model in eval mode."""
    from ternarylm.data.stories import synthetic_stories

    ids = np.concatenate([tokenizer.encode(s).ids + [0] for s in synthetic_stories(stories, seed=1)])
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - 64, size=batch_size)
        batch = torch.tensor(np.stack([ids[s:s + 64] for s in starts]), dtype=torch.long)
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def save_lm_checkpoint(path: Path, state: dict, cfg, tokenizer, step: int) -> Path:
    """A causal-LM ckpt.pt in the trainer's layout (no optimizer state)."""
    from ternarylm.checkpoint import save_checkpoint

    return save_checkpoint({"kind": "causal-lm", "config": cfg.to_dict(), "tokenizer_json": tokenizer.to_str(),
                            "model": state, "step": step, "meta": {}}, path)
