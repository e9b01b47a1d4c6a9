"""The vocabulary of config.json (docs/FORMATS.md): the model kinds, the weight-map entry kinds and the
one rule for which entries hold trits. The exporter writes these names, the lowering passes and the
runtimes read them; one definition keeps the writer and the readers from drifting apart.

A weight-map entry names the ONNX initializers of one logical weight; its ``kind`` says how they are
stored. Example (a ternary linear after the ort-cpu lowering)::

    "model.layers.0.mlp.down_proj": {"kind": "nbits", "B": "...q2", "scales": "...", "zero_points": "...",
                                     "bits": 2, "block_size": 32, "K": 256, "N": 64, "act_bits": 8,
                                     "weight_bits": 2}
"""

from __future__ import annotations

# config.json / ckpt.pt ``kind``: what the export (or checkpoint) is.
CAUSAL_LM = "causal-lm"
SEQUENCE_CLASSIFICATION = "sequence-classification"

# ``weight_bits`` of a ternary layer (1.58 bits of information, stored in 2).
TERNARY_BITS = 2

# Weight-map entry kinds.
TERNARY = "ternary"  # TernaryMatMul: packed trits + scales
NBITS = "nbits"  # MatMulNBits: codes + scales (+ zero points)
INT = "int"  # a layer kept at 4/8 bits: signed codes + block scales
DENSE = "dense"  # a float weight
CONCAT = "concat"  # a fused linear whose parts differ in precision
EMBEDDING = "embedding"  # the token table, float or block-quantised
NORM = "norm"  # an RMSNorm gain


def is_ternary_entry(name: str, entry: dict) -> bool:
    """A ternary decoder linear (canonical ``ternary`` or lowered ``nbits``). Exports written before
    mixed precision have no ``weight_bits``: there every ``nbits`` entry but the LM head's is ternary."""
    if entry.get("kind") == TERNARY:
        return True
    return (entry.get("kind") == NBITS and name != "lm_head"
            and int(entry.get("weight_bits") or TERNARY_BITS) == TERNARY_BITS)
