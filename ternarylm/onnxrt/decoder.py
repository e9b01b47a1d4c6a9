"""``OrtDecoder``: the one decode loop over an exported decoder in onnxruntime.

``ternary-run``'s ORT engine, ``load_ort``, ``ternary-export verify``, ``ternary-profile``'s measurement
(and ``--tune``) and the benchmarks all step a model through this class, so a change to how the KV cache
is fed happens once. The IO names are the export folder's (docs/FORMATS.md)::

    input_ids (B, T), attention_mask (B, past + T), position_ids (B, T),
    past_key_values.{i}.key|value (B, kv_heads, past, head_dim), [logits_to_keep () int64, default 0]
      -> logits (B, T or logits_to_keep, V), present.{i}.key|value (B, kv_heads, past + T, head_dim)

A prefill that only needs the next token (``forward(..., last_only=True)``) feeds ``logits_to_keep = 1``
where the graph has that optional input, so the LM head runs for one position instead of T.

On the fused graph (GroupQueryAttention) the cache is updated in place: one buffer per layer bound as
both past and present with IO binding, so a decode step writes one row instead of copying the cache.
Elsewhere it stays in onnxruntime ``OrtValue`` buffers between calls (``run_with_ort_values``). Shapes come from the session's own inputs; config.json's architecture fills in
symbolic dimensions and the context limit. No torch, no transformers.
"""

from __future__ import annotations

import re
import time

import numpy as np

from ternarylm.format.architecture import ModelConfig
from ternarylm.format.onnx_names import LOGITS_TO_KEEP

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_PAST_DTYPES = {"tensor(float16)": np.float16, "tensor(float)": np.float32}


class DecoderIO:
    """The decoder's IO as the session declares it (``architecture``: config.json's section, may be empty)."""

    def __init__(self, session, architecture: dict | None = None):
        inputs = {i.name: i for i in session.get_inputs()}
        # optional inputs (an initializer of the same name gives the default) are listed apart
        optional = getattr(session, "get_overridable_initializers", list)()
        self.input_names = set(inputs) | {i.name for i in optional}
        if "input_ids" not in inputs:
            raise ValueError("the model has no 'input_ids' input; is it a ternary-export decoder?")
        layers = sorted({int(m.group(1)) for n in inputs if (m := _PAST.match(n))})
        self.layers = len(layers)
        self.past_names = [(f"past_key_values.{i}.key", f"past_key_values.{i}.value") for i in layers]
        self.past_inputs = [name for pair in self.past_names for name in pair]  # flat, in output order
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


KV_CACHE_MODES = ("auto", "in-place", "growing")
# Prompt tokens per call of an in-place, last-only prefill (0: the whole prompt in one call). A trade, so off
# by default: on the 132m shape, 128-token prompt, 2 threads, 32 takes 11 MB off peak RSS (the arena holds one
# slice's activations, not the prompt's) and prefills 8% slower; 64 takes 7 MB off and is 4% slower.
PREFILL_CHUNK = 0
MIN_CAPACITY = 256  # first in-place buffer length (tokens); it doubles up to the context when outgrown
KEEP_ONE = np.array(1, np.int64)  # logits_to_keep for a prefill that needs the next token only


def check_right_padded(mask: np.ndarray) -> None:
    """The fused graph's attention (GroupQueryAttention) keeps each row's tokens at the start of its cache
    and counts them with the mask's row sums: a left-padded row would attend to the wrong keys."""
    if mask.shape[0] > 1 or not mask.all():
        valid = mask.sum(axis=1)
        prefix = np.arange(mask.shape[1])[None, :] < valid[:, None]
        if not np.array_equal(mask.astype(bool), prefix):
            raise ValueError("this export's fused attention needs each row's tokens first and padding last "
                             "(right padding); pad on the right, run the rows one by one, or use the numpy engine")


class OrtDecoder:
    """onnxruntime decoder with the KV cache kept between ``forward`` calls (the engine interface of
    ``ternarylm.runtime_py``: ``forward``, ``reset``, ``past_length``, ``config``).

    ``session``: an ``onnxruntime.InferenceSession`` (build it with
    ``ternarylm.onnxrt.SessionSettings(...).create_session()``); ``config``: the folder's
    ``ModelConfig`` (None when profiling a bare graph: shapes then come from the graph alone).

    ``kv_cache``:

    - ``in-place``: one ``(B, kv_heads, capacity, head_dim)`` buffer per layer and per key/value,
      bound with IO binding as both ``past_key_values.*`` and ``present.*``: GroupQueryAttention sees
      they share memory and writes the new keys/values at row ``sum(mask) - 1`` instead of copying the
      whole cache every step (onnxruntime-genai's ``past_present_share_buffer``). Needs the fused graph
      (ORT targets and the dense twins) and right-padded batches. The buffer starts at
      ``max_length`` (default 256 tokens) and doubles, up to the context, when outgrown.
    - ``growing``: ``present.*`` of one call become the next call's ``past_key_values.*`` (any graph,
      the portable target's standard-op attention included).
    - ``auto``: ``in-place`` when ``fused_attention`` is true (the loader reads it from config.json's
      target), else ``growing``.

    ``prefill_chunk``: a last-only prompt on the in-place cache (batch 1, default mask and positions) runs
    this many tokens per call (``PREFILL_CHUNK``; 0: the whole prompt at once).
    """

    name = "ort"

    def __init__(self, session, config: ModelConfig | None = None, *, kv_cache: str = "auto",
                 fused_attention: bool = False, max_length: int | None = None, prefill_chunk: int = PREFILL_CHUNK):
        if kv_cache not in KV_CACHE_MODES:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHE_MODES)}, got {kv_cache!r}")
        self.session, self.config = session, config
        self.io = DecoderIO(session, config.to_dict() if config is not None else None)
        self.past_dtype = self.io.past_dtype
        self.context = config.max_position_embeddings if config is not None else None
        if max_length is not None and self.context is not None and max_length > self.context:
            raise ValueError(f"max_length {max_length} exceeds the model's context of {self.context}")
        self.max_length = max_length
        if prefill_chunk < 0:
            raise ValueError(f"prefill_chunk must be >= 0 (0: the whole prompt in one call), got {prefill_chunk}")
        self.prefill_chunk = prefill_chunk
        in_place = kv_cache == "in-place" or (kv_cache == "auto" and fused_attention)
        self.kv_cache = "in-place" if in_place and self.io.past_names else "growing"
        self.reset()

    @classmethod
    def from_settings(cls, settings, config: ModelConfig | None = None, **options) -> OrtDecoder:
        """From a ``SessionSettings`` (or anything with ``create_session()``); ``options`` as for the class."""
        return cls(settings.create_session(), config, **options)

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    @property
    def past_length(self) -> int:
        return self._length

    def reset(self, batch_size: int = 1):
        io = self.io
        self._mask = np.zeros((batch_size, 0), np.int64)
        self._length, self._batch = 0, batch_size
        self._buffers, self._arrays, self._binding = None, None, None  # in-place: allocated by the first forward
        self._keep_values = None
        self._capacity = 0
        if self.kv_cache == "growing":
            empty = np.zeros((batch_size, io.kv_heads or 0, 0, io.head_dim or 0), io.past_dtype)
            self._past = {name: _ortvalue(empty) for name in io.past_inputs}

    def forward(self, input_ids, position_ids=None, attention_mask=None, last_only: bool = False) -> np.ndarray:
        """input_ids ``(B, T)`` -> logits ``(B, T, V)`` float32 (``(B, 1, V)`` when ``last_only``).

        ``attention_mask`` covers past + new tokens (default: the cached mask plus ones);
        ``position_ids`` default to ``past .. past + T - 1``.
        """
        input_ids = np.asarray(input_ids, np.int64)
        b, t = input_ids.shape
        chunk = self.prefill_chunk
        if (last_only and chunk and t > chunk and b == 1 and self.kv_cache == "in-place" and attention_mask is None
                and position_ids is None):  # a long prompt in slices: the same result, smaller activations
            if self.context is not None and self._length + t > self.context:
                raise ValueError(f"{self._length + t} tokens exceed the model's context of {self.context}")
            self._ensure_capacity(self._length + t)  # the whole prompt's rows now: a too-small cache fails before a slice runs
            for lo in range(0, t - chunk, chunk):
                self.forward(input_ids[:, lo:lo + chunk], last_only=True)
            return self.forward(input_ids[:, (t - 1) // chunk * chunk:], last_only=True)
        past = self._length
        if past and b != self._batch:
            raise ValueError(f"batch size {b} differs from the cached {self._batch}; call reset()")
        if self.context is not None and past + t > self.context:
            raise ValueError(f"{past + t} tokens exceed the model's context of {self.context}")
        if b != self._batch:
            self.reset(b)
        if attention_mask is None:
            attention_mask = np.concatenate([self._mask, np.ones((b, t), np.int64)], axis=1)
        attention_mask = np.ascontiguousarray(attention_mask, np.int64)
        if position_ids is None:
            position_ids = np.broadcast_to(np.arange(past, past + t, dtype=np.int64), (b, t))
        position_ids = np.ascontiguousarray(position_ids, np.int64)
        keep = last_only and t > 1 and LOGITS_TO_KEEP in self.io.input_names  # the head for the last position only
        if self.kv_cache == "in-place":
            logits = self._run_in_place(input_ids, attention_mask, position_ids, past, keep)
        else:
            logits = self._run_growing(input_ids, attention_mask, position_ids, keep)
        self._mask, self._length = attention_mask, past + t
        if last_only:  # a copy, so the (B, T, V) prefill logits are freed now, not kept alive by a view
            return np.array(logits[:, -1:], np.float32)
        return np.asarray(logits, np.float32)

    def _run_growing(self, input_ids, attention_mask, position_ids, keep_last: bool = False) -> np.ndarray:
        feed = {"input_ids": _ortvalue(input_ids), **self._past}
        if keep_last:
            feed[LOGITS_TO_KEEP] = _ortvalue(KEEP_ONE)
        if "attention_mask" in self.io.input_names:
            feed["attention_mask"] = _ortvalue(attention_mask)
        if "position_ids" in self.io.input_names:
            feed["position_ids"] = _ortvalue(position_ids)
        logits, *presents = self.session.run_with_ort_values(self.io.output_names, feed)
        self._past = dict(zip(self.io.past_inputs, presents))
        return logits.numpy()

    def _run_in_place(self, input_ids, attention_mask, position_ids, past: int, keep_last: bool = False) -> np.ndarray:
        b, t = input_ids.shape
        if past == 0:
            check_right_padded(attention_mask)
        elif t > 1 and b > 1:
            raise ValueError("with a cache, onnxruntime's attention takes several new tokens only at batch "
                             "size 1; feed them one by one")
        self._ensure_capacity(past + t)
        binding = self._binding
        if self._keep_values:  # bound every call: a later full-logits call must not inherit the last one's 1
            binding.bind_ortvalue_input(LOGITS_TO_KEEP, self._keep_values[keep_last])
        binding.bind_cpu_input("input_ids", input_ids)
        if "attention_mask" in self.io.input_names:
            binding.bind_cpu_input("attention_mask", attention_mask)
        if "position_ids" in self.io.input_names:
            binding.bind_cpu_input("position_ids", position_ids)
        if t == 1:  # decode: logits into a buffer allocated once
            binding.bind_ortvalue_output("logits", self._step_logits_value)
        else:
            binding.bind_output("logits", "cpu")
        self.session.run_with_iobinding(binding)
        if t == 1:
            return self._step_logits.copy()
        return binding.get_outputs()[0].numpy()

    def _ensure_capacity(self, needed: int) -> None:
        """Allocate (or grow, keeping the cached rows) the shared past/present buffers and bind them.

        On the CPU they are NumPy arrays (pages are committed as rows are written, so a long buffer costs
        only what is used); on CUDA they are device OrtValues sized once to ``max_length`` or the context.
        """
        import onnxruntime as ort

        io, b = self.io, self._batch
        have = self._capacity
        if needed <= have:
            return
        on_gpu = self.providers[0] == "CUDAExecutionProvider"
        if on_gpu:
            if have:
                raise ValueError(f"{needed} tokens exceed the in-place cache of {have} (max_length); "
                                 "raise max_length")
            capacity = max(self.max_length or self.context or needed, needed)
        else:
            limit = self.context or max(needed, 2 * have, MIN_CAPACITY)
            capacity = self.max_length or MIN_CAPACITY
            while capacity < needed:
                capacity *= 2
            capacity = min(max(capacity, needed), limit)
        shape = (b, io.kv_heads, capacity, io.head_dim)
        old, self._arrays, self._capacity = self._arrays, [], capacity
        if on_gpu:
            self._buffers = [ort.OrtValue.ortvalue_from_shape_and_type(shape, io.past_dtype, "cuda", 0)
                             for _ in io.past_inputs]
        else:
            self._arrays = [np.empty(shape, io.past_dtype) for _ in io.past_inputs]
            if old and have:  # only the rows written so far matter; the rest is never read
                for new, prev in zip(self._arrays, old):
                    new[:, :, :have] = prev[:, :, :have]
            self._buffers = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._arrays]
        self._binding = binding = self.session.io_binding()
        # logits_to_keep is an initializer with a default, which bind_cpu_input cannot find by name; an OrtValue binds
        self._keep_values = ({keep: _ortvalue(np.array(int(keep), np.int64)) for keep in (False, True)}
                             if LOGITS_TO_KEEP in io.input_names else None)
        self._step_logits = np.empty((b, 1, io.vocab), np.float32)
        self._step_logits_value = ort.OrtValue.ortvalue_from_numpy(self._step_logits)
        binding.bind_output("logits", "cpu")  # first, so it stays get_outputs()[0]
        for past, present, value in zip(io.past_inputs, io.output_names[1:], self._buffers):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)


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
