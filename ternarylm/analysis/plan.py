"""Mixed-precision plans: keep the K most sensitive ternary layers at 4, 8 or 16 bits.

Ranking criterion (``rank_by``): a layer's sensitivity is how far the validation loss moves, in
either direction, when that layer alone changes precision (nats/token):

``fp``       (default) ``fp_sensitivity = |fp_alone|``: the loss change when that layer alone is
             evaluated in full precision inside the model as trained.
``ternary``  ``ternary_sensitivity = |ternary_alone|``: the loss change when that layer alone is
             ternary in an otherwise full-precision (latent-weight) model.

Higher = more sensitive = kept first. Ties are broken by the other score, then by depth and module
order. Only layers that are ternary in the checkpoint are candidates; layers the checkpoint already
keeps at higher precision stay as they are (their patterns are repeated in the flags).

Why magnitudes, not signs: in a QAT-trained model the rest of the network has adapted to each
layer's ternary outputs, so switching one layer to its latent weights usually *raises* the loss and
ternarising one layer of the all-fp latent model usually *lowers* it. The signs mostly say "this is
not the configuration the network was trained in"; the size of the change says how much that
layer's quantisation shapes the network's function. Retraining with the top layers by magnitude
kept at 8 bits beat retraining with the top layers by signed gain in every seed tried
(benchmarks/mixed_precision.py, tiny preset; see docs/ANALYSIS.md).
"""

from __future__ import annotations

import shlex

from ternarylm.analysis.stats import MODULE_TYPES
from ternarylm.quantization import KEEP_BITS, KEPT_BLOCK, TERNARY_BITS

RANK_BY = ("fp", "ternary")
SCORE_FIELD = {"fp": "fp_sensitivity", "ternary": "ternary_sensitivity"}
CRITERIA = {
    "fp": "fp_sensitivity = |loss with the layer alone in full precision - loss as trained|; "
          "higher first",
    "ternary": "ternary_sensitivity = |loss with only the layer ternary (rest full precision) - "
               "loss all full precision|; higher first",
}


def scores(row: dict) -> dict[str, float] | None:
    """``{"fp_sensitivity", "ternary_sensitivity"}`` of a layer row (None: not measured)."""
    s = row.get("sensitivity")
    if not s:
        return None
    return {"fp_sensitivity": abs(s["fp_alone_delta"]), "ternary_sensitivity": abs(s["ternary_alone_delta"])}


def rank_layers(rows: list[dict], rank_by: str = "fp") -> list[str]:
    """Names of the candidate layers (ternary, sensitivity measured), most sensitive first."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")
    first = SCORE_FIELD[rank_by]
    other = SCORE_FIELD["ternary" if rank_by == "fp" else "fp"]

    def key(row):
        s = scores(row)
        module = MODULE_TYPES.index(row["module"]) if row["module"] in MODULE_TYPES else len(MODULE_TYPES)
        return (-s[first], -s[other], row["layer"] if row["layer"] is not None else -1, module, row["name"])

    candidates = [r for r in rows if r["weight_bits"] == TERNARY_BITS and scores(r) is not None]
    return [r["name"] for r in sorted(candidates, key=key)]


def make_plan(rows: list[dict], keep: int, bits: int = 8, rank_by: str = "fp",
              existing: dict | None = None) -> dict | None:
    """The plan for the top ``keep`` layers at ``bits``; None when sensitivity was not measured.

    ``existing`` is the checkpoint's own ``keep_precision`` (patterns repeated in the flags).
    A 4/8-bit layer needs in_features divisible by 32; such a layer that is not is kept at 16.
    """
    if bits not in KEEP_BITS:
        raise ValueError(f"--bits must be one of {', '.join(map(str, KEEP_BITS))}, got {bits}")
    if keep < 0:
        raise ValueError(f"--keep must be >= 0, got {keep}")
    if not any(scores(r) is not None for r in rows):
        return None
    ranked = rank_layers(rows, rank_by)
    by_name = {r["name"]: r for r in rows}
    layers, notes = {}, []
    for name in ranked[:keep]:
        layer_bits = bits
        if bits in (4, 8) and by_name[name]["shape"][1] % KEPT_BLOCK:
            layer_bits = 16
            notes.append(f"{name}: in_features {by_name[name]['shape'][1]} is not a multiple of "
                         f"{KEPT_BLOCK}, kept at 16 instead of {bits}")
        layers[name] = layer_bits
    if keep > len(ranked):
        notes.append(f"asked to keep {keep} layers but only {len(ranked)} are ternary; keeping all of them")
    existing = dict(existing or {})
    flags = keep_precision_flags({**existing, **layers})
    kept_params = sum(by_name[n]["parameters"] for n in layers)
    total_params = sum(r["parameters"] for r in rows)
    return {
        "keep": len(layers),
        "requested_keep": keep,
        "bits": bits,
        "rank_by": rank_by,
        "criterion": CRITERIA[rank_by],
        "layers": layers,
        "existing_keep_precision": existing,
        "kept_parameter_fraction": kept_params / total_params if total_params else 0.0,
        "ranking": ranked,
        "flags": flags,
        "notes": notes,
    }


def keep_precision_flags(plan: dict[str, int]) -> str:
    """``{name: bits}`` -> ``--keep-precision name=bits ...`` ready to paste after ternary-train."""
    return " ".join(f"--keep-precision {shlex.quote(f'{name}={bits}')}" for name, bits in plan.items())
