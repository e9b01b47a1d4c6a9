"""``export_checkpoint``: ckpt.pt -> deployable folder for one target (see docs/FORMATS.md).

One path for every model kind: what a kind changes (graph emitter, head, extra config fields and
files) is its entry in ``kinds.py``; what a target changes is its entry in ``targets.py``.
"""

from __future__ import annotations

from pathlib import Path

from ternarylm.export.common import lower_linears, source_config, source_manifest
from ternarylm.export.kinds import export_kind, head_block
from ternarylm.format.targets import PRECISIONS, get_target
from ternarylm.export.weights import extract_weights

from ternarylm.format import lowering
from ternarylm.format.architecture import format_version_for
from ternarylm.format.folder import EXPORT_FORMAT, check_onnx, json_bytes, model_files, write_export_folder
from ternarylm.format.onnx_names import MS_DOMAIN
from ternarylm.format.tokens import special_token_ids, tokenizer_config


def build_model(ckpt: dict, target_name: str, packing: str = "2bit", embedding: str | None = None,
                lm_head: str | None = None, block_size: int | None = None, keep_precision: dict | None = None,
                expect_kind: str | None = None):
    """Emit the canonical graph for a loaded checkpoint (any kind) and lower it for ``target_name``.

    ``keep_precision``: export-time ``{pattern: bits}`` (4, 8 or 16) that overrides the checkpoint's
    plan for the layers it matches (post-training: their latent weights are quantised to 4/8 bits or
    kept in full precision here). ``expect_kind``: refuse a checkpoint of another kind.
    Returns ``(model_proto, config_json_dict)``.
    """
    spec = export_kind(ckpt)
    if expect_kind is not None and spec.kind != expect_kind:
        raise ValueError(f"this is a {spec.kind} checkpoint, not a {expect_kind} one; export it as what it is "
                         "(ternary-export onnx reads the kind from the checkpoint)")
    target = get_target(target_name, spec.kind, f"{spec.noun}s")
    if lm_head and not spec.head_option:
        raise ValueError(f"--lm-head does not apply to a {spec.noun} (its score head stays full precision)")
    embedding = embedding or target.embedding
    head = (lm_head or target.lm_head) if spec.head_option else None
    for what, value in (("--embedding", embedding), ("--lm-head", head)):
        if value is not None and value not in PRECISIONS:
            raise ValueError(f"{what} must be one of {', '.join(PRECISIONS)}, got {value!r}")
    config, arch, act_bits = source_config(ckpt, target, packing,
                                           dense_targets=" or ".join(t for t in ("fp32", "fp16")
                                                                    if spec.kind in get_target(t).kinds))
    weights = extract_weights(spec.state(ckpt), config, keep_precision, ckpt.get("trit_scales"))
    model, weight_map = spec.emit(ckpt, arch, weights, target, packing, act_bits, head)
    lowering_info = lower_linears(model, weight_map, target, config, block_size)
    spec.after_lowering(model, weight_map, target, arch, head)
    if embedding in ("int8", "int4"):
        bits = 8 if embedding == "int8" else 4
        lowering.quantize_embedding(model, weight_map, bits=bits, block_size=head_block(arch, bits))
    check_onnx(model, full_check=not any(n.domain == MS_DOMAIN for n in model.graph.node))
    export_fields, top_fields = spec.fields(ckpt, config, head)
    keeps_ternary_op = weights.ternary and target.ternary is None and not target.dense
    config_json = {
        "format": EXPORT_FORMAT, "format_version": format_version_for(arch),
        **({"kind": spec.kind} if spec.writes_kind else {}),
        "architecture": arch,
        "export": {"target": target_name, "packing": packing if keeps_ternary_op else None,
                   "act_bits": 0 if target.dense else act_bits, "embedding": embedding, **export_fields,
                   "activation_dtype": target.activation_dtype,
                   "providers": list(target.providers), "lowering": lowering_info,
                   "source_precision": config.precision, "source_act_bits": act_bits,
                   "keep_precision": weights.kept() if weights.ternary else {},
                   "keep_precision_override": dict(sorted((keep_precision or {}).items())),
                   "attention": "standard" if spec.standard_attention else target.attention},
        "weights": weight_map,
        **top_fields,
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id,
    }
    return model, config_json


def export_checkpoint(ckpt_path, out_dir, target: str = "ort-cpu", packing: str = "2bit",
                      embedding: str | None = None, lm_head: str | None = None, block_size: int | None = None,
                      force: bool = False, keep_precision: dict | None = None,
                      max_length: int | None = None) -> Path:
    """Export ``ckpt_path`` (a language model or a fine-tuned classifier; or a ternary Hugging Face folder,
    see ``source.py``) to the folder ``out_dir``
    (refuses to replace one unless ``force``). ``keep_precision``: see ``build_model``;
    ``embedding`` / ``lm_head``: ``float``, ``int8``, ``int4``, ``auto`` (the smallest of the target's
    candidates that passes verify, see ``precision.py``) or None (the target's default);
    ``max_length``: onnxruntime-genai's prompt + generation length (its in-place KV buffer), default the
    context."""
    from tokenizers import Tokenizer

    from ternarylm.export import precision
    from ternarylm.export.source import load_source

    get_target(target)
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise FileExistsError(f"{out_dir} already exists; pass --force to replace it or choose another --out")
    ckpt = load_source(ckpt_path)
    spec = export_kind(ckpt)
    tok_json = ckpt["tokenizer_json"]
    special = special_token_ids(Tokenizer.from_str(tok_json))
    source = source_manifest(ckpt_path, ckpt, target, None)  # hashes the checkpoint: once, not per candidate
    built = {}  # the last (embedding, lm_head) built: the auto search's winner is always the last it tried

    def write(folder: Path, embedding, lm_head, record=None, replace=force) -> Path:
        if (embedding, lm_head) not in built:
            built.clear()
            built[embedding, lm_head] = build_model(ckpt, target, packing, embedding, lm_head, block_size,
                                                    keep_precision)
        model, config_json = built[embedding, lm_head]
        config_json = {**config_json, "export": dict(config_json["export"])}
        if record is not None:
            config_json["export"]["precision_choice"] = record
        files = {
            **model_files(model),
            "config.json": json_bytes(config_json),
            "tokenizer.json": tok_json.encode("utf-8"),
            "tokenizer_config.json": json_bytes(tokenizer_config(tok_json, special, spec.context(config_json))),
            **{name: json_bytes(content) for name, content in spec.extra_files(
                config_json, special, get_target(target), max_length=max_length).items()},
        }
        manifest = {**({"kind": spec.kind} if spec.writes_kind else {}),
                    **source, "packing": config_json["export"]["packing"]}
        return write_export_folder(folder, files, manifest, replace, config_json["format_version"])

    if precision.AUTO in (embedding, lm_head):
        pairs = precision.candidates(get_target(target), spec.head_option, embedding, lm_head)
        embedding, lm_head, record = precision.choose(
            ckpt, get_target(target), pairs, lambda folder, e, h: write(folder, e, h, replace=False))
        return write(out_dir, embedding, lm_head, record)
    return write(out_dir, embedding, lm_head)
