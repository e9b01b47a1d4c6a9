"""``--embedding/--lm-head auto``: the smallest head and embedding precisions that still pass verify.

The target lists its candidates, smallest first (``ternarylm.format.targets.Target.auto_precisions``);
each is exported to a scratch folder and compared with PyTorch on the built-in prompts, the way
``ternary-export verify`` does (the float PyTorch side is computed once): the engine against the model
carrying the candidate's quantised head/embedding, and that quantisation's cost (KL divergence, top-1)
against the float model. The first that passes is kept; when
none does, the last (the largest) is used and the record says so. The record goes into config.json
(``export.precision_choice``) so a user can see what was tried and why this one won.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

AUTO = "auto"


def candidates(target, kind_has_head: bool, embedding: str | None, lm_head: str | None) -> list[tuple]:
    """``(embedding, lm_head)`` pairs to try for the options as given (``auto`` or a fixed precision)."""
    fixed_e = None if embedding in (None, AUTO) else embedding
    fixed_h = None if lm_head in (None, AUTO) else lm_head
    if not kind_has_head:  # a fixed head precision is passed on, for the exporter to refuse
        return [(fixed_e or target.embedding, fixed_h)]
    pairs = [(e, h) for e, h in target.auto_precisions
             if (fixed_e is None or e == fixed_e) and (fixed_h is None or h == fixed_h)]
    return pairs or [(fixed_e or target.embedding, fixed_h or target.lm_head)]


def verify_engine(target) -> str:
    """onnxruntime when this host has the target's first provider, else the NumPy runtime (same weights)."""
    import onnxruntime as ort

    return "ort" if target.providers[0] in ort.get_available_providers() else "numpy"


def choose(ckpt: dict, target, pairs: list[tuple], export_folder) -> tuple:
    """Try ``pairs`` in order; returns ``(embedding, lm_head, record)``.

    ``export_folder(out_dir, embedding, lm_head)`` writes one candidate export (the exporter's own path).
    A candidate passes when its engine matches the reference carrying its head/embedding (the target's
    logit tolerance, greedy agreement) and that quantisation costs at most ``DEFAULT_MAX_KLD`` mean KL
    divergence against the float head/embedding (``verify.py``).
    """
    import json

    from ternarylm.export.verify import (DEFAULT_MAX_KLD, DEFAULT_NEW_TOKENS, DEFAULT_PROMPTS,
                                         LanguageModelReference, compare_language_model, precision_result,
                                         stored_quantization)

    if len(pairs) == 1:
        return (*pairs[0], None)
    engine = verify_engine(target)
    reference, tried = None, []
    with tempfile.TemporaryDirectory(prefix="ternarylm-auto-") as tmp:
        for i, (embedding, lm_head) in enumerate(pairs):
            folder = export_folder(Path(tmp) / f"candidate-{i}", embedding, lm_head)
            config = json.loads((folder / "config.json").read_text())
            if reference is None:  # the precision plan is the candidates' common one
                export = config["export"]
                reference = LanguageModelReference(ckpt, export.get("keep_precision"), DEFAULT_PROMPTS,
                                                   DEFAULT_NEW_TOKENS, override=export.get("keep_precision_override"))
            runs, cost = reference.for_export(stored_quantization(config))
            result = compare_language_model(folder, runs, [engine], target.relative_tolerance, 0.9)[engine]
            quality = precision_result(cost, DEFAULT_MAX_KLD)
            passed = result["passed"] and (quality or {}).get("passed", True)
            tried.append({"embedding": embedding, "lm_head": lm_head, "engine": engine,
                          "max_logit_diff": result["max_logit_diff"], "greedy_agreement": result["greedy_agreement"],
                          "kl_divergence_mean": quality and quality["kl_divergence_mean"],
                          "top1_agreement": quality and quality["top1_agreement"], "passed": passed})
            if passed:
                break
    chosen = next((t for t in tried if t["passed"]), tried[-1])
    record = {"embedding": chosen["embedding"], "lm_head": chosen["lm_head"], "passed": chosen["passed"],
              "relative_tolerance": target.relative_tolerance, "min_agreement": 0.9, "max_kld": DEFAULT_MAX_KLD,
              "prompts": list(DEFAULT_PROMPTS), "max_new_tokens": DEFAULT_NEW_TOKENS,
              "tried": tried}
    return chosen["embedding"], chosen["lm_head"], record
