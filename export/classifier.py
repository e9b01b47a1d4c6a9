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

Exporting and verifying are the language model's code paths (``api.py``, ``verify.py``) driven by the
classifier's entry in ``kinds.py``; the targets that take classifiers say so in ``targets.py``.
Attention is always the standard-op form (onnxruntime's GroupQueryAttention is a decoder op with a KV
cache; a classifier runs each input once).
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from ternarylm.export.decoder import DecoderEmitter
from ternarylm.export.graph import FLOAT, INT64

from ternarylm.format.custom_op import function_proto
from ternarylm.format.entries import EMBEDDING
from ternarylm.format.onnx_names import MS_DOMAIN, OPSET, TERNARY_DOMAIN


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


def classifier_state(ckpt: dict) -> tuple[dict, np.ndarray]:
    """The backbone state in the LM exporter's shape (``score`` standing in for ``lm_head`` so that
    ``extract_weights`` handles every linear kind it knows) and the head ``[num_labels, D]``."""
    state = ckpt["model"]
    if "score.weight" not in state:
        raise ValueError("the checkpoint has no score.weight; it is not a fine-tuned classifier (re-run ternary-finetune)")
    task = ckpt.get("task")
    if not isinstance(task, dict) or "encoding" not in task:
        raise ValueError("the checkpoint has no task/encoding spec; re-run ternary-finetune")
    score = state["score.weight"].detach().float().cpu().numpy()
    return {**state, "lm_head.weight": state["score.weight"]}, score


def classifier_fields(ckpt: dict, config, head) -> tuple[dict, dict]:
    """config.json fields a classifier adds: ``(export section, top level)`` (docs/FORMATS.md)."""
    task = ckpt["task"]
    labels = list(task.get("labels") or [config.id2label[i] for i in range(config.num_labels)])
    top = {
        "num_labels": config.num_labels, "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
        "task": {"name": task.get("name"), "text_columns": task.get("text_columns"),
                 "label_column": task.get("label_column"), "labels": labels},
        "encoding": task["encoding"],
        "inputs": {"input_ids": ["batch_size", "sequence_length"], "attention_mask": ["batch_size", "sequence_length"]},
        "outputs": {"logits": ["batch_size", config.num_labels]},
    }
    return {"score": "float"}, top
