"""``export_checkpoint``: ckpt.pt -> deployable folder for one target (see docs/FORMATS.md)."""

from __future__ import annotations

from pathlib import Path

import onnx
from ternarylm.export.common import divisor_block, lower_linears, source_config, source_manifest
from ternarylm.export.decoder import DecoderEmitter
from ternarylm.export.folder import genai_config, tokenizer_config
from ternarylm.export.graph import FLOAT16
from ternarylm.export.targets import PRECISIONS, get_target
from ternarylm.export.weights import extract_weights, head_int_weight

from ternarylm.format import lowering
from ternarylm.format.entries import CAUSAL_LM, SEQUENCE_CLASSIFICATION
from ternarylm.format.folder import (
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    json_bytes,
    write_export_folder,
)
from ternarylm.format.tokens import special_token_ids


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
    if ckpt.get("kind", CAUSAL_LM) != CAUSAL_LM:
        raise ValueError(f"this is a {ckpt.get('kind')} checkpoint; ternary-export onnx exports causal LMs")
    config, arch, act_bits = source_config(ckpt, target, packing, dense_targets="fp32 or fp16")
    weights = extract_weights(ckpt["model"], config, keep_precision)
    head_block = divisor_block(arch["hidden_size"], 32)
    head_bits = {"int8": 8, "int4": 4}.get(lm_head)
    if head_bits and target.attention == "standard":  # any-runtime graph: the emitter writes DequantizeLinear
        weights.lm_head = head_int_weight(weights.lm_head, head_bits, head_block)
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


def export_checkpoint(ckpt_path, out_dir, target: str = "ort-cpu", packing: str = "2bit",
                      embedding: str | None = None, lm_head: str | None = None, block_size: int | None = None,
                      force: bool = False, keep_precision: dict | None = None) -> Path:
    """Export ``ckpt_path`` to the folder ``out_dir`` (refuses to replace one unless ``force``).
    ``keep_precision``: export-time precision overrides, see ``build_model``."""
    from tokenizers import Tokenizer

    from ternarylm.checkpoint import load_checkpoint

    get_target(target)
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise FileExistsError(f"{out_dir} already exists; pass --force to replace it or choose another --out")
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.get("kind") == SEQUENCE_CLASSIFICATION:
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
