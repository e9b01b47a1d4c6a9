"""``export_checkpoint``: ckpt.pt -> deployable folder for one target (see docs/FORMATS.md)."""

from __future__ import annotations

from pathlib import Path

import onnx

import ternarylm
from ternarylm.export import lowering
from ternarylm.export.decoder import DecoderEmitter, architecture
from ternarylm.export.folder import (EXPORT_FORMAT, EXPORT_FORMAT_VERSION, genai_config, json_bytes, sha256_file,
                                     tokenizer_config, write_export_folder)
from ternarylm.export.graph import FLOAT16
from ternarylm.export.targets import PRECISIONS, get_target
from ternarylm.export.weights import extract_weights
from ternarylm.ternary import PACKINGS


def build_model(ckpt: dict, target_name: str, packing: str = "2bit", embedding: str | None = None,
                lm_head: str | None = None, block_size: int | None = None, keep_precision: dict | None = None):
    """Emit the canonical graph for a loaded checkpoint and lower it for ``target_name``.

    ``keep_precision``: export-time ``{pattern: bits}`` (4, 8 or 16) that overrides the checkpoint's
    plan for the layers it matches (post-training: their latent weights are quantised to 4/8 bits or
    kept in full precision here). Returns ``(model_proto, config_json_dict)``.
    """
    target = get_target(target_name)
    embedding = embedding or target.embedding
    lm_head = lm_head or target.lm_head
    for what, value in (("--embedding", embedding), ("--lm-head", lm_head)):
        if value not in PRECISIONS:
            raise ValueError(f"{what} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    if ckpt.get("kind", "causal-lm") != "causal-lm":
        raise ValueError(f"this is a {ckpt.get('kind')} checkpoint; ternary-export onnx exports causal LMs")
    config, arch, act_bits = source_config(ckpt, target, packing, dense_targets="fp32 or fp16")
    weights = extract_weights(ckpt["model"], config, keep_precision)
    head_block = _divisor_block(arch["hidden_size"], 32)
    head_bits = {"int8": 8, "int4": 4}.get(lm_head)
    if head_bits and target.attention == "standard":  # any-runtime graph: the emitter writes DequantizeLinear
        weights.lm_head = lowering.head_int_weight(weights.lm_head, head_bits, head_block)
    model, weight_map = DecoderEmitter(arch, weights, attention=target.attention, dtype=target.dtype,
                                       packing=packing, act_bits=act_bits).build()
    lowering_info = lower_linears(model, weight_map, target, config, block_size)
    if head_bits and target.attention != "standard":
        lowering.quantize_head(model, weight_map, bits=head_bits, block_size=head_block)
    if embedding in ("int8", "int4"):
        lowering.quantize_embedding(model, weight_map, bits=8 if embedding == "int8" else 4, block_size=head_block)
    if target.attention == "standard":
        onnx.checker.check_model(model, full_check=True)
    else:
        onnx.checker.check_model(model)
    config_json = {
        "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "architecture": arch,
        "export": {"target": target_name, "packing": packing if not target.dense and target.ternary is None else None,
                   "act_bits": 0 if target.dense else act_bits, "embedding": embedding, "lm_head": lm_head,
                   "activation_dtype": "float16" if target.dtype == FLOAT16 else "float32",
                   "providers": list(target.providers), "lowering": lowering_info,
                   "source_precision": config.precision, "source_act_bits": act_bits,
                   "keep_precision": weights.kept() if weights.ternary else {},
                   "keep_precision_override": dict(sorted((keep_precision or {}).items()))},
        "weights": weight_map,
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id,
    }
    if weights.ternary and target.ternary is None and not target.dense:
        config_json["export"]["packing"] = packing
    return model, config_json


def lower_linears(model, weight_map, target, config, block_size: int | None) -> dict:
    """Rewrite the canonical ternary and kept-integer linears for ``target``; returns what was done.
    Full-precision (16-bit) layers stay float MatMuls on every target."""
    import numpy as np

    info = {}
    if config.precision != "ternary":
        return info
    if target.dense:
        dtype = np.float16 if target.dtype == FLOAT16 else np.float32
        lowering.ternary_to_dense(model, weight_map, dtype)
        lowering.int_to_dense(model, weight_map, dtype)
        info["dense"] = {"op": "MatMul", "dtype": np.dtype(dtype).name, "act_bits": 0,
                         "note": "ternary and kept-integer weights dequantised; activation quantisation dropped"}
    elif target.ternary:
        opts = dict(target.ternary)
        if block_size:
            opts["block_size"] = _compatible_block(config, block_size)
        else:  # the target's default: the largest block up to it that fits this architecture
            opts["block_size"] = _fitting_block(config, opts["block_size"])
        lowering.ternary_to_matmul_nbits(model, weight_map, **opts)
        info["ternary_matmul"] = {"op": "com.microsoft::MatMulNBits", **opts}
        kept = lowering.int_to_matmul_nbits(model, weight_map, accuracy_level=opts["accuracy_level"])
        if kept:
            info["int_matmul"] = kept
    return info


def source_config(ckpt: dict, target, packing: str, dense_targets: str):
    """Checks every exporter makes on its source (packing known; a full-precision checkpoint only
    goes to a dense target) -> ``(config, architecture dict, activation bits)``."""
    from ternarylm.checkpoint import config_from_checkpoint

    if packing not in PACKINGS:
        raise ValueError(f"unknown packing {packing!r}; choose one of {', '.join(PACKINGS)}")
    config = config_from_checkpoint(ckpt)
    if config.precision != "ternary" and not target.dense:
        raise ValueError(f"the checkpoint is full precision (precision=fp); export it with --target {dense_targets}, "
                         f"not {target.name}")
    act_bits = config.ternary_config().activation_bits if config.precision == "ternary" else 0
    return config, architecture(config), act_bits


def source_manifest(ckpt_path, ckpt: dict, target: str, packing: str | None) -> dict:
    """manifest.json's fields naming the export's source (write_export_folder adds the files)."""
    return {"package_version": ternarylm.__version__, "target": target, "packing": packing,
            "source_checkpoint_sha256": sha256_file(Path(ckpt_path)), "source_step": ckpt.get("step")}


def _divisor_block(k: int, preferred: int) -> int:
    for b in (preferred, 64, 128, 32, 16):
        if k % b == 0:
            return b
    raise ValueError(f"hidden size {k} is not a multiple of 16; block-quantised layers need that")


def _fitting_block(config, preferred: int) -> int:
    for block in (preferred, 64, 32, 16):
        if block <= preferred:
            try:
                return _compatible_block(config, block)
            except ValueError:
                continue
    raise ValueError(f"no MatMulNBits block size (16-{preferred}) divides hidden_size {config.hidden_size} and "
                     f"intermediate_size {config.intermediate_size}; make both multiples of 16")


def _compatible_block(config, block_size: int) -> int:
    quant = config.ternary_config()
    if block_size not in (16, 32, 64, 128, 256):
        raise ValueError(f"--block-size must be 16, 32, 64, 128 or 256, got {block_size}")
    if quant.granularity == "group" and quant.group_size < block_size:
        block_size = quant.group_size  # a block may not straddle two scale groups
    for k in (config.hidden_size, config.intermediate_size):
        if k % block_size:
            raise ValueError(f"block size {block_size} does not divide K={k}; choose a block size that does")
    return block_size


def export_checkpoint(ckpt_path, out_dir, target: str = "ort-cpu", packing: str = "2bit",
                      embedding: str | None = None, lm_head: str | None = None, block_size: int | None = None,
                      force: bool = False, keep_precision: dict | None = None) -> Path:
    """Export ``ckpt_path`` to the folder ``out_dir`` (refuses to replace one unless ``force``).
    ``keep_precision``: export-time precision overrides, see ``build_model``."""
    from ternarylm.checkpoint import load_checkpoint
    from tokenizers import Tokenizer

    from ternarylm.data.tokenizer import special_token_ids

    get_target(target)
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise FileExistsError(f"{out_dir} already exists; pass --force to replace it or choose another --out")
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.get("kind") == "sequence-classification":
        if lm_head:
            raise ValueError("--lm-head does not apply to a classifier (its score head stays full precision)")
        from ternarylm.export.classifier import export_classifier_checkpoint

        return export_classifier_checkpoint(ckpt_path, out_dir, target=target, packing=packing, force=force,
                                            embedding=embedding, block_size=block_size,
                                            keep_precision=keep_precision, ckpt=ckpt)
    model, config_json = build_model(ckpt, target, packing, embedding, lm_head, block_size, keep_precision)
    tok_json = ckpt["tokenizer_json"]
    special = special_token_ids(Tokenizer.from_str(tok_json))
    arch = config_json["architecture"]
    files = {
        "model.onnx": model.SerializeToString(deterministic=True),
        "config.json": json_bytes(config_json),
        "tokenizer.json": tok_json.encode("utf-8"),
        "tokenizer_config.json": json_bytes(tokenizer_config(tok_json, special, arch["max_position_embeddings"])),
        "genai_config.json": json_bytes(genai_config(arch, special, config_json["export"]["activation_dtype"]
                                                      == "float16", get_target(target).providers)),
    }
    return write_export_folder(out_dir, files, source_manifest(ckpt_path, ckpt, target, config_json["export"]["packing"]),
                               force)
