"""Our checkpoint out as a Hugging Face transformers folder.

**Out** (``export_hf``, ``ternary-export hf``): ``ckpt.pt`` -> a folder that
``transformers.AutoModelForCausalLM.from_pretrained(folder)`` loads as a plain ``llama`` model, without
``trust_remote_code``, computing our forward. The decoder linears go through transformers' own BitNet
integration (``quantization_config = {"quant_method": "bitnet", ...}``; loading it needs ``accelerate``),
whose layers compute exactly our QAT forward: absmean ternary weights with one scale per tensor
(``round(W / mean|W|)`` clamped to [-1, 1], eps 1e-5) times 8-bit per-token absmax activations
(``round(x * 127 / max|x|)`` clamped to [-128, 127], eps 1e-5). A checkpoint with BitNet b1.58's
architecture (``sub_norms``) is written as ``model_type: bitnet`` (``BitNetForCausalLM``) instead, with the
same quantization_config; ``hidden_act`` (silu / relu2) and tied embeddings carry over. Two layouts:

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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ternarylm.format.entries import CAUSAL_LM
from ternarylm.format.folder import write_folder_atomically
from ternarylm.format.tokens import special_token_ids, tokenizer_config
from ternarylm.hf.folder import HFError

LAYOUTS = ("packed", "latent")
PACK = 4  # trits per byte in transformers' packed BitNet layout (its VALUES_PER_ITEM)


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
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)  # transformers ties it to the embedding on load

    tok_json = ckpt["tokenizer_json"]
    special = {"bos": config.bos_token_id, "eos": config.eos_token_id, "pad": config.pad_token_id}
    if special["eos"] is None:
        from tokenizers import Tokenizer

        special = special_token_ids(Tokenizer.from_str(tok_json))
    llama = _hf_config(config, special)
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


def _hf_config(config, special: dict):
    """transformers' config of the same architecture: ``LlamaConfig``, or ``BitNetConfig`` (model_type
    ``bitnet``) for a model with BitNet's sub-layer norms; both read ``hidden_act`` (silu or relu2)."""
    from transformers import BitNetConfig, LlamaConfig

    common = dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_theta)}, attention_bias=False,
        tie_word_embeddings=bool(config.tie_word_embeddings), initializer_range=config.initializer_range,
        bos_token_id=special["bos"], eos_token_id=special["eos"], pad_token_id=special["pad"], dtype="float32")
    if config.sub_norms:
        return BitNetConfig(**common, architectures=["BitNetForCausalLM"])
    return LlamaConfig(**common, head_dim=config.head_dim, mlp_bias=False, architectures=["LlamaForCausalLM"])


def _quantization_config(layout: str, float_linears: list[str]) -> dict:
    """transformers' BitNetQuantConfig as a dict. ``modules_to_not_convert`` replaces its default skips, so
    the LM head is named; names are matched at a module boundary (``model.layers.1`` is not ``.11``)."""
    linear_class, mode = ("bitlinear", "offline") if layout == "packed" else ("autobitlinear", "online")
    return {"quant_method": "bitnet", "linear_class": linear_class, "quantization_mode": mode,
            "modules_to_not_convert": ["lm_head", *float_linears], "use_rms_norm": False}

