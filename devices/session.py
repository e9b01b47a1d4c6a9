"""ONNX Runtime session settings: the one place a profile / plan turns into SessionOptions.

``SessionSettings`` is plain data (JSON round-trip) so the profiler can hand it to a fresh
measurement process, and ``ternary-run`` builds its session from the same object
(see :func:`ternarylm.devices.runtime_settings`). onnxruntime is imported only when a session is built.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

# Log line ORT prints (INFO) when MatMulNBits takes its dequantize + fp32 path.
SLOW_FALLBACK_MARKER = "Falling back to using unpacked compute mode"
OPT_LEVELS = ("disable", "basic", "extended", "all")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class SessionSettings:
    """Everything needed to open an InferenceSession the way a profile or plan says."""

    model: str
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)
    intra_op_threads: int = 0  # 0 = every available core
    inter_op_threads: int = 1
    session_config: dict[str, str] = field(default_factory=dict)
    graph_optimization: str = "all"
    log_info: bool = False  # INFO logging, so that slow-path fallbacks show in stderr

    def __post_init__(self):
        if self.graph_optimization not in OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {OPT_LEVELS}")
        if self.intra_op_threads < 0:
            raise ValueError("intra_op_threads must be >= 0")

    @property
    def threads(self) -> int:
        return self.intra_op_threads or available_cores()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SessionSettings:
        return cls(**d)

    def session_options(self):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = self.inter_op_threads
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.graph_optimization]
        for key, value in self.session_config.items():
            so.add_session_config_entry(key, str(value))
        so.log_severity_level = 1 if self.log_info else 3
        return so

    def create_session(self):
        import onnxruntime as ort

        options = [dict(self.provider_options.get(p, {})) for p in self.providers]
        return ort.InferenceSession(self.model, sess_options=self.session_options(),
                                    providers=list(self.providers), provider_options=options)
