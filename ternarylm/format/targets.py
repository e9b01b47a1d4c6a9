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
    # ``ternary-export verify``'s bound on max|logit - PyTorch| / max|PyTorch logit| (see verify.py)
    relative_tolerance: float = 0.15
    # ``--embedding/--lm-head auto``: (embedding, lm_head) pairs, smallest first; the exporter keeps the
    # first whose export passes verify on the checkpoint (empty: auto means the defaults above)
    auto_precisions: tuple = ()

    @property
    def bits(self) -> int | None:
        """MatMulNBits bits of the ternary linears (None: TernaryMatMul or dense)."""
        return self.ternary["bits"] if self.ternary else None


TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("portable", "TernaryMatMul custom op + function bodies, standard ops only (onnx.reference, any runtime)",
           attention="standard", relative_tolerance=1e-2),
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
           dense=True),
    Target("fp16", "dense fp16 twin of the same checkpoint", attention="fused", activation_dtype="float16", dense=True,
           kinds=(CAUSAL_LM,)),
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
