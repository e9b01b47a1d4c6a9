"""The exporter's steps that do not depend on the model kind: the checks on a source checkpoint, its
manifest fields, and the lowering of its linears for a target (``api.py`` drives them; ``kinds.py``'s
classifier and language-model entries share them)."""

from __future__ import annotations

from ternarylm.export.decoder import architecture

import ternarylm
from ternarylm.format import lowering
from ternarylm.format.trits import PACKINGS


def lower_linears(model, weight_map, target, config, block_size: int | None) -> dict:
    """Rewrite the canonical ternary and kept-integer linears for ``target``; returns what was done.
    Full-precision (16-bit) layers stay float MatMuls on every target."""
    import numpy as np

    info = {}
    if config.precision != "ternary":
        return info
    if target.dense:
        dtype = np.dtype(target.activation_dtype).type
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
    """manifest.json's fields naming the export's source (write_export_folder adds the files); a Hugging
    Face source also gets ``source_hf`` (its model_type and how its linears were stored)."""
    from ternarylm.export.source import source_sha256

    hf = ckpt.get("hf_source")
    return {"package_version": ternarylm.__version__, "target": target, "packing": packing,
            "source_checkpoint_sha256": source_sha256(ckpt_path, ckpt), "source_step": ckpt.get("step"),
            **({"source_hf": {k: hf[k] for k in ("model_type", "layout")}} if hf else {})}


def divisor_block(k: int, preferred: int) -> int:
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
