"""From (device profile, host, optional plan, user overrides) to the session a model runs with.

``ternary-profile`` and ``ternary-run`` both go through :func:`runtime_settings`, so a model is
profiled with exactly the providers, threads, session config and model file it is deployed with::

    from ternarylm.devices import runtime_settings
    rs = runtime_settings("export-dir", device="auto")      # or "rpi", "jetson-orin-nano", ...
    session = rs.session.create_session()                   # onnxruntime.InferenceSession
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ternarylm.devices.detect import HostInfo, Resolution, detect_host, resolve_device
from ternarylm.devices.plan import Plan, load_plan, plan_model_path, plan_path
from ternarylm.devices.profile import GPU_PROVIDERS, PROVIDER_ALIASES, DeviceProfile
from ternarylm.onnxrt.session import SessionSettings

from ternarylm.format.folder import ModelFolder


class ProviderError(ValueError):
    """Execution providers the profile or user asks for that this onnxruntime lacks."""


def ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def resolve_providers(profile: DeviceProfile, override: list[str] | None, available: list[str]) -> list[str]:
    """Provider names to use (``--providers`` short names allowed); refuse those not installed."""
    names = [PROVIDER_ALIASES.get(p.strip().lower(), p.strip()) for p in override] if override \
        else list(profile.providers)
    source = "--providers" if override else f"the {profile.name} profile"
    missing = [p for p in names if p not in available]
    gpu = [p for p in missing if p in GPU_PROVIDERS]
    have = ", ".join(available) or "none"
    if gpu:
        raise ProviderError(
            f"{source} needs {gpu[0]}, which this onnxruntime lacks (it has: {have}); install onnxruntime-gpu "
            "in place of onnxruntime (on a Jetson: NVIDIA's JetPack build of onnxruntime-gpu), "
            "or pass --providers cpu")
    if missing:
        raise ProviderError(f"{source} needs {missing[0]}, which this onnxruntime lacks (it has: {have})")
    return names


def lowering_note(folder: ModelFolder, profile: DeviceProfile, host: HostInfo) -> str | None:
    """A hint when the export's target is not the one the profile recommends for this host."""
    want = profile.lowering_for(host.dotprod, host.arch)
    if folder.target in (want.target, "unknown", "fp32", "fp16"):
        return None
    return (f"this export is target {folder.target}; the {profile.name} profile recommends {want.label()} "
            f"(ternary-export onnx --target {want.target}, or ternary-profile --tune)")


def settings_for(folder: ModelFolder, profile: DeviceProfile, host: HostInfo, *, providers: list[str],
                 threads: int | None = None, plan: Plan | None = None, plan_file: Path | None = None
                 ) -> SessionSettings:
    """Session settings for one model: the plan's choice when there is one, else the profile's."""
    session_config: dict[str, str] = {}
    model = folder.model_path
    if plan is not None:
        model = plan_model_path(plan, plan_file) or folder.model_path
        session_config = dict(plan.lowering.session_config)
        n_threads = threads or plan.threads
    else:
        lowering = profile.lowering_for(host.dotprod, host.arch)
        if lowering.target == folder.target:
            session_config = dict(lowering.session_config)
        n_threads = threads if threads is not None else profile.threads
    return SessionSettings(model=str(model), providers=list(providers),
                           provider_options={p: dict(profile.provider_options.get(p, {})) for p in providers},
                           intra_op_threads=n_threads or 0, session_config=session_config)


@dataclass
class RuntimeSettings:
    session: SessionSettings
    resolution: Resolution
    folder: ModelFolder
    plan: Plan | None
    plan_file: Path | None
    note: str | None


def runtime_settings(model_dir: str | os.PathLike, device: str = "auto", *, root: str = "/",
                     emulate: bool = False, use_plan: bool = True, plan_file: str | os.PathLike | None = None,
                     providers: list[str] | None = None, threads: int | None = None,
                     verify: bool = True) -> RuntimeSettings:
    """Resolve the device, verify the folder, load a fresh plan if there is one, build the session settings.

    Raises ``DeviceError``, ``ProfileError``, ``FolderError``, ``StalePlanError`` / ``PlanError`` or
    ``ProviderError``, each with a one-line message meant for the user.
    """
    resolution = resolve_device(device, detect_host(root), emulate=emulate)
    folder = ModelFolder.open(model_dir, verify=verify)
    return deploy_settings(folder, resolution, use_plan=use_plan, plan_file=plan_file, providers=providers,
                           threads=threads)


def deploy_settings(folder: ModelFolder, resolution: Resolution, *, use_plan: bool = True,
                    plan_file: str | os.PathLike | None = None, providers: list[str] | None = None,
                    threads: int | None = None) -> RuntimeSettings:
    """``runtime_settings`` for an opened folder on a resolved device (``ternary-profile`` calls this)."""
    host, profile = resolution.host, resolution.profile
    chosen = resolve_providers(profile, providers, host.providers)
    plan = None
    pfile = Path(plan_file) if plan_file else plan_path(folder.path, profile.name)
    if use_plan and (plan_file or pfile.is_file()):
        plan = load_plan(pfile, ort_version=ort_version(), manifest_sha256=folder.manifest_sha256,
                         model_dir=folder.path)
        if not providers:
            chosen = resolve_providers(profile, plan.providers, host.providers)
    session = settings_for(folder, profile, host, providers=chosen, threads=threads, plan=plan, plan_file=pfile)
    note = None if plan else lowering_note(folder, profile, host)
    return RuntimeSettings(session, resolution, folder, plan, pfile if plan else None, note)
