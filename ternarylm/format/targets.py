"""Export targets: a registry of what each runtime gets. Adding a target is adding one entry.

The exporter reads it to lower a graph, ``ternary-export verify`` for its tolerance, device profiles
and ``--tune`` name targets from it (they never restate a target's bits or dtype), and config.json's
``export.target`` holds one of these names. Plain data: no onnx, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ternarylm.format.entries import CAUSAL_LM, SEQUENCE_CLASSIFICATION

BOTH_KINDS = (CAUSAL_LM, SEQUENCE_CLASSIFICATION)


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    attention: str  # "standard" (any ONNX runtime) or "fused" (onnxruntime contrib ops)
    activation_dtype: str = "float32"  # the graph's float dtype: float32 | float16
    ternary: dict | None = None  # MatMulNBits lowering {"bits", "block_size", "accuracy_level"}; None keeps TernaryMatMul
    dense: bool = False  # dequantise ternary weights into float MatMuls (the full-precision twin)
    embedding: str = "float"  # default embedding precision: float (the target dtype) | int8 | int4
    lm_head: str = "float"  # default LM-head precision: float | int8 | int4
    providers: tuple = ("CPUExecutionProvider",)
    session_config: dict = field(default_factory=dict)
    kinds: tuple = BOTH_KINDS  # model kinds (config.json ``kind``) this target can hold
    # ``ternary-export verify``'s bound on max|logit - PyTorch| / max|PyTorch logit|, derived from what
    # the target changes (TOLERANCES below); the default is the loosest of them
    relative_tolerance: float = 0.05  # TOLERANCES['matmul_nbits']
    # ``--embedding/--lm-head auto``: (embedding, lm_head) pairs, smallest first; the exporter keeps the
    # first whose export passes verify on the checkpoint (empty: auto means the defaults above)
    auto_precisions: tuple = ()

    @property
    def bits(self) -> int | None:
        """MatMulNBits bits of the ternary linears (None: TernaryMatMul or dense)."""
        return self.ternary["bits"] if self.ternary else None


# What each target changes against training's forward, and the bound it earns. Measured (verify's metric,
# 5 prompts x 24 greedy tokens, ONNX Runtime 1.32, NumPy runtime) on three tiny checkpoints (trained 40 and
# 300 steps, and a GQA group-32 one): the largest relative difference per target is quoted; each bound
# is 2.5-3x that, so a layout or scale bug (which moves logits by 0.1-1, see tests/test_matmul_nbits_ort.py)
# cannot pass while float and rounding noise always does.
TOLERANCES = {
    # the same computation as training (exact trits, per-token int8 activations); an activation that
    # float summation order moves across an int8 rounding boundary shifts logits ~1e-3 (seen: 0.008)
    "portable": 1e-2,
    # activations quantised per block of K inside MatMulNBits (accuracy_level 4) instead of per token, also in
    # an int8/int4 head (seen: 0.019 against a float-head reference; verify now holds engines to a reference
    # carrying the export's own head/embedding codes, measured 0.007 on the quickstart model's int4/int4)
    "matmul_nbits": 0.05,
    # activation quantisation dropped, dense weights (fp16: plus half-precision rounding) (seen: 0.016)
    "dense": 0.04,
}

TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("portable", "TernaryMatMul custom op + function bodies, standard ops only (onnx.reference, any runtime)",
           attention="standard", relative_tolerance=TOLERANCES["portable"]),
    # block_size 128 (or the largest of 64/32 that divides the model): on x86-64 with ORT 1.32 and the
    # 132m preset it prefilled 2.1x and decoded 1.3x faster than 32, and its fp32 block scales cost
    # 0.25 instead of 1 bit per weight (file 78 vs 86 MB); logits agree as well (ternary-export verify).
    Target("ort-cpu", "onnxruntime CPU, x86-64 and ARM64 with dotprod: MatMulNBits bits=2, block 128, accuracy_level=4",
           attention="fused", ternary=dict(bits=2, block_size=128, accuracy_level=4), embedding="int8",
           lm_head="int8", auto_precisions=(("int4", "int4"), ("int4", "int8"), ("int8", "int8"))),
    Target("ort-arm64-nodot", "onnxruntime on ARM64 without dotprod (Raspberry Pi 4): MatMulNBits bits=4",
           attention="fused", ternary=dict(bits=4, block_size=32, accuracy_level=4), embedding="int8",
           lm_head="int8",
           # the head has a native kernel there at 4 bits (8-bit MatMulNBits falls back to unpacked
           # fp32 compute on a Cortex-A72) or as a float MatMul
           auto_precisions=(("int4", "int4"), ("int8", "int4"), ("int4", "float"), ("int8", "float"))),
    Target("ort-cuda", "onnxruntime CUDA (Jetson, NVIDIA GPUs): MatMulNBits bits=4, fp16 activations",
           attention="fused", activation_dtype="float16", ternary=dict(bits=4, block_size=32, accuracy_level=4),
           lm_head="int8", providers=("CUDAExecutionProvider", "CPUExecutionProvider"), kinds=(CAUSAL_LM,),
           auto_precisions=(("int4", "int4"), ("int4", "int8"), ("int8", "int8"))),
    Target("fp32", "dense fp32 twin of the same checkpoint (onnxruntime fused decoder ops)", attention="fused",
           dense=True, relative_tolerance=TOLERANCES["dense"]),
    Target("fp16", "dense fp16 twin of the same checkpoint", attention="fused", activation_dtype="float16", dense=True,
           kinds=(CAUSAL_LM,), relative_tolerance=TOLERANCES["dense"]),
]}

PRECISIONS = ("float", "int8", "int4")


def get_target(name: str, kind: str | None = None, noun: str = "this kind of model") -> Target:
    """The registry entry; with ``kind``, refuse a target that cannot hold that kind of model."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
    target = TARGETS[name]
    if kind is not None and kind not in target.kinds:
        able = [t.name for t in TARGETS.values() if kind in t.kinds]
        raise ValueError(f"target {name!r} is not available for {noun}; choose one of {', '.join(able)}")
    return target


def fused_attention(config_json: dict) -> bool:
    """Whether an export's graph uses onnxruntime's fused attention (GroupQueryAttention): config.json's
    ``export.attention`` (older exports: their target's). Such a graph can update its KV cache in place
    (``ternarylm.onnxrt``)."""
    export = config_json.get("export") or {}
    if "attention" in export:
        return export["attention"] == "fused"
    target = TARGETS.get(export.get("target"))
    return bool(target and target.attention == "fused")
