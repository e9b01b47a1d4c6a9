"""Run an exported sequence classifier (``config.json`` ``"kind": "sequence-classification"``) without
torch: the NumPy engine (``NumpyClassifier``), the onnxruntime engine (``OrtClassifier``) and
``TextClassifier``, which adds the folder's tokenizer and input encoding (``predict(texts or pairs)``).

``NumpyClassifier`` is the NumPy decoder (``runtime_py.model``: the same weights, primitives and
forward as for generation) with the ``score`` head in the place of the LM head: it runs the whole
input once (empty KV cache), with ``position_ids = max(cumsum(mask) - 1, 0)`` and the padding mask,
and keeps the logits of the last position whose mask is 1 — what the PyTorch model and the ONNX graph
compute.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ternarylm.format.architecture import ModelConfig
from ternarylm.runtime_py.model import NumpyDecoder, Weights

from ternarylm.format.encoding import EncodingSpec, encode, last_token_index, pad_batch, softmax


def position_ids(attention_mask: np.ndarray) -> np.ndarray:
    return np.maximum(np.cumsum(np.asarray(attention_mask, np.int64), axis=1) - 1, 0)


class NumpyClassifier:
    """``logits(input_ids, attention_mask) -> (B, num_labels)`` float32 with the NumPy decoder."""

    name = "numpy"

    def __init__(self, decoder: NumpyDecoder, num_labels: int):
        self.decoder, self.num_labels = decoder, num_labels
        self.config = decoder.config

    @classmethod
    def from_onnx(cls, model, config_json: dict) -> NumpyClassifier:
        weight_map = dict(config_json.get("weights") or {})
        if "score" not in weight_map:
            raise ValueError("config.json's weight map has no 'score' head; re-export the classifier")
        weight_map["lm_head"] = weight_map["score"]  # the decoder's output projection is the head
        config = ModelConfig.from_config_json(config_json)
        return cls(NumpyDecoder(config, Weights.from_onnx(model, weight_map, config)),
                   int(config_json.get("num_labels") or 2))

    def logits(self, input_ids, attention_mask=None) -> np.ndarray:
        input_ids = np.asarray(input_ids, np.int64)
        mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, np.int64)
        self.decoder.reset(input_ids.shape[0])
        per_position = self.decoder.forward(input_ids, position_ids=position_ids(mask), attention_mask=mask)
        self.decoder.reset()
        return per_position[np.arange(input_ids.shape[0]), last_token_index(mask)].astype(np.float32)


class OrtClassifier:
    """``logits(input_ids, attention_mask) -> (B, num_labels)`` with onnxruntime."""

    name = "ort"

    def __init__(self, session):
        """``session``: an ``onnxruntime.InferenceSession`` (``ternarylm.onnxrt.SessionSettings``)."""
        names = {i.name for i in session.get_inputs()}
        if names != {"input_ids", "attention_mask"}:
            raise ValueError(f"the model has inputs {sorted(names)}, not a classifier's "
                             "input_ids + attention_mask; is it a ternary-export classifier?")
        self.session = session

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def logits(self, input_ids, attention_mask=None) -> np.ndarray:
        input_ids = np.asarray(input_ids, np.int64)
        mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, np.int64)
        (logits,) = self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": mask})
        return np.asarray(logits, np.float32)


class TextClassifier:
    """An engine + the folder's tokenizer and encoding spec: text in, probabilities out.

    ``predict(["a sentence", ...])`` for single-text classifiers, ``predict([("s1", "s2"), ...])`` for
    sentence pairs -> ``(N, num_labels)`` probabilities; ``labels`` names the columns. ``truncated``
    counts the inputs of the last call that were cut to ``spec.max_len`` tokens.
    """

    def __init__(self, engine, tokenizer, spec: EncodingSpec, labels: list[str], batch_size: int = 32):
        self.engine, self.tokenizer, self.spec, self.labels = engine, tokenizer, spec, list(labels)
        self.batch_size = batch_size
        self.truncated = 0

    def encode(self, inputs) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows(inputs)
        seqs, self.truncated = encode(self.tokenizer, rows, self.spec)
        return pad_batch(seqs, self.spec.pad_token_id)

    def _rows(self, inputs) -> list[tuple[str, ...]]:
        if isinstance(inputs, str) or (self.spec.pair and _is_pair(inputs)):
            inputs = [inputs]
        rows = []
        for i, x in enumerate(inputs):
            row = (x,) if isinstance(x, str) else tuple(x)
            if len(row) != len(self.spec.text_columns) or not all(isinstance(s, str) for s in row):
                want = "(text1, text2) pairs" if self.spec.pair else "strings"
                raise ValueError(f"input {i}: this classifier takes {want} ({', '.join(self.spec.text_columns)})")
            rows.append(row)
        return rows

    def logits(self, inputs) -> np.ndarray:
        rows = self._rows(inputs)
        out, truncated = [], 0
        for i in range(0, len(rows), self.batch_size):
            ids, mask = self.encode(rows[i:i + self.batch_size])
            truncated += self.truncated
            out.append(self.engine.logits(ids, mask))
        self.truncated = truncated
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict(self, inputs) -> np.ndarray:
        """``(N, num_labels)`` class probabilities (softmax of the logits)."""
        return softmax(self.logits(inputs))

    def predict_labels(self, inputs) -> list[str]:
        return [self.labels[int(k)] for k in self.logits(inputs).argmax(axis=1)]


def _is_pair(x) -> bool:
    return isinstance(x, Sequence) and not isinstance(x, str) and len(x) == 2 and all(isinstance(s, str) for s in x)
