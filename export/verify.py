"""``verify``: run PyTorch, onnxruntime and the NumPy runtime on the same inputs and compare.

One entry point for every kind of export (``verify_export``; the kind is read from config.json).
Two measures per engine (``ternarylm.format.compare``): the max |logit difference| to PyTorch on the same
token sequence (teacher-forced, so one flipped token cannot cascade), relative to the largest PyTorch
logit; and agreement: for a language model, greedy tokens of the engine's own KV-cached generation
against PyTorch's; for a classifier, the share of inputs given the same label.

Tolerances (each target's ``relative_tolerance`` in ``targets.py``): the ``portable`` target computes what training computes (per-token int8 activations,
exact ternary weights), so it matches up to float rounding — and the occasional activation that float rounding moves across
an int8 rounding boundary, which shifts logits by about 1e-3 of their range (hence 1e-2). MatMulNBits quantises activations per
block of the K axis instead of per token, and the dense twins drop activation quantisation: those targets get a looser
logit tolerance and are held to greedy agreement. Mixed-precision exports are compared against the PyTorch model with the
export's per-layer plan (``config.json`` ``export.keep_precision``), export-time overrides included.

An int8/int4 head or embedding is a lossy choice, not an engine error, so it is judged apart
(``LanguageModelReference.for_export``): the engines are held to a reference model that carries the export's
quantised head and embedding (the same ``symmetric_block_quantize`` codes, in float32), and what that quantisation
costs is measured on PyTorch alone, the way llama.cpp judges its quant types: mean KL divergence from the float model's
next-token distribution (at most ``DEFAULT_MAX_KLD`` = 0.01 nats, ``--max-kld``), teacher-forced on the float
model's greedy tokens; top-1 agreement is reported beside it. A layout or scale bug still moves the engine's logits
by 0.1-1 against its own reference; an int4 head that costs too much fails the second check.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ternarylm.format.compare import argmax_agreement, kl_divergence, relative_max_diff
from ternarylm.format.entries import CAUSAL_LM, SEQUENCE_CLASSIFICATION

DEFAULT_PROMPTS = ("Once upon a time", "The little dog ran to the", "\"Can we play?\" asked")
DEFAULT_TEXTS = ("The little dog ran to the park.", "\"Can we play?\" asked Tom.", "It was a cold and rainy day.",
                 "Lily found a red ball under the tree.", "The cat slept all day in the warm sun.")
ENGINES = ("ort", "numpy")
DEFAULT_NEW_TOKENS = 16  # greedy tokens per prompt (verify, and the --embedding/--lm-head auto search)
DEFAULT_RELATIVE_TOLERANCE = 0.15  # a target the registry does not know (an export from a newer version)
# What an int8/int4 head and embedding may cost against the float ones (the module docstring): mean KL divergence, nats
DEFAULT_MAX_KLD = 0.01


def _torch_reference(model, ids: list[int], max_new_tokens: int):
    import torch

    with torch.no_grad():
        x = torch.tensor([ids])
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=None, pad_token_id=model.config.pad_token_id or 0)
        full = out[0].tolist()
        logits = model(torch.tensor([full]), use_cache=False).logits[0].float().numpy()
    return full, logits


def apply_precision_plan(model, kept: dict | None):
    """Give the PyTorch model the export's per-layer precision (``export.keep_precision``: the
    checkpoint's plan plus any export-time override), so both sides compute the same mixed model.
    Exports without the field (before mixed precision) leave the checkpoint's plan as it is."""
    from ternarylm.format.entries import TERNARY_BITS
    from ternarylm.quantization import ternary_linears

    if kept is None:
        return model
    for name, module in ternary_linears(model):
        module.weight_bits = int(kept.get(name, TERNARY_BITS))
    return model


def _engine_logits(engine, ids: list[int]) -> np.ndarray:
    engine.reset()
    x = np.array([ids], np.int64)
    return engine.forward(x)[0].astype(np.float32)


def _engine_greedy(engine, prompt: list[int], n: int) -> list[int]:
    engine.reset()
    ids = list(prompt)
    logits = engine.forward(np.array([prompt], np.int64))[0, -1]
    for _ in range(n):
        nxt = int(np.argmax(logits))
        ids.append(nxt)
        logits = engine.forward(np.array([[nxt]], np.int64))[0, -1]
    return ids


def _check_engines(engines) -> list[str]:
    engines = list(engines)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise ValueError(f"unknown engine {unknown[0] if unknown else '(none)'}; use {' or '.join(ENGINES)}")
    return engines


def _engine_result(diff: float, agreement: float, agreement_key: str, tol: float, min_agreement: float) -> dict:
    return {"max_logit_diff": diff, "tolerance": tol, agreement_key: agreement,
            "passed": bool(diff <= tol and agreement >= min_agreement)}


class LanguageModelReference:
    """PyTorch's side of a language-model comparison, computed once per source: per prompt ``(prompt ids,
    greedy ids, teacher-forced logits)`` of ``reference_model`` (``override``: the export-time keep_precision
    patterns) with its float head and embedding, and (``for_export``) the same with an export's int8/int4
    head and embedding carried over, plus what they cost."""

    def __init__(self, ckpt: dict, keep_precision: dict | None, prompts=None,
                 max_new_tokens: int = DEFAULT_NEW_TOKENS, override: dict | None = None):
        from tokenizers import Tokenizer

        self.model = reference_model(ckpt, keep_precision, override)
        tokenizer = Tokenizer.from_str(ckpt["tokenizer_json"])
        self.prompt_ids = []
        for prompt in prompts or DEFAULT_PROMPTS:
            ids = tokenizer.encode(prompt).ids
            if not ids:
                raise ValueError(f"prompt {prompt!r} is empty after tokenization")
            self.prompt_ids.append(ids)
        self.max_new_tokens = max_new_tokens
        self.float_runs = self._runs()

    def _runs(self) -> list[tuple[list[int], list[int], np.ndarray]]:
        from ternarylm.hf.ternary_in import eager_kernels

        with eager_kernels():  # transformers' BitNet layers compile their kernels
            return [(ids, *_torch_reference(self.model, ids, self.max_new_tokens)) for ids in self.prompt_ids]

    def for_export(self, stored: dict) -> tuple[list, dict | None]:
        """``(runs, cost)`` for an export whose head/embedding are ``stored`` (``stored_quantization``): the runs
        its engines are held to, and the cost of that quantisation against the float model (None when nothing
        is quantised): KL divergence and top-1 agreement, teacher-forced on the float model's greedy tokens."""
        import torch

        from ternarylm.hf.ternary_in import eager_kernels

        if not stored:
            return self.float_runs, None
        with carrying(self.model, stored):
            runs = self._runs()
            with torch.no_grad(), eager_kernels():
                forced = [self.model(torch.tensor([full]), use_cache=False).logits[0].float().numpy()
                          for _, full, _ in self.float_runs]
        ref = np.concatenate([logits for _, _, logits in self.float_runs])
        got = np.concatenate(forced)
        kl = kl_divergence(ref, got)
        cost = {"quantized": {name: {"bits": bits, "block_size": block} for name, (bits, block) in stored.items()},
                "kl_divergence_mean": float(kl.mean()), "kl_divergence_max": float(kl.max()),
                "top1_agreement": argmax_agreement(got, ref), "positions": int(kl.size)}
        return runs, cost


# The layers an export may store block-quantised (config.json ``weights`` entries) and how a model reaches them
STORED_LAYERS = {"model.embed_tokens": "get_input_embeddings", "lm_head": "get_output_embeddings"}


@contextmanager
def carrying(model, stored: dict):
    """Inside the block ``model`` computes with ``stored``'s quantised head/embedding (float32 copies of what the
    runtimes compute with: ``head_int_weight``, the codes the exporter writes); its float ones, tied or not, come
    back after."""
    import torch

    from ternarylm.export.weights import head_int_weight

    modules = {name: getattr(model, getter)() for name, getter in STORED_LAYERS.items()}
    originals = {name: module.weight for name, module in modules.items()}
    try:
        for name, (bits, block) in stored.items():
            weight = originals[name]
            table = head_int_weight(weight.detach().float().numpy(), bits, block).dequantized()
            modules[name].weight = torch.nn.Parameter(torch.from_numpy(table).to(weight.dtype), requires_grad=False)
        yield model
    finally:
        for name, module in modules.items():
            module.weight = originals[name]


def stored_quantization(config: dict) -> dict:
    """``{layer: (bits, block_size)}`` for the head and embedding the export stores as int8/int4."""
    found = {}
    for name in STORED_LAYERS:
        entry = (config.get("weights") or {}).get(name) or {}
        if entry.get("bits") in (4, 8) and entry.get("block_size"):
            found[name] = (int(entry["bits"]), int(entry["block_size"]))
    return found


def precision_result(cost: dict | None, max_kld: float) -> dict | None:
    """The cost of a quantised head/embedding held to its bound (None when there is nothing to judge). Top-1
    agreement is reported, not gated: at a near-tie a flip costs nothing, and small models have many."""
    if cost is None:
        return None
    return {**cost, "max_kld": max_kld, "passed": bool(cost["kl_divergence_mean"] <= max_kld)}


def transformers_is_reference(ckpt: dict, override: dict | None) -> bool:
    """transformers' own model is the reference for a Hugging Face source, unless the export overrode layer
    precisions, which only our model can apply."""
    from ternarylm.hf.ternary_in import is_hf_source

    return is_hf_source(ckpt) and not override


def reference_model(ckpt: dict, keep_precision: dict | None, override: dict | None = None):
    """The PyTorch model an export is held to (``transformers_is_reference``), else ours with the export's plan."""
    from ternarylm.checkpoint import model_from_checkpoint
    from ternarylm.hf.ternary_in import transformers_model

    if transformers_is_reference(ckpt, override):
        return transformers_model(ckpt)
    return apply_precision_plan(model_from_checkpoint(ckpt), keep_precision)


def compare_language_model(export_dir, references, engines, tol: float, min_agreement: float) -> dict:
    """Each engine on the export against ``references``: ``{engine: {max_logit_diff, tolerance,
    greedy_agreement, passed}}``."""
    from ternarylm.runtime_py import load_engine

    results = {}
    for name in engines:
        engine = load_engine(export_dir, engine=name)
        diffs, agree, total = [], 0, 0
        for ids, full, ref in references:
            diffs.append(relative_max_diff(_engine_logits(engine, full), ref))
            gen = _engine_greedy(engine, ids, len(full) - len(ids))
            agree += sum(a == b for a, b in zip(gen[len(ids):], full[len(ids):]))
            total += len(full) - len(ids)
        results[name] = _engine_result(max(diffs), agree / max(total, 1), "greedy_agreement", tol, min_agreement)
    return results


def _verify_language_model(export_dir: Path, config: dict, ckpt: dict, engines, tol: float, min_agreement: float,
                           prompts=None, max_new_tokens: int = DEFAULT_NEW_TOKENS, max_kld: float = DEFAULT_MAX_KLD,
                           **_) -> dict:
    prompts = list(prompts or DEFAULT_PROMPTS)
    reference = LanguageModelReference(ckpt, config["export"].get("keep_precision"), prompts, max_new_tokens,
                                       override=config["export"].get("keep_precision_override"))
    runs, cost = reference.for_export(stored_quantization(config))
    return {"prompts": prompts, "engines": compare_language_model(export_dir, runs, engines, tol, min_agreement),
            "precision": precision_result(cost, max_kld)}


def default_inputs(pair: bool) -> list:
    """Built-in classifier inputs: sentences, or for pair classifiers each paired with itself and the next."""
    texts = list(DEFAULT_TEXTS)
    if not pair:
        return texts
    return [(t, t) for t in texts] + [(t, texts[(i + 1) % len(texts)]) for i, t in enumerate(texts)]


def _verify_classifier(export_dir: Path, config: dict, ckpt: dict, engines, tol: float, min_agreement: float,
                       inputs=None, **_) -> dict:
    import torch

    from ternarylm.checkpoint import model_from_checkpoint
    from ternarylm.runtime_py import load_classifier

    model = model_from_checkpoint(ckpt, expect_kind=SEQUENCE_CLASSIFICATION)
    apply_precision_plan(model, config["export"].get("keep_precision"))
    results, reference, count = {}, None, 0
    for name in engines:
        clf = load_classifier(export_dir, engine=name)
        if reference is None:
            items = list(inputs) if inputs else default_inputs(clf.spec.pair)
            ids, mask = clf.encode(items)
            with torch.no_grad():
                reference = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
            count = len(items)
        got = clf.engine.logits(ids, mask)
        results[name] = _engine_result(relative_max_diff(got, reference), argmax_agreement(got, reference),
                                       "argmax_agreement", tol, min_agreement)
    return {"inputs": count, "engines": results}


# What verify compares, per config.json kind: the reference run and the agreement it reports.
VERIFIERS = {CAUSAL_LM: (_verify_language_model, "greedy_agreement"),
             SEQUENCE_CLASSIFICATION: (_verify_classifier, "argmax_agreement")}


def verify_export(export_dir, checkpoint, prompts=None, max_new_tokens: int = DEFAULT_NEW_TOKENS, engines=ENGINES,
                  logit_tol: float | None = None, min_agreement: float = 0.9, inputs=None,
                  max_kld: float = DEFAULT_MAX_KLD) -> dict:
    """Compare an export folder (either engine) with the PyTorch model of ``checkpoint``.

    Language models: ``prompts`` (default: three built-in ones), ``max_new_tokens`` of greedy generation;
    classifiers: ``inputs`` (texts or pairs; default: built-in sentences). The tolerance defaults to the
    target's (``targets.py``). Returns the report: per engine max relative logit difference, agreement,
    passed; ``passed`` overall.
    """
    from ternarylm.export.source import load_source
    from ternarylm.format.targets import TARGETS

    export_dir = Path(export_dir)
    if not (export_dir / "config.json").is_file():
        raise ValueError(f"{export_dir}: no config.json; pass the folder ternary-export onnx wrote")
    config = json.loads((export_dir / "config.json").read_text())
    kind = config.get("kind", CAUSAL_LM)
    if kind not in VERIFIERS:
        raise ValueError(f"{export_dir / 'config.json'}: kind {kind!r} cannot be verified; "
                         f"supported: {', '.join(VERIFIERS)}")
    target = config.get("export", {}).get("target")
    known = TARGETS.get(target)
    tol = logit_tol if logit_tol is not None else (known.relative_tolerance if known else DEFAULT_RELATIVE_TOLERANCE)
    run, agreement_key = VERIFIERS[kind]
    ckpt = load_source(checkpoint)
    override = config.get("export", {}).get("keep_precision_override")
    found = run(export_dir, config, ckpt, _check_engines(engines), tol, min_agreement,
                prompts=prompts, max_new_tokens=max_new_tokens, inputs=inputs, max_kld=max_kld)
    report = {"export_dir": str(export_dir), "kind": kind, "target": target, "checkpoint": str(checkpoint),
              "reference": "transformers" if kind == CAUSAL_LM and transformers_is_reference(ckpt, override)
              else "ternarylm",
              "relative_tolerance": tol, "min_agreement": min_agreement, "agreement": agreement_key, **found}
    report["passed"] = (all(r["passed"] for r in report["engines"].values())
                        and (report.get("precision") or {}).get("passed", True))
    return report
