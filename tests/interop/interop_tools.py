"""Tiny Hugging Face models built locally (no hub): a full-precision Llama folder as a user would hold it
(imported by name: tests/interop is on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path

# The ternary checkpoint fixture keeps one decoder linear in full precision, so its HF folder has a float
# linear beside the BitNet ones (transformers' modules_to_not_convert).
KEPT_FP = "model.layers.1.self_attn.o_proj"

LLAMA_SHAPES = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256)


def tiny_tokenizer(vocab_size: int = 320, stories: int = 300):
    """A byte-level BPE trained on the synthetic stories (``<|endoftext|>`` 0, ``<|pad|>`` 1)."""
    from ternarylm.data.stories import synthetic_stories
    from ternarylm.data.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(synthetic_stories(stories, seed=0), vocab_size)


def save_tokenizer(tok, folder: Path) -> None:
    """tokenizer.json + tokenizer_config.json, as ``tokenizer.save_pretrained`` writes them."""
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                            pad_token="<|pad|>").save_pretrained(str(folder))


def make_llama_folder(folder: Path, tok, *, seed: int = 0, tie: bool = False, vocab_size: int | None = None,
                      with_tokenizer: bool = True, **overrides) -> Path:
    """A random-init ``LlamaForCausalLM`` (hidden 64, 2 layers, GQA 4/2 heads) saved with save_pretrained."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size or tok.get_vocab_size(), tie_word_embeddings=tie,
                         bos_token_id=0, eos_token_id=0, pad_token_id=1, rope_theta=10000.0,
                         **{**LLAMA_SHAPES, **overrides})
    LlamaForCausalLM(config).save_pretrained(str(folder))
    if with_tokenizer:
        save_tokenizer(tok, folder)
    return Path(folder)


def edit_config(folder: Path, **changes) -> None:
    path = Path(folder) / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))
