"""Device profiles, detection and the on-device profiler (``ternary-profile``).

Layout (top-down):

- ``profiles/*.toml``  one file per target: cpu, rpi4, rpi5, jetson-orin-nano, jetson-agx-orin
- ``profile.py``       ``DeviceProfile`` / ``Lowering`` dataclasses read from those files
- ``detect.py``        ``detect_host(root)`` / ``detect_device(root)`` / ``resolve_device(name, host)``
- ``deploy.py``        ``runtime_settings(model_dir, device)``: profile + plan -> session (ternary-run uses it)
- ``measure.py``       one measurement in a fresh process (numpy + onnxruntime only)
- ``runner.py``        launches it, classifies ok / oom / error / timeout
- ``tune.py``          ``--tune``: candidate lowerings x threads, logits check, plan
- ``plan.py``          the plan file, with its staleness checks
- ``report.py``        tables, report.json, PNG charts
- ``cli.py``           ``ternary-profile``

An export folder with its manifest verified is ``ternarylm.format.folder.ModelFolder`` (re-exported here).
Sessions are opened by ``ternarylm.onnxrt.SessionSettings`` (re-exported here) and stepped by its ``OrtDecoder``.
Importing this package needs neither torch nor transformers (nor onnxruntime until a session is made).
"""

from __future__ import annotations

# Names resolve on first use: ``python -m ternarylm.devices.measure`` (the measured process) then imports
# only what a measurement needs, not the profiles, detection and plan code (about 6 MB of resident memory).
_LAZY = {
    "ProviderError": "ternarylm.devices.deploy", "RuntimeSettings": "ternarylm.devices.deploy",
    "runtime_settings": "ternarylm.devices.deploy",
    "DeviceError": "ternarylm.devices.detect", "HostInfo": "ternarylm.devices.detect",
    "Resolution": "ternarylm.devices.detect", "detect_device": "ternarylm.devices.detect",
    "detect_host": "ternarylm.devices.detect", "resolve_device": "ternarylm.devices.detect",
    "Plan": "ternarylm.devices.plan", "PlanError": "ternarylm.devices.plan", "StalePlanError": "ternarylm.devices.plan",
    "load_plan": "ternarylm.devices.plan",
    "DeviceProfile": "ternarylm.devices.profile", "Lowering": "ternarylm.devices.profile",
    "ProfileError": "ternarylm.devices.profile", "known_names": "ternarylm.devices.profile",
    "load_profile": "ternarylm.devices.profile", "load_profiles": "ternarylm.devices.profile",
    "SessionSettings": "ternarylm.onnxrt.session",
    "FolderError": "ternarylm.format.folder", "ModelFolder": "ternarylm.format.folder",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ternarylm.devices' has no attribute {name!r}")


__all__ = sorted(_LAZY)
