"""Per-layer sensitivity: how much validation loss moves when one layer alone changes precision.

Two numbers per quantised linear ``L``, both mean next-token NLL differences (nats/token) on the
same fixed validation windows:

``fp_alone``       loss(model as trained, ``L`` alone full precision) - loss(model as trained).
                   Usually negative: how much loss ternarising ``L`` costs inside the trained model.
``ternary_alone``  loss(every layer full precision but ``L`` ternary) - loss(every layer full
                   precision). Usually positive: how much ternarising ``L`` alone hurts.

"Full precision" is ``weight_bits = 16`` on the latent weights (no weight and no activation
quantisation), set with ``override_weight_bits``. A layer already at 16 has ``fp_alone = 0``.

Speed (the 132m preset has 84 linears, so 168 evaluations): batches are the outer loop, and for
each batch the inputs of every decoder block are computed once per baseline; a variant that changes
a layer in block ``i`` only re-runs blocks ``i..end`` and the head from the cached input of block
``i``. Quantised weights are computed once per layer and precision instead of once per forward.
Both shortcuts are checked against the plain ``model(input_ids)`` forward on the first batch and
dropped (with a warning) if they do not match, so the numbers are always those of the real model.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ternarylm.analysis.stats import layer_position
from ternarylm.quantization import (
    TERNARY_BITS,
    fake_quant_activations,
    fake_quant_weight,
    fake_quant_weight_int,
    override_weight_bits,
    ternary_linears,
)

FULL_PRECISION = 16
MATCH_TOLERANCE = 1e-4  # relative difference of a batch NLL allowed between the fast and plain paths


@dataclass
class SensitivityResult:
    baseline_loss: float  # mean NLL of the model as trained
    all_fp_loss: float  # mean NLL with every quantised linear at full precision
    tokens: int
    windows: int
    fp_alone: dict[str, float] = field(default_factory=dict)
    ternary_alone: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    fast_path: bool = True


def layer_sensitivity(model, windows, device="cpu", progress: bool = True,
                      fast: bool = True) -> SensitivityResult:
    """Both sensitivities of every quantised linear of ``model`` on ``windows`` (a list of
    LongTensors ``[B, T+1]``, evaluated as-is: pass the same list to compare runs)."""
    windows = list(windows)
    layers = [name for name, _ in ternary_linears(model)]
    if not layers:
        raise ValueError("the model has no quantised (ternary) linears to analyse")
    if not windows:
        raise ValueError("no validation windows to evaluate on")
    bits = {name: m.weight_bits for name, m in ternary_linears(model)}
    fp_variants = [n for n in layers if bits[n] != FULL_PRECISION]
    all_fp = dict.fromkeys(layers, FULL_PRECISION)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    total_steps = len(windows) * (2 + len(fp_variants) + len(layers))
    bar = _progress_bar(total_steps, progress)
    sums = {"base": 0.0, "all_fp": 0.0}
    fp_sums = dict.fromkeys(fp_variants, 0.0)
    tern_sums = dict.fromkeys(layers, 0.0)
    count = 0
    runner = _Runner(model, layers) if fast else None
    try:
        with torch.inference_mode(), (runner.frozen() if runner else contextlib.nullcontext()):
            for b, batch in enumerate(windows):
                batch = batch.to(device)
                x, y = batch[:, :-1], batch[:, 1:]
                if b == 0 and runner is not None and not runner.matches_plain(x, y, all_fp):
                    warnings.warn("fast sensitivity path does not match the model's forward; "
                                  "using plain forwards (slower)", stacklevel=2)
                    runner.close()
                    runner = None
                count += y.numel()
                for config, base_key, variants, sink, value in (
                    ({}, "base", fp_variants, fp_sums, FULL_PRECISION),
                    (all_fp, "all_fp", layers, tern_sums, TERNARY_BITS),
                ):
                    with override_weight_bits(model, config):
                        states = runner.block_inputs(x) if runner else None
                        sums[base_key] += _nll(runner.head(states) if runner else _logits(model, x), y)
                        bar.update(1)
                        for name in variants:
                            with override_weight_bits(model, {name: value}):
                                logits = runner.run_from(name, states) if runner else _logits(model, x)
                                sink[name] += _nll(logits, y)
                            bar.update(1)
    finally:
        if runner is not None:
            runner.close()
        bar.close()
        model.train(was_training)
    base, fp = sums["base"] / count, sums["all_fp"] / count
    return SensitivityResult(
        baseline_loss=base, all_fp_loss=fp, tokens=count, windows=sum(len(w) for w in windows),
        fp_alone={n: (fp_sums[n] / count - base) if n in fp_sums else 0.0 for n in layers},
        ternary_alone={n: tern_sums[n] / count - fp for n in layers},
        seconds=time.perf_counter() - start, fast_path=runner is not None,
    )


def _logits(model, x):
    return model(input_ids=x, use_cache=False).logits


def _nll(logits, y) -> float:
    """Summed next-token NLL, computed exactly as ``ternarylm.evaluation.evaluate_nll`` does."""
    return float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sensitivity", unit="eval", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, mininterval=0.5)


class _Runner:
    """The fast path for a TernaryLMForCausalLM: cached block inputs, frozen quantised weights."""

    def __init__(self, model, layers: list[str]):
        self.model = model
        inner = getattr(model, "model", None)
        self.staged = all(hasattr(inner, a) for a in ("layers", "norm")) and hasattr(model, "lm_head")
        self.block = {}
        for name in layers:
            index, _ = layer_position(name)
            if index is None or not name.startswith("model.layers."):
                self.staged = False
            self.block[name] = index
        self._patched = []

    # -- frozen quantised weights -------------------------------------------------------------
    @contextlib.contextmanager
    def frozen(self):
        """Each BitLinear computes its quantised weight once per precision (same functions, same
        values as ``BitLinear.forward``) instead of once per call; restored on exit."""
        for _, module in ternary_linears(self.model):
            module.forward = _frozen_forward(module)
            self._patched.append(module)
        try:
            yield self
        finally:
            self.close()

    def close(self):
        for module in self._patched:
            module.__dict__.pop("forward", None)
        self._patched = []

    # -- staged forward -------------------------------------------------------------------------
    def block_inputs(self, x):
        """One plain forward of the model that records, for every decoder block, the hidden state it
        received and the other arguments the model passed it (mask, rotary tables): ``(hidden states,
        block calls, logits)``. Recording the calls (forward pre-hooks) rather than rebuilding them keeps
        this independent of how the model computes masks and positions."""
        if not self.staged:
            return x
        layers = list(self.model.model.layers)
        calls: list = [None] * len(layers)

        def recorder(i):
            def hook(module, args, kwargs):
                calls[i] = (args, kwargs)
            return hook

        handles = [layer.register_forward_pre_hook(recorder(i), with_kwargs=True) for i, layer in enumerate(layers)]
        try:
            logits = _logits(self.model, x)
        finally:
            for h in handles:
                h.remove()
        hidden = [_hidden_arg(args, kwargs) for args, kwargs in calls]
        return hidden, calls, logits

    def head(self, states):
        if not self.staged:
            return _logits(self.model, states)
        return states[2]

    def run_from(self, name: str, states):
        """Logits when everything before the block holding ``name`` is as in ``states``."""
        if not self.staged:
            return _logits(self.model, states)
        hidden, calls, _ = states
        index = self.block[name]
        h = hidden[index]
        for layer, (args, kwargs) in zip(self.model.model.layers[index:], calls[index:]):
            h = _call_with_hidden(layer, h, args, kwargs)
        return self.model.lm_head(self.model.model.norm(h))

    def matches_plain(self, x, y, all_fp: dict) -> bool:
        """Does the fast path give the plain forward's NLL (as trained and all full precision)?"""
        for config in ({}, all_fp):
            with override_weight_bits(self.model, config):
                fast = _nll(self.head(self.block_inputs(x)), y)
                saved, self._patched = self._patched, []
                for module in saved:
                    module.__dict__.pop("forward", None)
                plain = _nll(_logits(self.model, x), y)
                for module in saved:
                    module.forward = _frozen_forward(module)
                self._patched = saved
            if not abs(fast - plain) <= MATCH_TOLERANCE * max(abs(plain), 1.0):
                return False
        return True


def _hidden_arg(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _call_with_hidden(layer, h, args, kwargs):
    """Re-run a decoder block on hidden state ``h`` with the other arguments of its recorded call."""
    if args:
        out = layer(h, *args[1:], **kwargs)
    else:
        out = layer(**{**kwargs, "hidden_states": h})
    return out[0] if isinstance(out, tuple) else out


def _frozen_forward(module):
    cache: dict[int, torch.Tensor] = {}

    def forward(x):
        bits = module.weight_bits
        if bits == FULL_PRECISION:
            return F.linear(x, module.weight, module.bias)
        w = cache.get(bits)
        if w is None:
            if bits == TERNARY_BITS:
                w = fake_quant_weight(module.weight, module.quant.granularity, module.quant.group_size)
            else:
                w = fake_quant_weight_int(module.weight, bits)
            w = cache[bits] = w.detach()
        if module.quant.activation_bits:
            x = fake_quant_activations(x)
        return F.linear(x, w, module.bias)

    return forward
