"""Export a fine-tuned sequence-classification checkpoint: the ternary backbone (packed, as for the
language model) + a float ``score`` head, one ``logits`` output per input row. See docs/FORMATS.md.

The graph reuses ``DecoderEmitter``'s standard-op layers unchanged (attention, RoPE, RMSNorm, SwiGLU,
``linear`` for every weight kind) and differs only around them:

- inputs ``input_ids`` and ``attention_mask`` only (int64 ``[batch, sequence]``), no KV cache: the
  decoder layers' ``past_key_values.{i}.*`` are empty tensors made in-graph, so their ``present.{i}.*``
  are just the keys and values of this call (internal values, not outputs);
- ``position_ids`` computed in-graph as the PyTorch model does: ``max(cumsum(mask) - 1, 0)``;
- pooling: the hidden state of the last position whose mask is 1 (``ArgMax(mask * arange(T))`` then
  ``GatherElements``), then the float ``score`` MatMul;
- output ``logits`` float32 ``[batch, num_labels]``.

Targets: ``portable`` (TernaryMatMul + function body; onnx.checker full check, onnx.reference),
``ort-cpu`` / ``ort-arm64-nodot`` (the same graph with ``ternary_to_matmul_nbits`` applied, and the
target's int8 embedding unless ``embedding`` says otherwise), ``fp32`` (``ternary_to_dense``: the dense
twin). Attention is always the standard-op form (onnxruntime's GroupQueryAttention is a decoder op
with a KV cache; a classifier runs each input once).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from ternarylm.export.common import divisor_block, lower_linears, source_config, source_manifest
from ternarylm.export.decoder import DecoderEmitter
from ternarylm.export.folder import tokenizer_config
from ternarylm.export.graph import FLOAT, INT64
from ternarylm.export.targets import PRECISIONS, get_target
from ternarylm.export.weights import extract_weights

from ternarylm.format import lowering
from ternarylm.format.custom_op import function_proto
from ternarylm.format.entries import CAUSAL_LM, EMBEDDING, SEQUENCE_CLASSIFICATION
from ternarylm.format.folder import (
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    json_bytes,
    write_export_folder,
)
from ternarylm.format.onnx_names import MS_DOMAIN, OPSET, TERNARY_DOMAIN
from ternarylm.format.tokens import special_token_ids

CLASSIFIER_TARGETS = ("portable", "ort-cpu", "ort-arm64-nodot", "fp32")


class ClassifierEmitter(DecoderEmitter):
    """``DecoderEmitter`` with the classifier's inputs, pooling and head around the same layers."""

    def __init__(self, arch: dict, weights, score: np.ndarray, *, packing: str = "2bit", act_bits: int = 8):
        super().__init__(arch, weights, attention="standard", dtype=FLOAT, packing=packing, act_bits=act_bits)
        self.score = np.asarray(score, np.float32)  # [num_labels, D]
        self.g.name = "ternarylm_classifier"

    def build(self):
        g = self.g
        g.input("input_ids", INT64, ["batch_size", "sequence_length"])
        g.input("attention_mask", INT64, ["batch_size", "sequence_length"])
        g.output("logits", FLOAT, ["batch_size", int(self.score.shape[0])])

        table = g.initializer("model.embed_tokens.weight", self.w.embed.astype(self.np_dt))
        self.weight_map["model.embed_tokens"] = {"kind": EMBEDDING, "weight": table, "dtype": np.dtype(self.np_dt).name}
        x = g.op("Gather", [table, "input_ids"], "/model/embed_tokens/Gather")
        self.position_ids()
        self.empty_past()
        h = self.build_standard_layers(x)  # [B, T, D] after the final norm
        logits = self.dense(self.pool_last(h), "score", self.score, "/score")
        g.op("Identity", [logits], "/logits/Identity", outputs=["logits"])
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(TERNARY_DOMAIN, 1),
                  helper.make_opsetid(MS_DOMAIN, 1)]
        uses_ternary_op = getattr(self, "uses_ternary_op", self.w.ternary)  # set by linear() when it emits one
        functions = [function_proto()] if uses_ternary_op else []
        return g.model(opsets, functions, doc="TernaryLM sequence classifier exported by ternarylm"), self.weight_map

    def position_ids(self):
        """``position_ids = max(cumsum(attention_mask, 1) - 1, 0)``, the name the layers read."""
        g, p = self.g, "/model/position_ids"
        cum = g.op("CumSum", ["attention_mask", g.const(1)], f"{p}/CumSum")  # axis: a rank-0 tensor
        pos = g.op("Sub", [cum, g.const(1)], f"{p}/Sub")
        g.op("Max", [pos, g.const(0)], f"{p}/Clamp", outputs=["position_ids"])

    def empty_past(self):
        """Empty ``past_key_values.{i}.key|value`` ``[B, nkv, 0, hd]``: the layers' cache concat is a no-op."""
        g, p, a = self.g, "/model/empty_past", self.a
        batch = g.op("Slice", [g.op("Shape", ["input_ids"], f"{p}/Shape"), g.const([0]), g.const([1])],
                     f"{p}/Batch")
        shape = g.op("Concat", [batch, g.const([a["num_key_value_heads"], 0, a["head_dim"]])], f"{p}/ShapeConcat",
                     axis=0)
        empty = g.op("ConstantOfShape", [shape], f"{p}/ConstantOfShape",
                     value=helper.make_tensor("value", self.dt, [1], [0.0]))
        for i in range(a["num_hidden_layers"]):
            for kv in ("key", "value"):
                g.op("Identity", [empty], f"{p}/{i}.{kv}", outputs=[f"past_key_values.{i}.{kv}"])

    def pool_last(self, h: str) -> str:
        """``h[b, last(b)]`` with ``last(b)`` the last position whose mask is 1 -> ``[B, D]``."""
        g, p = self.g, "/model/pool_last"
        t = g.op("Gather", [g.op("Shape", ["input_ids"], f"{p}/ShapeIds"), g.const(1)], f"{p}/SeqLen", axis=0)
        positions = g.op("Range", [g.const(0), t, g.const(1)], f"{p}/Positions")
        weighted = g.op("Cast", [g.op("Mul", ["attention_mask", positions], f"{p}/MaskedPositions")],
                        f"{p}/CastFloat", to=FLOAT)
        last = g.op("ArgMax", [weighted], f"{p}/ArgMax", axis=1, keepdims=1)  # [B, 1]
        index = g.op("Unsqueeze", [last, g.const([2])], f"{p}/Unsqueeze")  # [B, 1, 1]
        shape_h = g.op("Shape", [h], f"{p}/ShapeHidden")
        target = g.op("Concat", [g.op("Slice", [shape_h, g.const([0]), g.const([1])], f"{p}/Batch"), g.const([1]),
                                 g.op("Slice", [shape_h, g.const([2]), g.const([3])], f"{p}/Hidden")],
                      f"{p}/IndexShape", axis=0)
        index = g.op("Expand", [index, target], f"{p}/Expand")  # [B, 1, D]
        pooled = g.op("GatherElements", [h, index], f"{p}/GatherElements", axis=1)
        return g.op("Squeeze", [pooled, g.const([1])], f"{p}/Squeeze")  # [B, D]


def _classifier_state(ckpt: dict) -> tuple[dict, np.ndarray]:
    """The backbone state in the LM exporter's shape (``score`` standing in for ``lm_head`` so that
    ``extract_weights`` handles every linear kind it knows) and the head ``[num_labels, D]``."""
    state = ckpt["model"]
    if "score.weight" not in state:
        raise ValueError("the checkpoint has no score.weight; it is not a fine-tuned classifier (re-run ternary-finetune)")
    score = state["score.weight"].detach().float().cpu().numpy()
    return {**state, "lm_head.weight": state["score.weight"]}, score


def build_classifier_model(ckpt: dict, target_name: str, packing: str = "2bit", embedding: str | None = None,
                           block_size: int | None = None, keep_precision: dict | None = None):
    """Emit and lower the classifier graph for a loaded checkpoint: ``(model_proto, config_json_dict)``.
    ``keep_precision``: export-time ``{pattern: bits}`` on top of the checkpoint's plan (as for LMs)."""
    if ckpt.get("kind", CAUSAL_LM) != SEQUENCE_CLASSIFICATION:
        raise ValueError(f"this is a {ckpt.get('kind', CAUSAL_LM)} checkpoint, not a {SEQUENCE_CLASSIFICATION} one; "
                         "export it with ternary-export onnx (build_model)")
    if target_name not in CLASSIFIER_TARGETS:
        get_target(target_name)  # unknown names get the registry's message
        raise ValueError(f"target {target_name!r} is not available for classifiers; choose one of "
                         f"{', '.join(CLASSIFIER_TARGETS)}")
    target = get_target(target_name)
    embedding = embedding or target.embedding
    if embedding not in PRECISIONS:
        raise ValueError(f"--embedding must be one of {', '.join(PRECISIONS)}, got {embedding!r}")
    task = ckpt.get("task")
    if not isinstance(task, dict) or "encoding" not in task:
        raise ValueError("the checkpoint has no task/encoding spec; re-run ternary-finetune")
    config, arch, act_bits = source_config(ckpt, target, packing, dense_targets="fp32")
    state, score = _classifier_state(ckpt)
    weights = extract_weights(state, config, **({"keep_precision": keep_precision} if keep_precision else {}))
    model, weight_map = ClassifierEmitter(arch, weights, score, packing=packing, act_bits=act_bits).build()
    lowering_info = lower_linears(model, weight_map, target, config, block_size)  # the LM exporter's passes
    if embedding in ("int8", "int4"):
        lowering.quantize_embedding(model, weight_map, bits=8 if embedding == "int8" else 4,
                                    block_size=divisor_block(arch["hidden_size"], 32))
    onnx.checker.check_model(model, full_check=not any(n.domain == MS_DOMAIN for n in model.graph.node))
    labels = list(task.get("labels") or [config.id2label[i] for i in range(config.num_labels)])
    config_json = {
        "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "kind": SEQUENCE_CLASSIFICATION,
        "architecture": arch,
        "export": {"target": target_name, "packing": packing if weights.ternary and target.ternary is None
                   and not target.dense else None, "act_bits": 0 if target.dense else act_bits, "embedding": embedding, "score": "float",
                   "activation_dtype": "float32", "providers": list(target.providers), "lowering": lowering_info,
                   "source_precision": config.precision, "source_act_bits": act_bits,
                   "keep_precision": weights.kept() if weights.ternary else {},
                   "keep_precision_override": dict(sorted((keep_precision or {}).items())), "attention": "standard"},
        "weights": weight_map,
        "num_labels": config.num_labels, "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
        "task": {"name": task.get("name"), "text_columns": task.get("text_columns"),
                 "label_column": task.get("label_column"), "labels": labels},
        "encoding": task["encoding"],
        "inputs": {"input_ids": ["batch_size", "sequence_length"], "attention_mask": ["batch_size", "sequence_length"]},
        "outputs": {"logits": ["batch_size", config.num_labels]},
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id,
    }
    return model, config_json


def export_classifier_checkpoint(ckpt_path, out_dir, target: str = "portable", packing: str = "2bit",
                                 force: bool = False, embedding: str | None = None,
                                 block_size: int | None = None, keep_precision: dict | None = None,
                                 ckpt: dict | None = None) -> Path:
    """Export a ``sequence-classification`` ``ckpt_path`` to the folder ``out_dir`` (refuses to replace
    one unless ``force``). Writes model.onnx, config.json, tokenizer.json, tokenizer_config.json and
    manifest.json (no genai_config.json: onnxruntime-genai runs generators, not classifiers).
    ``ckpt``: ``ckpt_path`` already loaded with ``load_checkpoint`` (a dispatcher that looked at its
    ``kind`` passes it to avoid a second load)."""
    from tokenizers import Tokenizer

    from ternarylm.checkpoint import load_checkpoint

    get_target(target)
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise FileExistsError(f"{out_dir} already exists; pass --force to replace it or choose another --out")
    ckpt = ckpt if ckpt is not None else load_checkpoint(ckpt_path)
    model, config_json = build_classifier_model(ckpt, target, packing, embedding, block_size, keep_precision)
    tok_json = ckpt["tokenizer_json"]
    special = special_token_ids(Tokenizer.from_str(tok_json))
    files = {
        "model.onnx": model.SerializeToString(deterministic=True),
        "config.json": json_bytes(config_json),
        "tokenizer.json": tok_json.encode("utf-8"),
        "tokenizer_config.json": json_bytes(tokenizer_config(tok_json, special,
                                                              config_json["encoding"]["max_len"])),
    }
    manifest = {"kind": SEQUENCE_CLASSIFICATION,
                **source_manifest(ckpt_path, ckpt, target, config_json["export"]["packing"])}
    return write_export_folder(out_dir, files, manifest, force)


# ---- verification ---------------------------------------------------------------------------------
DEFAULT_TEXTS = ("The little dog ran to the park.", "\"Can we play?\" asked Tom.", "It was a cold and rainy day.",
                 "Lily found a red ball under the tree.", "The cat slept all day in the warm sun.")
RELATIVE_TOLERANCE = {"portable": 1e-2}  # as export.verify: int8 activation rounding boundaries
DEFAULT_RELATIVE_TOLERANCE = 0.15


def default_inputs(pair: bool) -> list:
    texts = list(DEFAULT_TEXTS)
    if not pair:
        return texts
    return [(t, t) for t in texts] + [(t, texts[(i + 1) % len(texts)]) for i, t in enumerate(texts)]


def verify_classifier_export(export_dir, checkpoint, inputs=None, engines=("ort", "numpy"),
                             logit_tol: float | None = None, min_agreement: float = 0.9) -> dict:
    """Compare the export's logits (onnxruntime and/or NumPy) with PyTorch's on the same encoded
    inputs (default: built-in sentences, paired up for pair classifiers). Per engine: the max |logit
    difference| relative to the largest PyTorch logit, and the share of inputs with the same argmax."""
    import torch
    from ternarylm.runtime_py.loader import load_classifier

    from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint

    export_dir = Path(export_dir)
    config = json.loads((export_dir / "config.json").read_text())
    target = config.get("export", {}).get("target")
    model = model_from_checkpoint(load_checkpoint(checkpoint), expect_kind=SEQUENCE_CLASSIFICATION)
    tol = logit_tol if logit_tol is not None else RELATIVE_TOLERANCE.get(target, DEFAULT_RELATIVE_TOLERANCE)
    report = {"export_dir": str(export_dir), "target": target, "checkpoint": str(checkpoint),
              "relative_tolerance": tol, "min_agreement": min_agreement, "engines": {}}
    reference = None
    for name in engines:
        clf = load_classifier(export_dir, engine=name)
        if reference is None:
            items = list(inputs) if inputs else default_inputs(clf.spec.pair)
            ids, mask = clf.encode(items)
            with torch.no_grad():
                reference = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
            report["inputs"] = len(items)
        got = clf.engine.logits(ids, mask)
        diff = float(np.abs(got - reference).max() / max(float(np.abs(reference).max()), 1e-6))
        agreement = float((got.argmax(1) == reference.argmax(1)).mean())
        report["engines"][name] = {"max_logit_diff": diff, "tolerance": tol, "argmax_agreement": agreement,
                                   "passed": bool(diff <= tol and agreement >= min_agreement)}
    report["passed"] = all(r["passed"] for r in report["engines"].values())
    return report
