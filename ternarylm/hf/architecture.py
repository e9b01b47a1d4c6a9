"""A Hugging Face decoder's config.json and tensors as TernaryLM's architecture fields and state dict, for
the Llama and BitNet families (``llama_init`` and ``ternary_in`` share it)."""

from __future__ import annotations

from pathlib import Path

from ternarylm.hf.folder import HFError, _quote


def decoder_architecture(cfg: dict, where="config.json", hidden_acts=("silu",)) -> dict:
    """``TernaryLMConfig`` fields from a Llama-family ``config.json`` dict: sizes, GQA heads, RoPE theta, RMSNorm
    eps and ``hidden_act`` (one of ``hidden_acts``); ``HFError`` for what this architecture cannot reproduce
    (biases, another activation, RoPE scaling, a head_dim that is not hidden_size / heads)."""
    act = {"swish": "silu"}.get(cfg.get("hidden_act", "silu"), cfg.get("hidden_act"))
    if act not in hidden_acts:
        names = {"silu": "SwiGLU (silu)", "relu2": "squared ReLU (relu2)"}
        raise HFError(f"{where} uses hidden_act {cfg.get('hidden_act')!r}; supported here: "
                      f"{', '.join(names.get(a, a) for a in hidden_acts)}")
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
    arch["hidden_act"] = act
    head_dim = cfg.get("head_dim")
    if head_dim is not None and head_dim * arch["num_attention_heads"] != arch["hidden_size"]:
        raise HFError(f"{where} has head_dim {head_dim} but hidden_size / num_attention_heads = "
                      f"{arch['hidden_size'] / arch['num_attention_heads']:g}; TernaryLM needs them equal")
    from ternarylm.configuration import TernaryLMConfig

    try:
        TernaryLMConfig(**arch)
    except ValueError as e:
        raise HFError(f"{where}: {_quote(e)}") from None
    return arch


def with_model_prefix(state: dict) -> dict:
    """Tensor names as ``*ForCausalLM`` has them: a base model's (``embed_tokens.weight``) get ``model.``;
    RoPE buffers some old checkpoints store are dropped."""
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if state and not any(k.startswith("model.") for k in state) and "embed_tokens.weight" in state:
        state = {("lm_head.weight" if k == "lm_head.weight" else f"model.{k}"): v for k, v in state.items()}
    return state


def expected_shapes(config) -> dict[str, tuple]:
    """``{parameter name: shape}`` of the model a ``TernaryLMConfig`` builds (on the meta device: no memory)."""
    import torch

    from ternarylm.modeling import TernaryLMForCausalLM

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in TernaryLMForCausalLM(config).state_dict().items()}


def match_weights(state: dict, config, tied: bool, folder: Path, expected: dict | None = None) -> dict:
    """Our state dict (float32; int8 trits stay int8) from the folder's tensors: names and shapes checked against
    the model ``config`` (a ``TernaryLMConfig``) builds (``expected``: its ``expected_shapes`` when the caller has
    them already); a missing LM head is the embedding's copy when the folder ties them."""
    import torch

    state = with_model_prefix(state)
    expected = expected or expected_shapes(config)
    embed = state.get("model.embed_tokens.weight")
    if embed is not None and embed.ndim == 2 and embed.shape[0] != config.vocab_size:
        raise HFError(f"{folder}: the embedding has {embed.shape[0]} rows but config.json says vocab_size "
                      f"{config.vocab_size}; the vocabulary does not match the embedding")
    if "lm_head.weight" not in state and embed is not None:
        if not tied:
            raise HFError(f"{folder} has no lm_head.weight and does not tie it to the embedding; pass a "
                          "*ForCausalLM folder (not a base model)")
        state["lm_head.weight"] = embed
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise HFError(f"{folder} lacks {len(missing)} weight(s) the model of its config.json has, e.g. {missing[0]}")
    if unexpected:
        raise HFError(f"{folder} holds {len(unexpected)} weight(s) the model of its config.json has not, "
                      f"e.g. {unexpected[0]}")
    out, converted = {}, {}
    for name, shape in expected.items():
        tensor = state[name]
        if tuple(tensor.shape) != shape:
            raise HFError(f"{folder}: {name} has shape {list(tensor.shape)}, its config.json implies {list(shape)}")
        if id(tensor) not in converted:  # a tied head and embedding share one float32 copy; int8 trits stay
            converted[id(tensor)] = tensor if tensor.dtype == torch.int8 else tensor.to(torch.float32)
        out[name] = converted[id(tensor)]
    return out
