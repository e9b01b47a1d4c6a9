"""Shared fixtures: a tiny TernaryLM trained for a few steps on synthetic stories (so greedy decoding
has clear winners), saved as a real ckpt.pt and exported once per target for the whole session."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from modeltools import quick_train, save_lm_checkpoint  # noqa: E402  (after the torch skip)

PROMPT = "Once upon a time, there was a little girl named"
TRAIN_STEPS = 40


@pytest.fixture(scope="session")
def tokenizer():
    from ternarylm.data.stories import synthetic_stories
    from ternarylm.data.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(synthetic_stories(200), vocab_size=384)


def _checkpoint(path: Path, model, cfg, tokenizer) -> Path:
    return save_lm_checkpoint(path, model.state_dict(), cfg, tokenizer, TRAIN_STEPS)


@pytest.fixture(scope="session")
def trained(tokenizer, tmp_path_factory):
    """``(model, ckpt_path)``: tiny preset (MHA, per-tensor scales, act_bits 8), briefly trained."""
    from ternarylm.configuration import TernaryLMConfig
    from ternarylm.modeling import TernaryLMForCausalLM

    torch.manual_seed(0)
    cfg = TernaryLMConfig.from_preset("tiny", vocab_size=tokenizer.get_vocab_size(), eos_token_id=0,
                                      pad_token_id=1)
    model = quick_train(TernaryLMForCausalLM(cfg), tokenizer, TRAIN_STEPS)
    return model, _checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt.pt", model, cfg, tokenizer)


@pytest.fixture(scope="session")
def gqa(tokenizer, tmp_path_factory):
    """``(model, ckpt_path)``: random weights, 2 kv heads for 4 query heads, group-32 scales, no
    activation quantisation (so NumPy and PyTorch agree to float rounding everywhere)."""
    from ternarylm.configuration import TernaryLMConfig
    from ternarylm.modeling import TernaryLMForCausalLM

    torch.manual_seed(1)
    cfg = TernaryLMConfig.from_preset("tiny", vocab_size=tokenizer.get_vocab_size(), num_key_value_heads=2,
                                      quant={"granularity": "group", "group_size": 32, "activation_bits": 0}, eos_token_id=0,
                                      pad_token_id=1, initializer_range=0.1)
    model = TernaryLMForCausalLM(cfg).eval()
    return model, _checkpoint(tmp_path_factory.mktemp("ckpt_gqa") / "ckpt.pt", model, cfg, tokenizer)


EXPORTS = {  # name -> (checkpoint fixture, export_checkpoint options)
    "portable-2bit": ("trained", dict(target="portable", packing="2bit")),
    "portable-base3": ("trained", dict(target="portable", packing="base3")),
    "portable-int4": ("trained", dict(target="portable", embedding="int4", lm_head="int4")),
    "ort-cpu": ("trained", dict(target="ort-cpu")),
    "fp32": ("trained", dict(target="fp32")),
    "fp16": ("trained", dict(target="fp16")),
    "gqa-portable": ("gqa", dict(target="portable", packing="base3")),
    "gqa-ort-cpu": ("gqa", dict(target="ort-cpu", embedding="int4", lm_head="int4")),
}


@pytest.fixture(scope="session")
def export_dir(request, tmp_path_factory):
    """``export_dir(name) -> Path``: the folder for one EXPORTS entry, exported on first use."""
    from ternarylm.export.api import export_checkpoint

    root = tmp_path_factory.mktemp("exports")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            ckpt_fixture, options = EXPORTS[name]
            _, ckpt = request.getfixturevalue(ckpt_fixture)
            done[name] = export_checkpoint(ckpt, root / name, **options)
        return done[name]

    return get


@pytest.fixture
def folder_copy(export_dir, tmp_path):
    """``folder_copy(name) -> Path``: a private copy of an export to tamper with."""

    def copy(name: str) -> Path:
        return Path(shutil.copytree(export_dir(name), tmp_path / name))

    return copy


@pytest.fixture(scope="session")
def prompt_ids(tokenizer) -> list[int]:
    return tokenizer.encode(PROMPT).ids


@pytest.fixture(scope="session")
def torch_logits():
    """``torch_logits(model, ids, attention_mask=None, position_ids=None) -> (B, T, V)`` numpy."""

    def run(model, ids, attention_mask=None, position_ids=None) -> np.ndarray:
        kwargs = {k: torch.tensor(np.asarray(v)) for k, v in
                  (("attention_mask", attention_mask), ("position_ids", position_ids)) if v is not None}
        with torch.no_grad():
            return model(input_ids=torch.tensor(np.asarray(ids)), use_cache=False, **kwargs).logits.numpy()

    return run
