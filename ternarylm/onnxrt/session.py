"""ONNX Runtime session settings: the one place anything in the project opens an InferenceSession.

``SessionSettings`` is plain data (JSON round-trip) so the profiler can hand it to a fresh
measurement process; ``ternary-run``, ``ternary-profile`` (and ``--tune``), ``ternary-export verify``,
``load_ort``/``load_classifier`` and the benchmarks all build their sessions from it (a device profile
fills it in via :func:`ternarylm.devices.runtime_settings`). onnxruntime is imported only when a
session is built.
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
            raise ValueError(f"graph_optimization must be one of {', '.join(OPT_LEVELS)}")
        if self.intra_op_threads < 0:
            raise ValueError("intra_op_threads must be >= 0")

    @classmethod
    def from_options(cls, model, *, providers=None, provider_options=None, threads: int = 0,
                     session_config: dict | None = None, log_severity: int = 3,
                     graph_optimization: str = "all") -> SessionSettings:
        """The keyword options of ``load_ort`` / ``load_classifier`` (``log_severity`` <= 1 logs INFO)."""
        return cls(model=str(model), providers=list(providers or ["CPUExecutionProvider"]),
                   provider_options={k: dict(v) for k, v in (provider_options or {}).items()},
                   intra_op_threads=int(threads or 0), session_config=dict(session_config or {}),
                   graph_optimization=graph_optimization, log_info=int(log_severity) <= 1)

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
            so.add_session_config_entry(str(key), str(value))
        so.log_severity_level = 1 if self.log_info else 3
        return so

    def create_session(self, profile_prefix: str | None = None):
        """The session; ``profile_prefix``: turn onnxruntime's profiler on, its trace file named from it."""
        import onnxruntime as ort

        options = [dict(self.provider_options.get(p, {})) for p in self.providers]
        so = self.session_options()
        if profile_prefix:
            so.enable_profiling, so.profile_file_prefix = True, profile_prefix
        return ort.InferenceSession(self.model, sess_options=so, providers=list(self.providers),
                                    provider_options=options)
