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
from ternarylm.hf.architecture import decoder_architecture, match_weights
from ternarylm.hf.folder import HFError, read_config, read_tokenizer, read_weights, resolve_model_folder

INIT_MODEL_TYPES = ("llama",)  # full-precision models --init-from accepts (model_type in config.json)
TERNARY_MODEL_TYPES = ("bitnet", "ternarylm")  # ternary folders it continues QAT from (and BitNet-quantised llama)


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
    keep_precision: dict = field(default_factory=dict)  # a ternary folder's own full-precision linears


def load_llama_init(path_or_name: str) -> InitSource:
    """Read a Llama-architecture Hugging Face model (local folder, or a hub name for online users) for
    ``ternary-train --init-from``; a ternary folder (BitNet b1.58, a BitNet-quantised Llama, our own
    ``save_pretrained``) continues QAT from its latent weights (``ternary_in``), keeping its architecture
    (relu2, sub-norms, tied head). Raises ``HFError`` (one line) for anything it cannot start from."""
    folder = resolve_model_folder(str(path_or_name))
    cfg = read_config(folder)
    quant = cfg.get("quantization_config")
    if cfg.get("model_type") in TERNARY_MODEL_TYPES or (isinstance(quant, dict) and quant.get("quant_method") == "bitnet"):
        return _ternary_init(folder)
    architecture, notes = llama_architecture(cfg, folder)
    tokenizer = read_tokenizer(folder)
    n_tok = tokenizer.get_vocab_size()  # the tokenizer's checks first: they need no weights read
    if n_tok > architecture["vocab_size"]:
        raise HFError(f"the tokenizer of {folder} has {n_tok} tokens but the model's embedding has "
                      f"{architecture['vocab_size']} rows; pass a folder whose tokenizer belongs to its weights")
    _check_end_of_text(tokenizer, folder)
    state = read_weights(folder)
    from ternarylm.configuration import TernaryLMConfig

    state_dict = match_weights(state, TernaryLMConfig(**architecture), bool(cfg.get("tie_word_embeddings", False)),
                               folder)
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
        raise HFError(f"{where} is quantised (quant_method {method}); --init-from needs full-precision weights "
                      "or a ternary (BitNet) folder")
    arch = decoder_architecture(cfg, where, hidden_acts=("silu",))
    notes = []
    if cfg.get("tie_word_embeddings"):
        notes.append(f"{where} ties its LM head to the embedding; the LM head starts as a copy and trains "
                     "separately (TernaryLM's head is untied)")
    return arch, notes




def _check_end_of_text(tokenizer, folder: Path) -> None:
    if special_token_ids(tokenizer)["eos"] is None:
        from ternarylm.format.tokens import EOS_NAMES

        raise HFError(f"the tokenizer of {folder} has no end-of-text token named {', '.join(EOS_NAMES)}, which "
                      "training separates documents with; add one of them to its tokenizer.json")


def _ternary_init(folder: Path) -> InitSource:
    """A ternary folder as a QAT start: its architecture fields and latent weights (``checkpoint_from_hf``:
    stored trits become latent weights that ternarise back to them), and its tokenizer."""
    from tokenizers import Tokenizer

    from ternarylm.hf.ternary_in import checkpoint_from_hf

    ckpt = checkpoint_from_hf(str(folder))
    config = ckpt["config"]
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "max_position_embeddings", "rope_theta", "rms_norm_eps", "hidden_act", "sub_norms",
            "tie_word_embeddings")
    notes = [f"{folder} is ternary ({ckpt['hf_source']['model_type']}, {ckpt['hf_source']['layout']}): QAT continues "
             "from weights that ternarise to its own trits"]
    tokenizer = Tokenizer.from_str(ckpt["tokenizer_json"])
    _check_end_of_text(tokenizer, folder)
    keep = dict(config["quant"].get("keep_precision") or {})
    if keep:
        notes.append(f"{len(keep)} linear(s) the folder keeps in full precision stay so (--keep-precision can "
                     "override them)")
    from ternarylm.checkpoint import latent_weights

    return InitSource(architecture={k: config[k] for k in keys}, state_dict=latent_weights(ckpt), tokenizer=tokenizer,
                      notes=notes, source=str(folder), keep_precision=keep)
