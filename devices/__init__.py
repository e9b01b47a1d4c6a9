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

from ternarylm.devices.deploy import ProviderError, RuntimeSettings, runtime_settings
from ternarylm.devices.detect import DeviceError, HostInfo, Resolution, detect_device, detect_host, resolve_device
from ternarylm.devices.plan import Plan, PlanError, StalePlanError, load_plan
from ternarylm.devices.profile import (DeviceProfile, Lowering, ProfileError, known_names,
                                       load_profile, load_profiles)
from ternarylm.onnxrt.session import SessionSettings
from ternarylm.format.folder import FolderError, ModelFolder

__all__ = [
    "DeviceError", "DeviceProfile", "FolderError", "HostInfo", "Lowering", "ModelFolder", "Plan",
    "PlanError", "ProfileError", "ProviderError", "Resolution", "RuntimeSettings", "SessionSettings",
    "StalePlanError", "detect_device", "detect_host", "known_names", "load_plan", "load_profile", "load_profiles",
    "resolve_device", "runtime_settings",
]
