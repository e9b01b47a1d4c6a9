"""The starting point of a fine-tuning run: a causal-LM ``ckpt.pt`` (checked before the model code and
transformers are imported, so a wrong file fails fast) and an output folder that holds no other run."""

from __future__ import annotations

from pathlib import Path

from ternarylm.finetune import FinetuneError
from ternarylm.format.entries import CAUSAL_LM, SEQUENCE_CLASSIFICATION

OUTPUTS = ("ckpt.pt", "metrics.json", "dev_curve.png")


def load_lm_checkpoint(path) -> dict:
    """A causal-LM checkpoint (ternary, or its fp twin): the only start ``ternary-finetune`` accepts."""
    from ternarylm.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    kind = ckpt.get("kind", CAUSAL_LM)
    if kind == SEQUENCE_CLASSIFICATION:
        raise FinetuneError(f"{path} is already a fine-tuned {SEQUENCE_CLASSIFICATION} checkpoint; ternary-finetune "
                            "starts from a language-model ckpt.pt written by ternary-train")
    if kind != CAUSAL_LM:
        raise FinetuneError(f"{path} is a {kind!r} checkpoint; ternary-finetune needs a causal-lm ckpt.pt from "
                            "ternary-train")
    if not any(k.startswith("model.layers.") for k in ckpt["model"]):
        raise FinetuneError(f"{path} holds no decoder weights (model.layers.*); pass a ckpt.pt from ternary-train")
    return ckpt


def check_out_dir(out_dir: Path, overwrite: bool):
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FinetuneError(f"--out {out_dir} is a file; choose a folder")
    held = [n for n in OUTPUTS if (out_dir / n).exists()]
    if held and not overwrite:
        raise FinetuneError(f"{out_dir} already holds a fine-tuning run ({', '.join(held)}); pass --overwrite to "
                            "replace it or choose another --out")
