"""Fixtures for the Hugging Face interop tests: a tiny fp Llama folder and a tiny trained ternary ckpt."""

from __future__ import annotations

import contextlib

import pytest

from interop_tools import KEPT_FP, make_llama_folder, tiny_tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    """In-process torch on one thread (the CLI runs use --threads 1): on a busy 2-core machine two
    OpenMP threads made the fixture's 20 steps take 30 s instead of 0.3 s. Restored afterwards."""
    with _torch_threads(1):
        yield


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def interop_tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def llama_folder(tmp_path_factory, interop_tokenizer):
    return make_llama_folder(tmp_path_factory.mktemp("hf") / "tiny-llama", interop_tokenizer)


@pytest.fixture(scope="session")
def ternary_ckpt(tmp_path_factory, interop_tokenizer):
    """ckpt.pt of a `tiny` TernaryLM (GQA 4/2 heads, per-tensor scales, 8-bit activations, one linear
    kept at 16 bits) after 20 AdamW steps on the synthetic stories."""
    import torch

    from modeltools import quick_train, save_lm_checkpoint
    from ternarylm.configuration import TernaryLMConfig
    from ternarylm.format.tokens import special_token_ids
    from ternarylm.modeling import TernaryLMForCausalLM

    tok = interop_tokenizer
    special = special_token_ids(tok)
    cfg = TernaryLMConfig.from_preset("tiny", vocab_size=tok.get_vocab_size(), num_key_value_heads=2,
                                      quant={"keep_precision": {KEPT_FP: 16}}, bos_token_id=special["bos"],
                                      eos_token_id=special["eos"], pad_token_id=special["pad"])
    torch.manual_seed(0)
    with _torch_threads(1):
        model = quick_train(TernaryLMForCausalLM(cfg), tok, 20, batch_size=8)
    return save_lm_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt.pt", model.state_dict(), cfg, tok, 20)
