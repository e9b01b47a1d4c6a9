"""onnxruntime, driven one way everywhere: ``SessionSettings`` opens a session, ``OrtDecoder`` steps an
exported decoder with its KV cache. ``ternary-run``, ``ternary-profile`` (measurement and ``--tune``),
``ternary-export verify``, ``load_ort``/``load_classifier`` and ``benchmarks/`` all use these two.

- ``session.py``  ``SessionSettings`` (plain data, JSON round-trip) -> ``onnxruntime.InferenceSession``
- ``decoder.py``  ``DecoderIO`` (the graph's IO) and ``OrtDecoder`` (the decode loop), ``replay`` (a timed
                  prefill + decode over given tokens: the profiler's and benchmarks' workload)
- ``profile.py``  ``decode_op_profile``: onnxruntime's profiler over that workload, ms per decoded token per operator

Needs numpy and onnxruntime only (onnxruntime is imported when a session or buffer is made).
"""

from __future__ import annotations

from ternarylm.onnxrt.decoder import DecoderIO, OrtDecoder, replay
from ternarylm.onnxrt.profile import decode_op_profile
from ternarylm.onnxrt.session import OPT_LEVELS, SLOW_FALLBACK_MARKER, SessionSettings, available_cores

__all__ = ["OPT_LEVELS", "SLOW_FALLBACK_MARKER", "DecoderIO", "OrtDecoder", "SessionSettings", "available_cores",
           "decode_op_profile", "replay"]
