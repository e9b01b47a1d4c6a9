"""Per-layer analysis of a ternary checkpoint and mixed-precision plans (``ternary-analyze``).

``analyze_checkpoint(path, ...)`` returns the ``analysis.json`` document (see docs/ANALYSIS.md and
docs/FORMATS.md); ``write_report(doc, out_dir)`` writes it with its PNG. The pieces:
``stats`` (weight statistics), ``sensitivity`` (loss change per layer), ``plan`` (which layers to
keep at higher precision) and ``report`` (table, JSON, PNG).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

from ternarylm.analysis.plan import make_plan, rank_layers
from ternarylm.analysis.report import table_rows, write_report
from ternarylm.format.entries import CAUSAL_LM

FORMAT = "ternarylm-analysis"
FORMAT_VERSION = 1


class AnalysisError(ValueError):
    """A checkpoint or option that cannot be analysed (one line: what is wrong and what to do)."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_for_analysis(path: str | Path):
    """``(ckpt dict, model)`` of a causal-LM checkpoint with quantised linears, or AnalysisError."""
    from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint
    from ternarylm.quantization import ternary_linears

    ckpt = load_checkpoint(path)
    kind = ckpt.get("kind", CAUSAL_LM)
    if kind != CAUSAL_LM:
        raise AnalysisError(f"{path} is a {kind} checkpoint; ternary-analyze needs a causal-LM checkpoint "
                            "(a ckpt.pt from ternary-train)")
    precision = (ckpt.get("config") or {}).get("precision")
    if precision == "fp":
        raise AnalysisError(f"{path} has no ternary layers (it is a full-precision twin, trained with "
                            "--precision fp); analyse a ternary checkpoint (ternary-train --precision ternary)")
    model = model_from_checkpoint(ckpt)
    if not any(True for _ in ternary_linears(model)):
        raise AnalysisError(f"{path} has no ternary layers to analyse; train with --precision ternary")
    return ckpt, model


def analyze_checkpoint(path: str | Path, *, data=(), dataset: str | None = None,
                       dataset_config: str | None = None, split: str = "val", seq_len: int | None = None,
                       batch_size: int = 8, eval_tokens: int | None = 4096, eval_batches: int | None = None,
                       sensitivity: bool = True, keep: int = 4, bits: int = 8, rank_by: str = "fp",
                       device: str = "cpu", progress: bool = True, loaded=None) -> dict:
    """Analyse the checkpoint at ``path``; returns the analysis.json document.

    ``loaded`` may pass ``load_for_analysis(path)``'s result to skip loading twice.
    """
    import ternarylm
    from ternarylm.analysis.data import validation_windows
    from ternarylm.analysis.sensitivity import layer_sensitivity
    from ternarylm.analysis.stats import layer_stats
    from ternarylm.evaluation import perplexity

    if keep < 0:
        raise AnalysisError(f"--keep must be >= 0, got {keep}")
    ckpt, model = loaded or load_for_analysis(path)
    quant = model.config.ternary_config()
    rows = layer_stats(model)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "package_version": ternarylm.__version__,
        "checkpoint": {
            "path": str(path), "sha256": file_sha256(path), "step": ckpt.get("step"),
            "preset": ((ckpt.get("meta") or {}).get("train_args") or {}).get("preset"),
            "granularity": quant.granularity, "group_size": quant.group_size,
            "activation_bits": quant.activation_bits, "keep_precision": dict(quant.keep_precision),
            "layers": len(rows),
        },
        "evaluation": None,
        "baselines": None,
        "layers": rows,
        "plan": None,
    }
    if sensitivity:
        from ternarylm.training.trainer import resolve_device

        dev = resolve_device(device)
        evaluation = validation_windows(ckpt, data=data, dataset=dataset, dataset_config=dataset_config,
                                        split=split, seq_len=seq_len, batch_size=batch_size,
                                        eval_tokens=eval_tokens, eval_batches=eval_batches)
        result = layer_sensitivity(model.to(dev), evaluation.windows, device=dev, progress=progress)
        doc["evaluation"] = {
            "data": evaluation.source, "split": evaluation.split, "token_range": list(evaluation.token_range),
            "seq_len": evaluation.seq_len, "batch_size": evaluation.batch_size,
            "batches": len(evaluation.windows), "windows": result.windows, "tokens": result.tokens,
            "device": str(dev), "seconds": round(result.seconds, 3), "fast_path": result.fast_path,
        }
        doc["baselines"] = {
            "as_trained": {"loss": result.baseline_loss, "perplexity": perplexity(result.baseline_loss)},
            "all_fp": {"loss": result.all_fp_loss, "perplexity": perplexity(result.all_fp_loss)},
        }
        for row in rows:
            row["sensitivity"] = {"fp_alone_delta": result.fp_alone[row["name"]],
                                  "ternary_alone_delta": result.ternary_alone[row["name"]]}
        doc["plan"] = make_plan(rows, keep, bits, rank_by, existing=dict(quant.keep_precision))
    else:
        for row in rows:
            row["sensitivity"] = None
    return doc


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "AnalysisError",
    "analyze_checkpoint",
    "load_for_analysis",
    "make_plan",
    "rank_layers",
    "table_rows",
    "write_report",
]
