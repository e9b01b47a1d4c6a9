"""``generate``: prompt ids -> new ids with any engine (NumpyDecoder, OrtDecoder), plus timing stats.

One prefill call over the whole prompt, then one call per new token on the KV cache; the next token
comes from ``sampling.sample_next``, identical for every engine.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from ternarylm.runtime_py.sampling import SamplingConfig, sample_next


class ContextError(ValueError):
    """A prompt that does not fit the model's context."""


@dataclass
class GenerationStats:
    engine: str
    prompt_tokens: int
    new_tokens: int
    prefill_s: float  # the prompt's forward pass (it yields the first new token)
    decode_s: float  # the forward passes of the tokens after the first
    stop_reason: str  # "eos", "length" (max_new_tokens) or "context" (max_position_embeddings reached)

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        steps = self.new_tokens - 1  # decode steps: every new token after the one prefill produced
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else float("nan")

    def to_dict(self) -> dict:
        """JSON-ready: a rate with nothing to measure is None, not NaN (which JSON lacks)."""
        rates = {"prefill_tokens_per_s": self.prefill_tokens_per_s, "decode_tokens_per_s": self.decode_tokens_per_s}
        return {**asdict(self), **{k: None if math.isnan(v) else v for k, v in rates.items()}}

    def summary(self) -> str:
        """One line for stderr; a phase that did not run (no new token, or only one) reads n/a, not nan."""
        prefill, decode = self.prefill_tokens_per_s, self.decode_tokens_per_s
        prefill_text = (f"prefill {self.prefill_s * 1e3:.1f} ms ({prefill:.1f} tokens/s)" if not math.isnan(prefill)
                        else "prefill n/a (no new token asked for)")
        decode_text = (f"decode {decode:.1f} tokens/s" if not math.isnan(decode)
                       else "decode n/a (no token after the first)")
        return (f"[{self.engine}] prompt {self.prompt_tokens} tokens, {prefill_text}; generated {self.new_tokens} "
                f"tokens, {decode_text} (stop: {self.stop_reason})")


def check_prompt(prompt_ids, context: int):
    """Raise ContextError (one line) for a prompt longer than the context, ValueError for an empty one."""
    if not len(prompt_ids):
        raise ValueError("the prompt is empty: give at least one token")
    if len(prompt_ids) > context:
        raise ContextError(f"the prompt is {len(prompt_ids)} tokens but the model's context is {context} "
                           "(max_position_embeddings); shorten the prompt")


def generate(engine, prompt_ids, max_new_tokens: int, temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, seed: int = 0, eos_id: int | None = None, on_token=None):
    """Continue ``prompt_ids`` (a list of ints) by up to ``max_new_tokens`` tokens.

    Returns ``(new_ids, stats)``: the generated ids (without the prompt; an ``eos_id`` that stops
    generation is included) and a :class:`GenerationStats`. ``on_token(id)`` is called as each token
    is chosen (for streaming). The engine's cache is reset first. Generation also stops when the
    context (``max_position_embeddings``) is full; a prompt that does not fit raises ContextError.
    """
    sampling = SamplingConfig(float(temperature), int(top_k), float(top_p))
    prompt = [int(i) for i in prompt_ids]
    context = engine.config.max_position_embeddings
    check_prompt(prompt, context)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    rng = np.random.default_rng(seed)
    engine.reset(1)
    new: list[int] = []
    stop = "length"
    t0 = time.perf_counter()
    logits = engine.forward(np.array([prompt], np.int64), last_only=True) if max_new_tokens else None
    prefill_s = time.perf_counter() - t0 if logits is not None else 0.0  # no forward pass: nothing timed
    t1 = time.perf_counter()
    while len(new) < max_new_tokens:
        token = sample_next(logits[0, -1], sampling, rng)
        new.append(token)
        if on_token is not None:
            on_token(token)
        if eos_id is not None and token == eos_id:
            stop = "eos"
            break
        if len(new) == max_new_tokens:
            break
        if len(prompt) + len(new) >= context:
            stop = "context"
            break
        logits = engine.forward(np.array([[token]], np.int64), last_only=True)
    decode_s = time.perf_counter() - t1
    return new, GenerationStats(getattr(engine, "name", type(engine).__name__), len(prompt), len(new), prefill_s,
                                decode_s, stop)
