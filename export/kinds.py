"""What differs between the kinds of model an export folder can hold, as data: one ``ExportKind`` per
``config.json`` ``kind``. ``api.build_model`` / ``api.export_checkpoint`` are written once and read the
spec; ``verify.verify_export`` is written once and dispatches through its ``VERIFIERS``. Adding a kind
is one entry here and one verifier there.

- ``causal-lm``: the decoder with a KV cache (``DecoderEmitter``), an LM head (float, int8 or int4),
  ``genai_config.json`` for onnxruntime-genai; verified by logits and greedy generation.
- ``sequence-classification``: the same layers without a cache, last-token pooling and a float
  ``score`` head (``ClassifierEmitter``); verified by logits and label agreement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ternarylm.export.classifier import ClassifierEmitter, classifier_fields, classifier_state
from ternarylm.export.decoder import DecoderEmitter
from ternarylm.export.folder import genai_config
from ternarylm.export.graph import np_to_onnx_type
from ternarylm.export.weights import head_int_weight

from ternarylm.format import lowering
from ternarylm.format.entries import CAUSAL_LM, SEQUENCE_CLASSIFICATION

HEAD_BITS = {"int8": 8, "int4": 4}


@dataclass(frozen=True)
class ExportKind:
    """One model kind: how its graph is emitted and what its folder adds to the common files."""

    kind: str
    noun: str  # in messages: "language model", "classifier"
    head_option: bool  # --lm-head applies
    state: Callable  # ckpt -> the state dict ``extract_weights`` reads
    emit: Callable  # (ckpt, arch, weights, target, packing, act_bits, head) -> (model, weight_map)
    after_lowering: Callable  # (model, weight_map, target, arch, head) -> None
    fields: Callable  # (ckpt, config, head) -> (export-section fields, top-level fields)
    context: Callable  # config_json -> tokenizer_config.json's model_max_length
    extra_files: Callable  # (config_json, special ids, target, max_length=) -> {name: JSON-able dict}
    writes_kind: bool  # config.json / manifest.json name the kind (the LM predates the field)
    standard_attention: bool  # always the standard-op attention, whatever the target (no KV cache to fuse)


# Block size of a block-quantised head or embedding, by bits (or the largest smaller one dividing the hidden size).
# int8 at 128: mean KL against the float tables 1-2e-4 nats as at 32 (quickstart and a 250-step 256-wide model), a
# quarter of the float32 scales (132m: 4.4 MB less file), 10 MB less resident after load, decode unchanged. int4
# stays at 32: its error grows with the block (int4 head + embedding at 128: KL 0.005-0.008 against 0.003 at 32).
HEAD_BLOCK = {8: 128, 4: 32}


def head_block(arch: dict, bits: int) -> int:
    from ternarylm.export.common import divisor_block

    return divisor_block(arch["hidden_size"], HEAD_BLOCK[bits])


def _lm_emit(ckpt, arch, weights, target, packing, act_bits, head):
    if HEAD_BITS.get(head) and target.attention == "standard":  # any-runtime graph: DequantizeLinear head
        weights.lm_head = head_int_weight(weights.lm_head, HEAD_BITS[head], head_block(arch, HEAD_BITS[head]))
    return DecoderEmitter(arch, weights, attention=target.attention, dtype=np_to_onnx_type(target.activation_dtype), packing=packing,
                          act_bits=act_bits).build()


def _lm_after_lowering(model, weight_map, target, arch, head):
    if HEAD_BITS.get(head) and target.attention != "standard":
        lowering.quantize_head(model, weight_map, bits=HEAD_BITS[head], block_size=head_block(arch, HEAD_BITS[head]))


def _lm_files(config_json, special, target, max_length=None):
    export = config_json["export"]
    return {"genai_config.json": genai_config(config_json["architecture"], special,
                                              export["activation_dtype"] == "float16", target.providers,
                                              shared_kv_buffer=export["attention"] == "fused",
                                              max_length=max_length)}


def _classifier_emit(ckpt, arch, weights, target, packing, act_bits, head):
    return ClassifierEmitter(arch, weights, classifier_state(ckpt)[1], packing=packing, act_bits=act_bits).build()


KINDS: dict[str, ExportKind] = {k.kind: k for k in [
    ExportKind(CAUSAL_LM, "language model", head_option=True, state=lambda ckpt: ckpt["model"], emit=_lm_emit,
               after_lowering=_lm_after_lowering,
               fields=lambda ckpt, config, head: ({"lm_head": head}, {}),
               context=lambda cfg: cfg["architecture"]["max_position_embeddings"], extra_files=_lm_files,
               writes_kind=False, standard_attention=False),
    ExportKind(SEQUENCE_CLASSIFICATION, "classifier", head_option=False, state=lambda ckpt: classifier_state(ckpt)[0],
               emit=_classifier_emit, after_lowering=lambda *a: None, fields=classifier_fields,
               context=lambda cfg: cfg["encoding"]["max_len"], extra_files=lambda *a, **k: {}, writes_kind=True,
               standard_attention=True),
]}


def export_kind(ckpt: dict) -> ExportKind:
    kind = ckpt.get("kind", CAUSAL_LM)
    if kind not in KINDS:
        raise ValueError(f"the checkpoint's kind {kind!r} cannot be exported; supported kinds: {', '.join(KINDS)}")
    return KINDS[kind]
