"""Fixtures for the fine-tuning tests: a synthetic MRPC folder, one fine-tuning run through the real
CLI on the session's tiny ternary LM (``tiny_ckpt``), and its classifier exports."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import cli
from synthetic_mrpc import write_mrpc_dir

FINETUNE = ["--epochs", "6", "--lr", "1e-3", "--batch-size", "16", "--patience", "3", "--seed", "0",
            "--no-progress", "--threads", "1"]


@pytest.fixture(scope="session")
def mrpc_dir(tmp_path_factory) -> Path:
    return write_mrpc_dir(tmp_path_factory.mktemp("data") / "MRPC", n_train=300, n_test=100, seed=0)


@pytest.fixture(scope="session")
def finetuned(tiny_ckpt, mrpc_dir, tmp_path_factory):
    """``(run_dir, CompletedProcess)`` of ``ternary-finetune mrpc`` on the synthetic MRPC."""
    out = tmp_path_factory.mktemp("ft") / "mrpc"
    proc = cli("ternarylm.cli.finetune", "mrpc", "--ckpt", tiny_ckpt, "--data", mrpc_dir, "--out", out,
               "--json", out.parent / "metrics-copy.json", *FINETUNE)
    return out, proc


@pytest.fixture(scope="session")
def classifier_export(finetuned, tmp_path_factory):
    """``classifier_export(target) -> Path``: the fine-tuned classifier exported once per target."""
    from ternarylm.export.api import export_checkpoint

    root = tmp_path_factory.mktemp("clf-exports")
    done: dict[str, Path] = {}

    def get(target: str) -> Path:
        if target not in done:
            done[target] = export_checkpoint(finetuned[0] / "ckpt.pt", root / target, target=target)
        return done[target]

    return get
