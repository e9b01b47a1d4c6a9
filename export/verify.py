"""``verify``: run PyTorch, onnxruntime and the NumPy runtime on the same prompts and compare.

Two measures per engine: the max |logit difference| to PyTorch on the same token sequence
(teacher-forced, so one flipped token cannot cascade), relative to the largest PyTorch logit; and
greedy-token agreement of the engine's own KV-cached generation with PyTorch's.

Tolerances: the ``portable`` target computes what training computes (per-token int8 activations,
exact ternary weights), so it matches up to float rounding — and the occasional activation that float rounding moves across
an int8 rounding boundary, which shifts logits by about 1e-3 of their range (hence 1e-2). MatMulNBits quantises activations per
block of the K axis instead of per token, a quantised head/embedding adds its own error, and the
dense twins drop activation quantisation: those targets get a looser logit tolerance and are held
to greedy agreement. Mixed-precision exports are compared against the PyTorch model with the
export's per-layer plan (``config.json`` ``export.keep_precision``), export-time overrides included.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DEFAULT_PROMPTS = ("Once upon a time", "The little dog ran to the", "\"Can we play?\" asked")
RELATIVE_TOLERANCE = {"portable": 1e-2}
DEFAULT_RELATIVE_TOLERANCE = 0.15


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


def load_engine(name: str, export_dir: Path):
    from ternarylm.runtime_py import load_engine as load

    if name not in ("ort", "numpy"):
        raise ValueError(f"unknown engine {name!r}; use ort or numpy")
    return load(export_dir, engine=name)


def verify_export(export_dir, checkpoint, prompts=None, max_new_tokens: int = 16, engines=("ort", "numpy"),
                  logit_tol: float | None = None, min_agreement: float = 0.9) -> dict:
    from tokenizers import Tokenizer

    from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint

    export_dir = Path(export_dir)
    config = json.loads((export_dir / "config.json").read_text())
    target = config["export"]["target"]
    ckpt = load_checkpoint(checkpoint)
    model = apply_precision_plan(model_from_checkpoint(ckpt), config["export"].get("keep_precision"))
    tokenizer = Tokenizer.from_str(ckpt["tokenizer_json"])
    tol = logit_tol if logit_tol is not None else RELATIVE_TOLERANCE.get(target, DEFAULT_RELATIVE_TOLERANCE)
    prompts = prompts or list(DEFAULT_PROMPTS)
    references = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt).ids
        if not ids:
            raise ValueError(f"prompt {prompt!r} is empty after tokenization")
        full, logits = _torch_reference(model, ids, max_new_tokens)
        references.append((ids, full, logits))
    report = {"export_dir": str(export_dir), "target": target, "checkpoint": str(checkpoint), "prompts": prompts,
              "relative_tolerance": tol, "min_agreement": min_agreement, "engines": {}}
    for name in engines:
        engine = load_engine(name, export_dir)
        diffs, agree, total = [], 0, 0
        for ids, full, ref in references:
            got = _engine_logits(engine, full)
            diffs.append(float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-6)))
            gen = _engine_greedy(engine, ids, max_new_tokens)
            agree += sum(a == b for a, b in zip(gen[len(ids):], full[len(ids):]))
            total += len(full) - len(ids)
        max_diff = max(diffs)
        agreement = agree / max(total, 1)
        report["engines"][name] = {"max_logit_diff": max_diff, "tolerance": tol, "greedy_agreement": agreement,
                                   "passed": bool(max_diff <= tol and agreement >= min_agreement)}
    report["passed"] = all(r["passed"] for r in report["engines"].values())
    return report
