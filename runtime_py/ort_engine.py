"""``OrtDecoder``: an export folder's ``model.onnx`` in onnxruntime, behind the NumpyDecoder interface.

Feeds ``input_ids``, ``attention_mask``, ``position_ids`` and ``past_key_values.{i}.key|value``
(docs/FORMATS.md); the ``present.*`` outputs become the next call's past. The past dtype (float32,
or float16 for ``ort-cuda``) is read from the graph inputs. No torch, no transformers.
"""

from __future__ import annotations

import numpy as np

from ternarylm.runtime_py.model import ModelConfig

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")


def session_options(threads: int = 0, session_config: dict | None = None, log_severity: int = 3,
                    graph_optimization: str = "all"):
    """onnxruntime SessionOptions: intra-op threads (0 = onnxruntime's default), config entries such
    as ``{"mlas.use_lut_gemm": "1"}``, log severity (0 verbose .. 4 fatal)."""
    import onnxruntime as ort

    if graph_optimization not in GRAPH_OPT_LEVELS:
        raise ValueError(f"graph_optimization must be one of {', '.join(GRAPH_OPT_LEVELS)}")
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = int(log_severity)
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    for key, value in (session_config or {}).items():
        so.add_session_config_entry(str(key), str(value))
    return so


def create_session(model_path, providers=None, provider_options=None, threads: int = 0,
                   session_config: dict | None = None, log_severity: int = 3, graph_optimization: str = "all"):
    """An ``onnxruntime.InferenceSession`` on ``providers`` (default CPU) with per-provider options
    ``{provider: {key: value}}`` and the ``session_options`` above."""
    import onnxruntime as ort

    providers = list(providers or ["CPUExecutionProvider"])
    options = [dict((provider_options or {}).get(p, {})) for p in providers]
    return ort.InferenceSession(str(model_path), sess_options=session_options(
        threads, session_config, log_severity, graph_optimization), providers=providers, provider_options=options)


class OrtDecoder:
    """onnxruntime decoder with the KV cache kept between ``forward`` calls.

    Either pass ``session`` (an ``onnxruntime.InferenceSession`` built elsewhere, e.g. from a device
    profile) or let this build one from ``model_path`` and the options.
    """

    name = "ort"

    def __init__(self, model_path, config: ModelConfig, *, providers=None, provider_options=None,
                 threads: int = 0, session_config: dict | None = None, log_severity: int = 3,
                 graph_optimization: str = "all", session=None):
        if session is None:
            session = create_session(model_path, providers, provider_options, threads, session_config,
                                     log_severity, graph_optimization)
        self.session, self.config = session, config
        inputs = {i.name: i for i in session.get_inputs()}
        missing = [n for n in ("input_ids", "attention_mask", "position_ids", "past_key_values.0.key")
                   if n not in inputs]
        if missing:
            raise ValueError(f"{model_path or 'the model'} lacks the decoder inputs {', '.join(missing)}; "
                             "is it a ternary-export model?")
        self.past_dtype = np.float16 if inputs["past_key_values.0.key"].type == "tensor(float16)" else np.float32
        self.present_names = [f"present.{i}.{kv}" for i in range(config.num_hidden_layers) for kv in ("key", "value")]
        self.output_names = ["logits", *self.present_names]
        self.reset()

    @classmethod
    def from_settings(cls, settings, config: ModelConfig) -> OrtDecoder:
        """From a ``ternarylm.devices.session.SessionSettings`` (or anything with ``create_session()``)."""
        return cls(getattr(settings, "model", None), config, session=settings.create_session())

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    @property
    def past_length(self) -> int:
        return self._length

    def reset(self, batch_size: int = 1):
        c = self.config
        empty = np.zeros((batch_size, c.num_key_value_heads, 0, c.head_dim), self.past_dtype)
        self._past = {name.replace("present", "past_key_values"): empty for name in self.present_names}
        self._mask = np.zeros((batch_size, 0), np.int64)
        self._length, self._batch = 0, batch_size

    def forward(self, input_ids, position_ids=None, attention_mask=None, last_only: bool = False) -> np.ndarray:
        """input_ids ``(B, T)`` -> logits ``(B, T, V)`` float32 (``(B, 1, V)`` when ``last_only``)."""
        input_ids = np.asarray(input_ids, np.int64)
        b, t = input_ids.shape
        past = self._length
        if past and b != self._batch:
            raise ValueError(f"batch size {b} differs from the cached {self._batch}; call reset()")
        if past + t > self.config.max_position_embeddings:
            raise ValueError(f"{past + t} tokens exceed the model's context of {self.config.max_position_embeddings}")
        if b != self._batch:
            self.reset(b)
        if attention_mask is None:
            attention_mask = np.concatenate([self._mask, np.ones((b, t), np.int64)], axis=1)
        attention_mask = np.asarray(attention_mask, np.int64)
        if position_ids is None:
            position_ids = np.broadcast_to(np.arange(past, past + t, dtype=np.int64), (b, t))
        feed = {"input_ids": input_ids, "attention_mask": attention_mask,
                "position_ids": np.ascontiguousarray(position_ids, dtype=np.int64), **self._past}
        logits, *presents = self.session.run(self.output_names, feed)
        self._past = {name.replace("present", "past_key_values"): p for name, p in zip(self.present_names, presents)}
        self._mask, self._length = attention_mask, past + t
        if last_only:
            logits = logits[:, -1:]
        return np.asarray(logits, np.float32)
