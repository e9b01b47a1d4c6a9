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


BITNET_LAYOUTS = ("packed", "master", "autobitlinear")


def make_bitnet_folder(folder: Path, tok, *, layout: str = "packed", seed: int = 0, tie: bool = True,
                       with_tokenizer: bool = True, train_steps: int = 40, **overrides) -> Path:
    """A tiny ``BitNetForCausalLM`` (hidden 64, 2 layers, GQA 4/2 heads, relu2, sub-norms, RoPE theta 5e5),
    trained ``train_steps`` QAT steps on the synthetic stories (as our model with BitNet's architecture, whose
    parameter names are BitNet's) so greedy decoding has clear winners, saved the way the hub holds one:

    - ``packed``: microsoft/bitnet-b1.58-2B-4T's layout: bf16 tensors, each decoder linear as uint8 ``[N/4, K]``
      (transformers' ``pack_weights``) + ``weight_scale`` = 1/gamma, ``quantization_config`` bitnet /
      ``bitlinear`` / offline;
    - ``master``: the bf16 master weights, no quantization_config (the ``-bf16`` repository's layout);
    - ``autobitlinear``: float trits + ``weight_scale`` = gamma, ``linear_class: autobitlinear`` offline.

    """
    import torch
    from safetensors.torch import save_file
    from transformers import BitNetConfig, BitNetForCausalLM
    from transformers.integrations.bitnet import pack_weights

    from modeltools import quick_train
    from ternarylm.configuration import TernaryLMConfig
    from ternarylm.modeling import TernaryLMForCausalLM

    torch.manual_seed(seed)
    vocab = overrides.pop("vocab_size", tok.get_vocab_size())
    config = BitNetConfig(vocab_size=vocab, tie_word_embeddings=tie, bos_token_id=0, eos_token_id=0,
                          pad_token_id=1, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                          **{**LLAMA_SHAPES, **overrides})
    ours = TernaryLMForCausalLM(TernaryLMConfig(**{**LLAMA_SHAPES, **overrides}, vocab_size=vocab, hidden_act="relu2",
                                                sub_norms=True, tie_word_embeddings=tie, rope_theta=500000.0,
                                                rms_norm_eps=config.rms_norm_eps))
    with torch.no_grad():  # RMSNorm gains other than 1, so a swapped norm shows
        for name, p in ours.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    if train_steps and vocab >= tok.get_vocab_size():
        quick_train(ours, tok, train_steps, batch_size=8)
    model = BitNetForCausalLM(config)
    model.load_state_dict(ours.state_dict())
    folder = Path(folder)
    if layout == "master":
        model.to(torch.bfloat16).save_pretrained(str(folder))
    else:
        state = {k: v.detach().to(torch.bfloat16) for k, v in model.state_dict().items()}
        if tie:
            state.pop("lm_head.weight", None)
        for name, module in model.named_modules():
            if name.startswith("model.layers.") and name.endswith("_proj"):
                w = module.weight.detach().float()
                gamma = w.abs().mean().clamp(min=1e-5)
                trits = (w / gamma).round().clamp(-1, 1)
                if layout == "packed":
                    state[f"{name}.weight"] = pack_weights(trits.to(torch.int8).clone())
                    state[f"{name}.weight_scale"] = (1.0 / gamma).reshape(1).to(torch.bfloat16)
                else:
                    state[f"{name}.weight"] = trits.to(torch.bfloat16)
                    state[f"{name}.weight_scale"] = gamma.reshape(1).to(torch.bfloat16)
        linear_class = "bitlinear" if layout == "packed" else "autobitlinear"
        config.quantization_config = {"quant_method": "bitnet", "linear_class": linear_class,
                                      "quantization_mode": "offline"}
        config.dtype = "bfloat16"
        folder.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(str(folder))
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
    if with_tokenizer:
        save_tokenizer(tok, folder)
    return folder
