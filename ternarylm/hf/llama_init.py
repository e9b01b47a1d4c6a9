"""A full-precision Llama folder in, as the start of a ternary QAT run.

**In** (``load_llama_init``, ``ternary-train --init-from``): a full-precision Llama-architecture folder
(config.json + safetensors + tokenizer; a hub name is downloaded) -> the architecture fields of a
``TernaryLMConfig``, a state dict with our parameter names (the latent weights of the ternary run) and the
folder's tokenizer. See docs/HF.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ternarylm.format.tokens import special_token_ids
from ternarylm.hf.folder import HFError, _quote, read_config, read_tokenizer, read_weights, resolve_model_folder

INIT_MODEL_TYPES = ("llama",)  # what --init-from accepts (model_type in config.json)


@dataclass
class InitSource:
    """A full-precision Llama to start a ternary run from: ``architecture`` (``TernaryLMConfig`` fields),
    ``state_dict`` (float32, our parameter names, the LM head untied), ``tokenizer`` (``tokenizers.Tokenizer``),
    ``notes`` (lines worth printing) and ``source`` (the folder it was read from)."""

    architecture: dict
    state_dict: dict
    tokenizer: object
    notes: list = field(default_factory=list)
    source: str = ""


def load_llama_init(path_or_name: str) -> InitSource:
    """Read a Llama-architecture Hugging Face model (local folder, or a hub name for online users) for
    ``ternary-train --init-from``. Raises ``HFError`` (one line) for anything it cannot start from."""
    folder = resolve_model_folder(str(path_or_name))
    cfg = read_config(folder)
    architecture, notes = llama_architecture(cfg, folder)
    tokenizer = read_tokenizer(folder)
    n_tok = tokenizer.get_vocab_size()  # the tokenizer's checks first: they need no weights read
    if n_tok > architecture["vocab_size"]:
        raise HFError(f"the tokenizer of {folder} has {n_tok} tokens but the model's embedding has "
                      f"{architecture['vocab_size']} rows; pass a folder whose tokenizer belongs to its weights")
    if special_token_ids(tokenizer)["eos"] is None:
        from ternarylm.format.tokens import EOS_NAMES

        raise HFError(f"the tokenizer of {folder} has no end-of-text token named {', '.join(EOS_NAMES)}, which "
                      "training separates documents with; add one of them to its tokenizer.json")
    state = read_weights(folder)
    state_dict = _match_weights(state, architecture, bool(cfg.get("tie_word_embeddings", False)), folder)
    return InitSource(architecture=architecture, state_dict=state_dict, tokenizer=tokenizer, notes=notes,
                      source=str(folder))


def llama_architecture(cfg: dict, where="config.json") -> tuple[dict, list[str]]:
    """``TernaryLMConfig`` architecture fields from a Llama ``config.json`` dict, and notes; ``HFError`` for
    a model this architecture cannot reproduce (another model type, biases, another activation, RoPE
    scaling, a head_dim that is not hidden_size / heads, a quantised folder)."""
    model_type = cfg.get("model_type")
    if model_type not in INIT_MODEL_TYPES:
        raise HFError(f"{where} has model_type {model_type!r}; --init-from supports "
                      f"{', '.join(INIT_MODEL_TYPES)} (Llama-architecture LlamaForCausalLM models)")
    if cfg.get("quantization_config"):
        method = (cfg["quantization_config"] or {}).get("quant_method", "?")
        raise HFError(f"{where} is quantised (quant_method {method}); --init-from needs full-precision weights")
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):
        raise HFError(f"{where} uses hidden_act {cfg.get('hidden_act')!r}; TernaryLM's MLP is SwiGLU (silu)")
    for bias in ("attention_bias", "mlp_bias"):
        if cfg.get(bias):
            raise HFError(f"{where} has {bias} true; TernaryLM's linears have no biases")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "?"
    if rope_type not in ("default", None):
        raise HFError(f"{where} uses RoPE type {rope_type!r}; TernaryLM supports default RoPE (rope_theta) only, "
                      "so its positions would change")
    theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0) if isinstance(rope, dict) else 10000.0)
    arch = {}
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings"):
        value = cfg.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise HFError(f"{where} has no positive integer {name} (got {value!r})")
        arch[name] = value
    arch["num_key_value_heads"] = cfg.get("num_key_value_heads") or arch["num_attention_heads"]
    arch["rope_theta"] = float(theta)
    arch["rms_norm_eps"] = float(cfg.get("rms_norm_eps", 1e-6))
    head_dim = cfg.get("head_dim")
    if head_dim is not None and head_dim * arch["num_attention_heads"] != arch["hidden_size"]:
        raise HFError(f"{where} has head_dim {head_dim} but hidden_size / num_attention_heads = "
                      f"{arch['hidden_size'] / arch['num_attention_heads']:g}; TernaryLM needs them equal")
    from ternarylm.configuration import TernaryLMConfig

    try:
        TernaryLMConfig(**arch)
    except ValueError as e:
        raise HFError(f"{where}: {_quote(e)}") from None
    notes = []
    if cfg.get("tie_word_embeddings"):
        notes.append(f"{where} ties its LM head to the embedding; the LM head starts as a copy and trains "
                     "separately (TernaryLM's head is untied)")
    return arch, notes


def _match_weights(state: dict, arch: dict, tied: bool, folder: Path) -> dict:
    """Our state dict (float32) from the folder's tensors: names and shapes checked against the model the
    architecture builds; a missing LM head is the embedding's copy when the folder ties them."""
    import torch

    from ternarylm.configuration import TernaryLMConfig
    from ternarylm.modeling import TernaryLMForCausalLM

    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if state and not any(k.startswith("model.") for k in state) and "embed_tokens.weight" in state:
        state = {("lm_head.weight" if k == "lm_head.weight" else f"model.{k}"): v for k, v in state.items()}
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in TernaryLMForCausalLM(TernaryLMConfig(**arch)).state_dict().items()}
    embed = state.get("model.embed_tokens.weight")
    if embed is not None and embed.ndim == 2 and embed.shape[0] != arch["vocab_size"]:
        raise HFError(f"{folder}: the embedding has {embed.shape[0]} rows but config.json says vocab_size "
                      f"{arch['vocab_size']}; the vocabulary does not match the embedding")
    if "lm_head.weight" not in state and embed is not None:
        if not tied:
            raise HFError(f"{folder} has no lm_head.weight and does not tie it to the embedding; pass a "
                          "LlamaForCausalLM folder (not a base LlamaModel)")
        state["lm_head.weight"] = embed
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise HFError(f"{folder} lacks {len(missing)} weight(s) a Llama of its config.json has, e.g. {missing[0]}")
    if unexpected:
        raise HFError(f"{folder} holds {len(unexpected)} weight(s) a Llama of its config.json has not, "
                      f"e.g. {unexpected[0]}")
    out = {}
    for name, shape in expected.items():
        tensor = state[name]
        if tuple(tensor.shape) != shape:
            raise HFError(f"{folder}: {name} has shape {list(tensor.shape)}, its config.json implies {list(shape)}")
        out[name] = tensor.to(torch.float32)  # load_state_dict copies it into the model
    return out
