"""Fixtures shared across the suite: a tiny model trained once through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from clitools import TINY_TRAIN, cli


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder with a ternary `tiny` model trained for a few steps on the synthetic stories."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    cli("ternarylm.cli.train", "--out", out, *TINY_TRAIN)
    return out


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_run) -> Path:
    return tiny_run / "ckpt.pt"
