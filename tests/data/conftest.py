"""Shared fixtures for the data tests: a small trained tokenizer and a few stories."""

from __future__ import annotations

from pathlib import Path

import pytest

from ternarylm.data import synthetic_stories, train_bpe_tokenizer

SHARED = Path(__file__).resolve().parents[3] / "shared"  # optional material beside the repo


@pytest.fixture(scope="session")
def stories() -> list[str]:
    return synthetic_stories(300, seed=0)


@pytest.fixture(scope="session")
def bpe(stories):
    return train_bpe_tokenizer(stories, vocab_size=400)
