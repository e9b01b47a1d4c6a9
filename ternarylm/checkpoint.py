"""``ckpt.pt``: save atomically, load safely (``weights_only=True``), rebuild the model. See docs/FORMATS.md."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from ternarylm.data.errors import first_line
from ternarylm.format.entries import CAUSAL_LM

FORMAT = "ternarylm-ckpt"
FORMAT_VERSION = 2  # the newest this ternarylm reads; each file says the oldest reader that can load it
# Version 2: the config may use BitNet's architecture fields (hidden_act relu2, sub_norms, tied embeddings),
# which a version-1 reader would drop silently. A checkpoint that uses none of them is still written as 1.


def format_version_for(config: dict) -> int:
    """The oldest checkpoint format that holds ``config`` (see FORMAT_VERSION)."""
    from ternarylm.configuration import ARCHITECTURE_VARIANTS

    uses_variants = any(config.get(k, plain) != plain for k, plain in ARCHITECTURE_VARIANTS.items())
    return 2 if uses_variants else 1


class CheckpointError(ValueError):
    """A file that is not a usable TernaryLM checkpoint (one line: what is wrong and what to do)."""


def latent_weights(ckpt: dict) -> dict:
    """The model state dict with latent float weights everywhere. A checkpoint dict read from a ternary Hugging
    Face folder holds its stored trits as int8 tensors plus ``trit_scales`` ``{module: gamma}`` (4x less memory
    than latent float32); each becomes ``trits * gamma / p`` (``p``: the share of non-zero trits), whose absmean
    ternarisation gives back exactly those trits and gamma."""
    scales = ckpt.get("trit_scales") or {}
    if not scales:
        return ckpt["model"]
    state = dict(ckpt["model"])
    for module, gamma in scales.items():
        state[f"{module}.weight"] = latent_from_trits(state[f"{module}.weight"], gamma)
    return state


def latent_from_trits(trits: torch.Tensor, gamma: float) -> torch.Tensor:
    """int8 trits and their absmean scale -> the float32 latent weight ``trits * gamma / p`` (see above)."""
    share = trits.abs().double().mean().item()
    return trits.to(torch.float32) * float(gamma / share) if share else torch.zeros(trits.shape)


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` via a temp file + rename, so a crash never leaves half a file. In-memory
    trits (``trit_scales``, see ``latent_weights``) are written as latent weights: the file format has none."""
    if state.get("trit_scales"):
        state = {**{k: v for k, v in state.items() if k != "trit_scales"}, "model": latent_weights(state)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        version = format_version_for(state.get("config") or {})
        torch.save({"format": FORMAT, "format_version": version, **state}, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load and validate a checkpoint without executing any pickled code."""
    path = Path(path)
    check_checkpoint_file(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CheckpointError(
                f"{path} contains pickled Python objects and was refused (ternarylm checkpoints hold only "
                "tensors and plain data); re-save it with ternary-train or load it only if you trust it"
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint; it may be truncated or not a torch file") from None
    except Exception as e:  # noqa: BLE001 -- torch's safe loader fails on odd bytes with KeyError, ...
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({first_line(e, limit=200)}); "
            "it may be truncated or not a torch file"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a ternarylm checkpoint (no format={FORMAT!r})")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format_version {version}, newer than this ternarylm supports "
            f"({FORMAT_VERSION}); upgrade ternarylm"
        )
    for key in ("config", "model", "tokenizer_json"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks '{key}'; it is incomplete — use a checkpoint from ternary-train")
    return ckpt


def check_checkpoint_file(path: str | Path) -> None:
    """Refuse a missing file or one that is not a zip archive (torch.save's format) before any slow work."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the ckpt.pt written by ternary-train")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a readable checkpoint (not a zip archive); it may be truncated or not a torch file "
            "- pass the ckpt.pt written by ternary-train"
        )


def config_from_checkpoint(ckpt: dict):
    from ternarylm.configuration import TernaryLMConfig

    cfg = dict(ckpt["config"])
    for key in ("transformers_version", "architectures", "model_type"):
        cfg.pop(key, None)
    try:
        return TernaryLMConfig(**cfg)
    except (TypeError, ValueError) as e:
        why = first_line(e, with_type=False, limit=200)
        raise CheckpointError(f"checkpoint config is not a TernaryLM architecture: {why}") from None


def model_from_checkpoint(ckpt: dict, expect_kind: str = CAUSAL_LM):
    """Rebuild the model in eval mode from a loaded checkpoint dict."""
    kind = ckpt.get("kind", CAUSAL_LM)
    if kind != expect_kind:
        raise CheckpointError(
            f"this is a {kind} checkpoint but this command needs a {expect_kind} checkpoint"
        )
    config = config_from_checkpoint(ckpt)
    if kind == CAUSAL_LM:
        from ternarylm.modeling import TernaryLMForCausalLM as cls
    else:
        from ternarylm.classification import TernaryLMForSequenceClassification as cls
    model = cls(config)
    missing, unexpected = model.load_state_dict(latent_weights(ckpt), strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint weights do not match its config (missing {list(missing)[:3]}, unexpected "
            f"{list(unexpected)[:3]})"
        )
    return model.eval()


def tokenizer_from_checkpoint(ckpt: dict):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(ckpt["tokenizer_json"])
