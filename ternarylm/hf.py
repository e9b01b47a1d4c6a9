"""Hugging Face interop: a checkpoint out as a transformers folder, a Llama folder in as a run's start.

**Out** (``export_hf``, ``ternary-export hf``): ``ckpt.pt`` -> a folder that
``transformers.AutoModelForCausalLM.from_pretrained(folder)`` loads as a plain ``llama`` model, without
``trust_remote_code``, computing our forward. The decoder linears go through transformers' own BitNet
integration (``quantization_config = {"quant_method": "bitnet", ...}``; loading it needs ``accelerate``),
whose layers compute exactly our QAT forward: absmean ternary weights with one scale per tensor
(``round(W / mean|W|)`` clamped to [-1, 1], eps 1e-5) times 8-bit per-token absmax activations
(``round(x * 127 / max|x|)`` clamped to [-128, 127], eps 1e-5). Two layouts:

- ``packed`` (default): ``linear_class: bitlinear``, ``quantization_mode: offline`` -- the layout of the
  published BitNet checkpoints. Each ternary linear stores ``weight`` uint8 ``[N / 4, K]`` (4 trits per
  byte along the output rows, transformers' ``pack_weights``: code ``t + 1`` of row ``i + j * N / 4`` in bits
  ``2j``) and ``weight_scale`` float32 ``[1]`` = ``1 / gamma`` (BitLinear divides by it). 2 bits per weight.
- ``latent``: ``linear_class: autobitlinear``, ``quantization_mode: online`` -- the float32 latent weights;
  the layer ternarises them at every forward, so the folder can be fine-tuned further (QAT) in transformers.

The embedding, the LM head, the RMSNorm gains and any linear our model keeps in full precision
(``keep_precision`` 16, linears outside ``include``/``exclude``) stay float32 (``modules_to_not_convert``).
A checkpoint without activation quantisation (``activation_bits`` 0), or the full-precision twin, needs no
integration at all: its forward is a dense Llama with the dequantised weights (trits x scale), so it is
written as a plain ``LlamaForCausalLM`` (any scale granularity, kept 4/8-bit layers included). What no
layer of transformers can hold is refused in one line: channel/group scales or 4/8-bit kept layers *with*
8-bit activations, and sequence-classification checkpoints.

**In** (``load_llama_init``, ``ternary-train --init-from``): a full-precision Llama-architecture folder
(config.json + safetensors + tokenizer; a hub name is downloaded) -> the architecture fields of a
``TernaryLMConfig``, a state dict with our parameter names (the latent weights of the ternary run) and the
folder's tokenizer. See docs/HF.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ternarylm.format.entries import CAUSAL_LM
from ternarylm.data.errors import first_line
from ternarylm.format.folder import write_folder_atomically
from ternarylm.format.tokens import special_token_ids, tokenizer_config

LAYOUTS = ("packed", "latent")
INIT_MODEL_TYPES = ("llama",)  # what --init-from accepts (model_type in config.json)
PACK = 4  # trits per byte in transformers' packed BitNet layout (its VALUES_PER_ITEM)
_quote = partial(first_line, with_type=False, limit=200)  # a library error's message, in one line
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
HUB_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                "tokenizer*", "special_tokens_map.json", "vocab.json", "merges.txt"]


class HFError(ValueError):
    """A checkpoint or folder this interop cannot take (one line: what is wrong and the fix)."""


# ----------------------------------------------------------------------------------------------- out


@dataclass
class HFExport:
    """What ``export_hf`` wrote: the folder, its layout (``packed`` / ``latent`` / ``dense``), the linears
    handed to transformers' BitNet layers, those kept float, and the folder size in bytes."""

    path: Path
    layout: str
    ternary: list = field(default_factory=list)
    float_linears: list = field(default_factory=list)
    n_bytes: int = 0


def export_hf(ckpt_path, out_dir, force: bool = False, layout: str = "packed") -> HFExport:
    """Write the causal-LM checkpoint ``ckpt_path`` as a transformers folder ``out_dir`` (see the module
    docstring): config.json (``model_type: llama``), model.safetensors, generation_config.json,
    tokenizer.json and tokenizer_config.json. Every check runs first; the folder is written to a temporary
    sibling and renamed into place, so a refusal or a failure leaves nothing (and an old folder intact).
    ``force`` replaces an existing Hugging Face folder (one holding config.json), never anything else."""
    import torch

    from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint

    if layout not in LAYOUTS:
        raise HFError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    ckpt_path, out_dir = Path(ckpt_path), Path(out_dir)
    _check_out_dir(out_dir, ckpt_path, force)
    ckpt = load_checkpoint(ckpt_path)
    kind = ckpt.get("kind", CAUSAL_LM)
    if kind != CAUSAL_LM:
        raise HFError(f"{ckpt_path} is a {kind} checkpoint; ternary-export hf writes causal LMs "
                      "(LlamaForCausalLM) only - export a classifier with ternary-export onnx")
    model = model_from_checkpoint(ckpt)
    config = model.config
    tensors, ternary, float_linears, dense = _hf_tensors(model, config, layout, ckpt_path)
    out_layout = layout if ternary else "dense"

    tok_json = ckpt["tokenizer_json"]
    special = {"bos": config.bos_token_id, "eos": config.eos_token_id, "pad": config.pad_token_id}
    if special["eos"] is None:
        from tokenizers import Tokenizer

        special = special_token_ids(Tokenizer.from_str(tok_json))
    llama = _llama_config(config, special)
    if ternary:
        llama.quantization_config = _quantization_config(out_layout, float_linears)

    from safetensors.torch import save_file
    from transformers import GenerationConfig

    def write(tmp: Path):
        llama.save_pretrained(tmp)
        GenerationConfig(bos_token_id=special["bos"], eos_token_id=special["eos"],
                         pad_token_id=special["pad"]).save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / "tokenizer.json").write_text(tok_json, encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(
            json.dumps(tokenizer_config(tok_json, special, config.max_position_embeddings), indent=2) + "\n",
            encoding="utf-8")

    with torch.no_grad():
        path = write_folder_atomically(out_dir, write, force)
    n_bytes = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return HFExport(path=path, layout=out_layout, ternary=ternary, float_linears=float_linears + dense,
                    n_bytes=n_bytes)


def _check_out_dir(out_dir: Path, ckpt_path: Path, force: bool):
    if out_dir.exists() and not out_dir.is_dir():
        raise HFError(f"{out_dir} is a file; --out takes a folder")
    if not out_dir.exists():
        return
    if not force:
        raise FileExistsError(f"{out_dir} already exists; pass --force to replace it or choose another --out")
    if ckpt_path.resolve().is_relative_to(out_dir.resolve()):
        raise HFError(f"{out_dir} holds the checkpoint {ckpt_path}; --force would delete it - choose another --out")
    if any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise HFError(f"{out_dir} is not a Hugging Face model folder (no config.json); --force replaces only "
                      "such a folder - choose another --out")


def _hf_tensors(model, config, layout: str, ckpt_path: Path):
    """``(tensors, ternary_names, float_names, dense_names)``: the safetensors dict with Llama names, the
    linears handed to BitNet layers, those kept float32, and those written as dequantised dense weights."""
    from ternarylm.format.entries import TERNARY_BITS
    from ternarylm.quantization import BitLinear, fake_quant_weight, fake_quant_weight_int, ternary_weight

    state = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    quant = config.ternary_config()
    act_bits = quant.activation_bits if config.precision == "ternary" else 0
    ternary, float_linears, dense = [], [], []
    for name in config.linear_names():
        module = model.get_submodule(name)
        bits = module.weight_bits if isinstance(module, BitLinear) else 16
        if bits == 16:
            float_linears.append(name)
            continue
        w = module.weight.detach().float()
        if act_bits == 0:
            # The forward is F.linear(x, q): a dense Llama with the dequantised weights is the same model.
            q = (fake_quant_weight(w, quant.granularity, quant.group_size) if bits == TERNARY_BITS
                 else fake_quant_weight_int(w, bits))
            state[f"{name}.weight"] = q.detach().clone()
            dense.append(name)
            continue
        if bits != TERNARY_BITS:
            raise HFError(f"{ckpt_path}: {name} is kept at {bits} bits with 8-bit activations, which transformers' "
                          "BitNet layers cannot hold; export it with ternary-export onnx or gguf, or keep that "
                          "layer at 16 (full precision)")
        if quant.granularity != "tensor":
            raise HFError(f"{ckpt_path} has {quant.granularity} weight scales; transformers' BitNet layers hold "
                          "one scale per tensor - export it with ternary-export onnx or gguf, or train with "
                          "--granularity tensor (or --act-bits 0, written as a plain dense Llama)")
        ternary.append(name)
        if layout == "latent":
            continue  # AutoBitLinear (online) ternarises the latent weight itself, with our rule
        n = w.shape[0]
        if n % PACK:
            raise HFError(f"{ckpt_path}: {name} has {n} output rows, not a multiple of {PACK}, which the packed "
                          "layout needs; use --layout latent")
        trits, scales = ternary_weight(w, "tensor")
        state[f"{name}.weight"] = _pack(trits)
        state[f"{name}.weight_scale"] = (1.0 / scales[:1, 0].double()).float().reshape(1)
    return state, ternary, float_linears, dense


def _pack(trits):
    """int8 trits ``[N, K]`` -> uint8 ``[N / 4, K]`` in transformers' BitNet layout (its own packer)."""
    from transformers.integrations.bitnet import pack_weights

    return pack_weights(trits.clone())  # it adds 1 in place


def _llama_config(config, special: dict):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim, hidden_act="silu",
        max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)},
        attention_bias=False, mlp_bias=False, tie_word_embeddings=False, initializer_range=config.initializer_range,
        bos_token_id=special["bos"], eos_token_id=special["eos"], pad_token_id=special["pad"],
        architectures=["LlamaForCausalLM"], dtype="float32")


def _quantization_config(layout: str, float_linears: list[str]) -> dict:
    """transformers' BitNetQuantConfig as a dict. ``modules_to_not_convert`` replaces its default skips, so
    the LM head is named; names are matched at a module boundary (``model.layers.1`` is not ``.11``)."""
    linear_class, mode = ("bitlinear", "offline") if layout == "packed" else ("autobitlinear", "online")
    return {"quant_method": "bitnet", "linear_class": linear_class, "quantization_mode": mode,
            "modules_to_not_convert": ["lm_head", *float_linears], "use_rms_norm": False}


# ------------------------------------------------------------------------------------------------ in


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
    folder = _resolve_model_folder(str(path_or_name))
    cfg = _read_config(folder)
    architecture, notes = llama_architecture(cfg, folder)
    tokenizer = _read_tokenizer(folder)
    n_tok = tokenizer.get_vocab_size()  # the tokenizer's checks first: they need no weights read
    if n_tok > architecture["vocab_size"]:
        raise HFError(f"the tokenizer of {folder} has {n_tok} tokens but the model's embedding has "
                      f"{architecture['vocab_size']} rows; pass a folder whose tokenizer belongs to its weights")
    if special_token_ids(tokenizer)["eos"] is None:
        from ternarylm.format.tokens import EOS_NAMES

        raise HFError(f"the tokenizer of {folder} has no end-of-text token named {', '.join(EOS_NAMES)}, which "
                      "training separates documents with; add one of them to its tokenizer.json")
    state = _read_weights(folder)
    state_dict = _match_weights(state, architecture, bool(cfg.get("tie_word_embeddings", False)), folder)
    return InitSource(architecture=architecture, state_dict=state_dict, tokenizer=tokenizer, notes=notes,
                      source=str(folder))


def _resolve_model_folder(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_file():
        raise HFError(f"{name} is a file; --init-from takes a Hugging Face model folder (config.json + "
                      "model.safetensors + tokenizer.json) - to continue a ternarylm run use --resume")
    if path.is_dir():
        return path
    looks_local = name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
    if looks_local or not name.strip():
        raise HFError(f"{name} does not exist; --init-from takes a Hugging Face model folder "
                      "(config.json + model.safetensors + tokenizer.json) or a hub name")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name, allow_patterns=HUB_PATTERNS))
    except Exception as e:  # noqa: BLE001 -- network, auth, unknown repo: one line for the user
        raise HFError(f"{name} is not a local folder and cannot be downloaded from the Hugging Face hub "
                      f"({_quote(e)}); offline, pass a local folder saved with save_pretrained") from None


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise HFError(f"{folder} is not a Hugging Face model folder (no config.json); pass a folder written by "
                      "model.save_pretrained (config.json + model.safetensors + tokenizer.json)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HFError(f"{path} is not readable JSON ({_quote(e)})") from None
    if not isinstance(cfg, dict):
        raise HFError(f"{path} does not hold a model configuration object")
    return cfg


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


def _read_tokenizer(folder: Path):
    from ternarylm.data.errors import DataError
    from ternarylm.data.tokenizer import load_tokenizer

    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise HFError(f"{folder} has no tokenizer (tokenizer.json); --init-from trains with the model's own "
                      "tokenizer - save it there with tokenizer.save_pretrained(folder)")
    try:
        return load_tokenizer(folder)
    except DataError as e:
        raise HFError(f"the tokenizer of {folder} cannot be read: {_quote(e)}") from None


def _read_weights(folder: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif index.is_file():
        try:
            files = sorted({folder / f for f in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise HFError(f"{index} is not a safetensors index ({_quote(e)})") from None
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        bins = sorted(p.name for p in folder.glob("*.bin"))
        hint = (f" (it has {bins[0]}: re-save it with model.save_pretrained(folder), which writes safetensors)"
                if bins else "")
        raise HFError(f"{folder} has no model.safetensors{hint}; --init-from reads safetensors weights")
    state = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except (OSError, SafetensorError) as e:
            raise HFError(f"{f} is not a readable safetensors file ({_quote(e)})") from None
    return state


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
