"""A ternary Hugging Face folder in, as a checkpoint dict: ``ternary-export onnx|gguf|verify`` take the folder
where they take ``ckpt.pt``, so every target, the NumPy runtime and onnxruntime-genai follow.

Three families (``model_type`` in config.json):

- ``bitnet``: BitNet b1.58 (``BitNetForCausalLM``, e.g. microsoft/bitnet-b1.58-2B-4T): squared-ReLU MLP,
  sub-layer RMSNorms, tied or untied embeddings, GQA. Packed (the hub layout) or bf16 master weights.
- ``llama`` with transformers' BitNet ``quantization_config``: what ``ternary-export hf`` writes.
- ``ternarylm``: our own model saved with ``save_pretrained`` (latent weights, our config).

How the decoder linears are read, by ``quantization_config`` (transformers' ``integrations/bitnet.py``):

| quantization_config | stored per linear | forward | becomes |
|---|---|---|---|
| ``bitlinear`` / offline (default) | ``weight`` uint8 ``[N/4, K]`` (code ``t + 1`` of row ``i + j N/4`` in bits ``2j``), ``weight_scale`` ``[1]`` | ``x_q @ trits / (s_x * weight_scale)`` | trits, gamma = 1 / weight_scale |
| ``autobitlinear`` / offline | ``weight`` as above, or float trits ``[N, K]``; ``weight_scale`` ``[1]`` | ``(x_q @ trits) * weight_scale`` | trits, gamma = weight_scale |
| ``autobitlinear`` / online, or none (bf16 master weights) | float ``weight`` ``[N, K]`` | ternarised at each forward (absmean per tensor) | the latent weight as is |

Both forwards are ours exactly (absmean per tensor, per-token absmax int8 activations, eps 1e-5), so the
checkpoint is ``granularity: tensor``, ``activation_bits: 8``. Stored trits stay int8 in memory (the
exporter packs them as they are); where a PyTorch model is built they become the latent weight
``trits * gamma / p`` (``p``: the share of non-zero trits), whose absmean ternarisation gives back exactly
those trits and gamma. Linears in ``modules_to_not_convert`` stay full precision (``keep_precision`` 16).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ternarylm.format.entries import CAUSAL_LM
from ternarylm.hf.architecture import decoder_architecture, expected_shapes, match_weights, with_model_prefix
from ternarylm.hf.folder import HFError, _quote, read_config, read_tokenizer, read_weights, resolve_model_folder

SUPPORTED = {"bitnet": "BitNet b1.58 (packed or bf16 master weights)",
             "llama": "a Llama with transformers' BitNet quantization_config (ternary-export hf)",
             "ternarylm": "our own model saved with save_pretrained"}
PACK = 4  # trits per byte along the output rows (transformers' VALUES_PER_ITEM)
LINEAR_CLASSES = ("bitlinear", "autobitlinear")


@dataclass(frozen=True)
class Layout:
    """How a folder stores its ternary linears: ``trits`` (``packed`` uint8 or float codes, with
    ``weight_scale``) or ``latent`` float weights; ``scale_divides``: BitLinear's ``weight_scale`` is 1/gamma."""

    name: str  # packed-bitlinear | trits-autobitlinear | latent
    scale_divides: bool = False

    @property
    def stores_trits(self) -> bool:
        return self.name != "latent"


def checkpoint_from_hf(path_or_name: str) -> dict:
    """Read the Hugging Face folder ``path_or_name`` (or a hub name, online) as a checkpoint dict with the
    keys ``load_checkpoint`` returns (``config``, ``model``, ``tokenizer_json``, ``kind``) plus ``hf_source``
    (folder, model_type, layout) and ``trit_scales``: stored trits stay int8 tensors in ``model`` with their
    gamma here (``ternarylm.checkpoint.latent_weights`` gives the latent weights where a model is built).
    ``HFError`` (one line) for a folder it cannot take."""
    from ternarylm.checkpoint import FORMAT, format_version_for

    folder = resolve_model_folder(str(path_or_name), "ternary-export")
    cfg = read_config(folder)
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED:
        raise HFError(f"{folder / 'config.json'} has model_type {model_type!r}; ternary-export reads "
                      + "; ".join(f"{k} ({v})" for k, v in SUPPORTED.items())
                      + " - for a full-precision Llama, start ternary QAT with ternary-train --init-from")
    tokenizer = read_tokenizer(folder, "the export ships the model's own tokenizer")
    trit_scales = {}
    if model_type == "ternarylm":
        config, state = _ternarylm_folder(cfg, folder)
        layout = Layout("latent")
    else:
        layout = _layout(cfg, folder)
        config, state, trit_scales = _bitnet_folder(cfg, folder, layout)
    n_tok = tokenizer.get_vocab_size()
    if n_tok > config["vocab_size"]:
        raise HFError(f"the tokenizer of {folder} has {n_tok} tokens but the embedding has {config['vocab_size']} "
                      "rows; the vocabulary does not match the embedding - pass the tokenizer saved with these weights")
    ckpt = {"format": FORMAT, "kind": CAUSAL_LM, "config": config, "model": state, "trit_scales": trit_scales,
            "tokenizer_json": tokenizer.to_str(), "step": None,
            "hf_source": {"folder": str(folder), "model_type": model_type, "layout": layout.name}}
    ckpt["format_version"] = format_version_for(config)
    return ckpt


def is_hf_source(ckpt: dict) -> bool:
    return "hf_source" in ckpt


# ---- BitNet and BitNet-quantised Llama ------------------------------------------------------------------
def _layout(cfg: dict, folder: Path) -> Layout:
    where = folder / "config.json"
    quant = cfg.get("quantization_config")
    if not quant:
        if cfg["model_type"] == "llama":
            raise HFError(f"{where} is a full-precision Llama (no quantization_config); ternary-export needs ternary "
                          "weights - start ternary QAT from it with ternary-train --init-from")
        return Layout("latent")  # BitNet's bf16 master weights: ternarised on export, as at training
    if not isinstance(quant, dict) or quant.get("quant_method") != "bitnet":
        method = quant.get("quant_method") if isinstance(quant, dict) else quant
        raise HFError(f"{where} is quantised with {method!r}; ternary-export reads quant_method 'bitnet' only")
    linear_class = quant.get("linear_class", "bitlinear")
    mode = quant.get("quantization_mode", "offline")
    if linear_class not in LINEAR_CLASSES or mode not in ("offline", "online"):
        raise HFError(f"{where}: quantization_config linear_class {linear_class!r} / quantization_mode {mode!r} is "
                      f"not transformers' BitNet ({' or '.join(LINEAR_CLASSES)}, offline or online)")
    if quant.get("use_rms_norm"):
        raise HFError(f"{where}: quantization_config use_rms_norm adds an RMSNorm inside every linear, which "
                      "TernaryLM's architecture does not have; export a folder without it")
    if linear_class == "bitlinear":
        return Layout("packed-bitlinear", scale_divides=True)
    return Layout("latent") if mode == "online" else Layout("trits-autobitlinear")


def _bitnet_folder(cfg: dict, folder: Path, layout: Layout) -> tuple[dict, dict, dict]:
    from ternarylm.configuration import TernaryLMConfig
    from ternarylm.quantization import TernaryConfig

    where = folder / "config.json"
    bitnet = cfg["model_type"] == "bitnet"
    arch = decoder_architecture(cfg, where, hidden_acts=("silu", "relu2"))
    arch["sub_norms"] = bitnet  # BitNetDecoderLayer's attn_sub_norm / ffn_sub_norm
    arch["tie_word_embeddings"] = bool(cfg.get("tie_word_embeddings", False))
    names = TernaryLMConfig(**arch).linear_names()
    keep = _float_linears(cfg.get("quantization_config") or {}, names)
    quant = TernaryConfig(granularity="tensor", activation_bits=8, keep_precision={n: 16 for n in keep})
    special = {k: _first_id(cfg.get(k)) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    config = TernaryLMConfig(**arch, precision="ternary", quant=quant.to_dict(), **special,
                             initializer_range=float(cfg.get("initializer_range", 0.02)))
    state = with_model_prefix(read_weights(folder))
    shapes = expected_shapes(config)
    trit_scales = {}
    if layout.stores_trits:
        for name in names:
            if name not in keep and f"{name}.weight" in state:  # a missing one: match_weights names it
                state[f"{name}.weight"], trit_scales[name] = _trits_and_gamma(state, name, layout,
                                                                              shapes[f"{name}.weight"], folder)
    state = match_weights(state, config, config.tie_word_embeddings, folder, expected=shapes)
    return config.to_dict(), state, trit_scales


def _float_linears(quant: dict, names: list[str]) -> list[str]:
    """Decoder linears transformers leaves as ``nn.Linear``: ``modules_to_not_convert`` matched by transformers'
    own rule (its ``should_convert_module``)."""
    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = [s for s in (quant.get("modules_to_not_convert") or []) if isinstance(s, str)]
    return [n for n in names if skip and not should_convert_module(n, skip)]


def _first_id(value):
    """config.json may list several ids (Llama 3's eos); the export records one (the first)."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _trits_and_gamma(state: dict, name: str, layout: Layout, shape: tuple, folder: Path):
    """One linear's stored trits (int8 ``[N, K]``, ``shape``) and gamma, checked."""
    import torch

    n, k = shape
    weight, scale = state[f"{name}.weight"], state.pop(f"{name}.weight_scale", None)
    if scale is None:
        raise HFError(f"{folder}: {name}.weight_scale is missing; a quantised BitNet checkpoint stores one scale per "
                      "ternary linear - re-save the folder with its weight_scale tensors")
    trits = _trits(weight, n, k, name, folder)
    scale = scale.detach().double().reshape(-1)
    if scale.numel() != 1 or not torch.isfinite(scale).all() or scale.item() <= 0:
        raise HFError(f"{folder}: {name}.weight_scale must be one positive number (got shape {list(scale.shape)}, "
                      f"value {scale[:1].tolist()}); the checkpoint is damaged")
    gamma = 1.0 / scale.item() if layout.scale_divides else scale.item()
    return trits, float(np.float32(gamma))


def _trits(weight, n: int, k: int, name: str, folder: Path):
    """int8 trits ``[N, K]`` from packed uint8 ``[N/4, K]`` or float codes ``[N, K]``; non-trits refused."""
    import torch
    from transformers.integrations.bitnet import unpack_weights

    if weight.dtype == torch.uint8:
        if tuple(weight.shape) != (n // PACK, k) or n % PACK:
            raise HFError(f"{folder}: {name}.weight is packed uint8 {list(weight.shape)} but the config implies "
                          f"[{n} / {PACK}, {k}]; the checkpoint does not match its config.json")
        trits = unpack_weights(weight, dtype=torch.int8)  # transformers' own unpacker: code - 1, code 3 -> 2
        if (trits == 2).any():
            raise HFError(f"{folder}: {name}.weight holds the 2-bit code 3, which is not a trit (packed BitNet codes "
                          "are 0, 1, 2 for -1, 0, +1); the checkpoint is damaged or not BitNet-packed")
        return trits
    if tuple(weight.shape) != (n, k):
        raise HFError(f"{folder}: {name}.weight has shape {list(weight.shape)}, its config.json implies [{n}, {k}]")
    w = weight.detach().float()
    if not ((w == 0) | (w == 1) | (w == -1)).all():
        bad = w[(w != 0) & (w != 1) & (w != -1)][0].item()
        raise HFError(f"{folder}: {name}.weight holds {bad:g}, not a trit (-1, 0, +1), though its quantization_config "
                      "says offline ternary weights - for latent weights set linear_class autobitlinear and "
                      "quantization_mode online")
    return w.to(torch.int8)


# ---- our own save_pretrained ---------------------------------------------------------------------------
def _ternarylm_folder(cfg: dict, folder: Path) -> tuple[dict, dict]:
    from ternarylm.configuration import TernaryLMConfig

    fields = {k: v for k, v in cfg.items() if k not in ("transformers_version", "architectures", "model_type",
                                                         "dtype", "torch_dtype")}
    try:
        config = TernaryLMConfig(**fields)
    except (TypeError, ValueError) as e:
        raise HFError(f"{folder / 'config.json'} is not a TernaryLM configuration ({_quote(e)})") from None
    return config.to_dict(), match_weights(read_weights(folder), config, config.tie_word_embeddings, folder)


# ---- transformers' own model of the folder (verify's reference) -------------------------------------------
def eager_kernels():
    """A context in which transformers' ``torch.compile``d BitNet kernels run eagerly (no C compiler, no
    compile time): ``torch.compiler.set_stance("force_eager")`` where torch has it (2.6+)."""
    import contextlib

    import torch

    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance else contextlib.nullcontext()


def transformers_model(ckpt: dict):
    """transformers' ``AutoModelForCausalLM`` of the folder ``ckpt`` was read from, in float32 eval mode: its
    BitNet layers where config.json has a quantization_config (needs ``accelerate``), and for BitNet's master
    weights (no quantization_config) transformers' online ternarisation (``AutoBitLinear``), which is the model
    those weights train. BitNet's ``torch.compile``d kernels run eager (no C++ compiler needed)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    source = ckpt["hf_source"]
    options = {}
    if source["model_type"] == "bitnet" and source["layout"] == "latent":
        config = AutoConfig.from_pretrained(source["folder"])
        if not getattr(config, "quantization_config", None):  # master weights: the folder states no quantisation
            config.quantization_config = {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                          "quantization_mode": "online"}
            options["config"] = config
    try:
        with eager_kernels():
            model = AutoModelForCausalLM.from_pretrained(source["folder"], dtype=torch.float32, **options)
    except ImportError as e:
        raise HFError(f"transformers cannot load {source['folder']} ({_quote(e)}); pip install accelerate, which "
                      "its BitNet layers need") from None
    return model.to(torch.float32).eval()  # offline AutoBitLinear keeps the stored dtype otherwise
