"""``OrtDecoder``: the one decode loop over an exported decoder in onnxruntime.

``ternary-run``'s ORT engine, ``load_ort``, ``ternary-export verify``, ``ternary-profile``'s measurement
(and ``--tune``) and the benchmarks all step a model through this class, so a change to how the KV cache
is fed happens once. The IO names are the export folder's (docs/FORMATS.md)::

    input_ids (B, T), attention_mask (B, past + T), position_ids (B, T),
    past_key_values.{i}.key|value (B, kv_heads, past, head_dim)
      -> logits (B, T, V), present.{i}.key|value (B, kv_heads, past + T, head_dim)

The cache stays in onnxruntime ``OrtValue`` buffers between calls (``run_with_ort_values``): no copy
through NumPy per step. Shapes come from the session's own inputs; config.json's architecture fills in
symbolic dimensions and the context limit. No torch, no transformers.
"""

from __future__ import annotations

import re
import time

import numpy as np

from ternarylm.format.architecture import ModelConfig

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_PAST_DTYPES = {"tensor(float16)": np.float16, "tensor(float)": np.float32}


class DecoderIO:
    """The decoder's IO as the session declares it (``architecture``: config.json's section, may be empty)."""

    def __init__(self, session, architecture: dict | None = None):
        inputs = {i.name: i for i in session.get_inputs()}
        self.input_names = set(inputs)
        if "input_ids" not in inputs:
            raise ValueError("the model has no 'input_ids' input; is it a ternary-export decoder?")
        layers = sorted({int(m.group(1)) for n in inputs if (m := _PAST.match(n))})
        self.layers = len(layers)
        self.past_names = [(f"past_key_values.{i}.key", f"past_key_values.{i}.value") for i in layers]
        self.present_names = [(f"present.{i}.key", f"present.{i}.value") for i in layers]
        outputs = {o.name: o for o in session.get_outputs()}
        if "logits" not in outputs:
            raise ValueError("the model has no 'logits' output; is it a ternary-export decoder?")
        missing = [n for pair in self.present_names for n in pair if n not in outputs]
        if missing:
            raise ValueError(f"the model lacks the outputs {', '.join(missing[:2])} for its past_key_values inputs; "
                             "re-export it")
        self.output_names = ["logits"] + [n for pair in self.present_names for n in pair]
        arch = architecture or {}
        kv_default = arch.get("num_key_value_heads") or arch.get("num_attention_heads")
        hd_default = arch.get("head_dim") or (
            arch["hidden_size"] // arch["num_attention_heads"] if arch.get("hidden_size") else None)
        self.kv_heads = self.head_dim = None
        self.past_dtype = np.float32
        if self.past_names:
            first = inputs[self.past_names[0][0]]
            shape = list(first.shape)
            self.kv_heads = shape[1] if isinstance(shape[1], int) else kv_default
            self.head_dim = shape[3] if isinstance(shape[3], int) else hd_default
            if self.kv_heads is None or self.head_dim is None:
                raise ValueError("past_key_values shapes are symbolic and config.json has no architecture")
            if first.type not in _PAST_DTYPES:
                raise ValueError(f"past_key_values are {first.type}; the decoder supports float32 and float16")
            self.past_dtype = _PAST_DTYPES[first.type]
        logits_shape = outputs["logits"].shape
        self.vocab = logits_shape[-1] if isinstance(logits_shape[-1], int) else arch.get("vocab_size")
        if not self.vocab:
            raise ValueError("vocab size is symbolic in the graph and config.json has no architecture")

    def describe(self) -> dict:
        return {"layers": self.layers, "kv_heads": self.kv_heads, "head_dim": self.head_dim,
                "past_dtype": np.dtype(self.past_dtype).name, "vocab": self.vocab}


def _ortvalue(array: np.ndarray):
    import onnxruntime as ort

    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))


class OrtDecoder:
    """onnxruntime decoder with the KV cache kept between ``forward`` calls (the engine interface of
    ``ternarylm.runtime_py``: ``forward``, ``reset``, ``past_length``, ``config``).

    ``session``: an ``onnxruntime.InferenceSession`` (build it with
    ``ternarylm.onnxrt.SessionSettings(...).create_session()``); ``config``: the folder's
    ``ModelConfig`` (None when profiling a bare graph: shapes then come from the graph alone).
    """

    name = "ort"

    def __init__(self, session, config: ModelConfig | None = None):
        self.session, self.config = session, config
        self.io = DecoderIO(session, config.to_dict() if config is not None else None)
        self.past_dtype = self.io.past_dtype
        self.context = config.max_position_embeddings if config is not None else None
        self.reset()

    @classmethod
    def from_settings(cls, settings, config: ModelConfig | None = None) -> OrtDecoder:
        """From a ``SessionSettings`` (or anything with ``create_session()``)."""
        return cls(settings.create_session(), config)

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    @property
    def past_length(self) -> int:
        return self._length

    def reset(self, batch_size: int = 1):
        io = self.io
        empty = np.zeros((batch_size, io.kv_heads or 0, 0, io.head_dim or 0), io.past_dtype)
        self._past = {name: _ortvalue(empty) for pair in io.past_names for name in pair}
        self._mask = np.zeros((batch_size, 0), np.int64)
        self._length, self._batch = 0, batch_size

    def forward(self, input_ids, position_ids=None, attention_mask=None, last_only: bool = False) -> np.ndarray:
        """input_ids ``(B, T)`` -> logits ``(B, T, V)`` float32 (``(B, 1, V)`` when ``last_only``).

        ``attention_mask`` covers past + new tokens (default: the cached mask plus ones);
        ``position_ids`` default to ``past .. past + T - 1``.
        """
        input_ids = np.asarray(input_ids, np.int64)
        b, t = input_ids.shape
        past = self._length
        if past and b != self._batch:
            raise ValueError(f"batch size {b} differs from the cached {self._batch}; call reset()")
        if self.context is not None and past + t > self.context:
            raise ValueError(f"{past + t} tokens exceed the model's context of {self.context}")
        if b != self._batch:
            self.reset(b)
        if attention_mask is None:
            attention_mask = np.concatenate([self._mask, np.ones((b, t), np.int64)], axis=1)
        attention_mask = np.asarray(attention_mask, np.int64)
        if position_ids is None:
            position_ids = np.broadcast_to(np.arange(past, past + t, dtype=np.int64), (b, t))
        feed = {"input_ids": _ortvalue(input_ids), **self._past}
        if "attention_mask" in self.io.input_names:
            feed["attention_mask"] = _ortvalue(attention_mask)
        if "position_ids" in self.io.input_names:
            feed["position_ids"] = _ortvalue(np.asarray(position_ids, np.int64))
        logits, *presents = self.session.run_with_ort_values(self.io.output_names, feed)
        past_names = [name for pair in self.io.past_names for name in pair]
        self._past = dict(zip(past_names, presents))
        self._mask, self._length = attention_mask, past + t
        logits = logits.numpy()
        if last_only:
            logits = logits[:, -1:]
        return np.asarray(logits, np.float32)


def replay(decoder: OrtDecoder, tokens, prompt_len: int, decode_tokens: int, keep_logits: bool):
    """Prefill ``tokens[:prompt_len]``, then feed the next ``decode_tokens`` one by one (teacher forcing:
    the tokens are given, not sampled, so every configuration sees identical inputs); each call timed.

    Returns ``(prefill_ms, [step_ms...], logits [1 + decode_tokens, vocab] or None)``.
    """
    decoder.reset(1)
    kept, steps, prefill_ms = [], [], 0.0
    for step in range(decode_tokens + 1):
        cur = tokens[:prompt_len] if step == 0 else tokens[prompt_len + step - 1: prompt_len + step]
        t0 = time.perf_counter()
        logits = decoder.forward(np.asarray([cur], np.int64), last_only=True)
        ms = (time.perf_counter() - t0) * 1000
        if keep_logits:
            kept.append(logits[0, -1])
        if step == 0:
            prefill_ms = ms
        else:
            steps.append(ms)
    return prefill_ms, steps, (np.stack(kept) if keep_logits else None)
