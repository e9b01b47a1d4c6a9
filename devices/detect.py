"""Which device is this? Read from the host's own files under an injectable filesystem root.

Sources (paths relative to ``root``, so tests point ``root`` at a fixture folder)::

    proc/cpuinfo                 arch, CPU model, flags: avx2 / avx512f / avx512_vnni (x86), asimddp = dotprod (ARM)
    proc/meminfo                 MemTotal
    proc/device-tree/model       "Raspberry Pi 5 Model B Rev 1.0", "NVIDIA Jetson Orin Nano Developer Kit"
    proc/device-tree/compatible  NUL-separated, e.g. "nvidia,p3768-0000+p3767-0005\\0nvidia,p3767-0005\\0nvidia,tegra234"
    etc/nv_tegra_release         present on every Jetson: "# R36 (release), REVISION: 4.0, ..."

plus the execution providers onnxruntime offers (``onnxruntime.get_available_providers()``, injectable).
Profiles hold the matching rules (``[detect]`` in their TOML); the generic ``cpu`` profile is the fallback.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ternarylm.devices.profile import DeviceProfile, ProfileError, families, known_names, load_profiles

# ARM "CPU part" -> core name (the ones the profiles care about, and their neighbours).
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
    "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C",
}
FAMILY_NAMES = {"rpi": "Raspberry Pi", "jetson": "Jetson"}


class DeviceError(ValueError):
    """A device request this host cannot honour (one line, says what to do)."""


@dataclass
class HostInfo:
    """What the host is, as read from its files."""

    arch: str = "unknown"  # x86_64 | aarch64 | unknown
    cpu_model: str = "unknown"
    cpu_count: int = 0
    avx2: bool = False
    avx512: bool = False
    avx512_vnni: bool = False
    avx_vnni: bool = False
    neon: bool = False
    dotprod: bool = False
    i8mm: bool = False
    board_model: str | None = None
    compatible: list[str] = field(default_factory=list)
    tegra_release: str | None = None
    memory_total_mb: int | None = None
    providers: list[str] = field(default_factory=list)
    root: str = "/"

    @property
    def is_jetson(self) -> bool:
        return self.tegra_release is not None

    @property
    def is_raspberry_pi(self) -> bool:
        return bool(self.board_model and "Raspberry Pi" in self.board_model)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        isa = [n for n in ("avx2", "avx512", "avx512_vnni", "dotprod", "i8mm") if getattr(self, n)]
        what = self.board_model or self.cpu_model
        return f"{what} ({self.arch}, {self.cpu_count} cores{', ' + ' '.join(isa) if isa else ''})"


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_bytes().decode("utf-8", "replace")
    except OSError:
        return None


def _cpuinfo(text: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Per-processor blocks and the trailing global block (ARM puts Hardware/Model there)."""
    blocks, cur = [], {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        key, _, value = line.partition(":")
        cur[key.strip()] = value.strip()
    if cur:
        blocks.append(cur)
    procs = [b for b in blocks if "processor" in b]
    glob = {k: v for b in blocks if "processor" not in b for k, v in b.items()}
    return procs, glob


def available_providers() -> list[str]:
    """onnxruntime's execution providers here (empty when onnxruntime is not importable)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def detect_host(root: str | os.PathLike = "/", providers: list[str] | None = None) -> HostInfo:
    """Read the host description from the files under ``root``."""
    r = Path(root)
    host = HostInfo(root=str(root))
    procs, glob = _cpuinfo(_read(r, "proc/cpuinfo") or "")
    first = procs[0] if procs else {}
    host.cpu_count = len(procs)
    if "flags" in first:
        host.arch = "x86_64"
        flags = set(first["flags"].split())
        host.cpu_model = first.get("model name", "unknown x86-64")
        host.avx2 = "avx2" in flags
        host.avx512 = "avx512f" in flags
        host.avx512_vnni = "avx512_vnni" in flags
        host.avx_vnni = "avx_vnni" in flags
    elif "Features" in first or "CPU implementer" in first:
        host.arch = "aarch64"
        feats = set(first.get("Features", "").split())
        host.neon = "asimd" in feats
        host.dotprod = "asimddp" in feats
        host.i8mm = "i8mm" in feats
        parts = sorted({ARM_PARTS.get(p.get("CPU part", "").lower(), p.get("CPU part", "?")) for p in procs})
        named = first.get("model name", "")
        if not named or named.startswith("ARMv8"):  # most ARM kernels print no (or a generic) model name
            named = " + ".join(p for p in parts if p != "?")
        host.cpu_model = named or glob.get("Model") or "unknown ARM64"
    elif str(root) == "/":
        host.arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(platform.machine().lower(), platform.machine())
        host.cpu_count = os.cpu_count() or 0
    model = _read(r, "proc/device-tree/model")
    host.board_model = model.strip("\x00\n ") if model else None
    compat = _read(r, "proc/device-tree/compatible")
    host.compatible = [c for c in compat.split("\x00") if c.strip()] if compat else []
    tegra = _read(r, "etc/nv_tegra_release")
    if tegra:
        m = re.match(r"#?\s*R(\d+) \(release\), REVISION: ([\d.]+)", tegra)
        host.tegra_release = f"L4T R{m.group(1)}.{m.group(2)}" if m else tegra.splitlines()[0].lstrip("# ").strip()
    for line in (_read(r, "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            host.memory_total_mb = int(line.split()[1]) // 1024
    host.providers = list(providers) if providers is not None else available_providers()
    return host


def profile_matches(profile: DeviceProfile, host: HostInfo) -> bool:
    """True when the host's files satisfy the profile's ``[detect]`` rules."""
    rules = profile.detect
    if not rules:
        return False
    root = Path(host.root)
    if not all((root / req).exists() for req in rules.requires):
        return False
    model = host.board_model or ""
    if any(s in model for s in rules.device_tree_model):
        return True
    return any(s in c for s in rules.tegra_compatible for c in host.compatible)


def match_profile(host: HostInfo, profiles: dict[str, DeviceProfile] | None = None) -> str:
    """The name of the profile this host is: the first board profile that matches, else ``cpu``."""
    profiles = profiles if profiles is not None else load_profiles()
    for name, profile in profiles.items():
        if profile_matches(profile, host):
            return name
    return "cpu"


def detect_device(root: str | os.PathLike = "/", providers: list[str] | None = None,
                  profiles: dict[str, DeviceProfile] | None = None) -> str:
    """Name of the profile that fits the host under ``root`` (``cpu`` when no board profile does)."""
    return match_profile(detect_host(root, providers), profiles)


@dataclass
class Resolution:
    """The outcome of ``--device NAME [--emulate]`` on a host."""

    profile: DeviceProfile
    requested: str
    detected: str
    on_device: bool
    host: HostInfo

    @property
    def emulated(self) -> bool:
        return not self.on_device

    def to_dict(self) -> dict:
        return {"profile": self.profile.name, "requested": self.requested, "detected": self.detected,
                "on_device": self.on_device, "emulated": self.emulated, "host": self.host.to_dict()}


def resolve_device(requested: str, host: HostInfo, emulate: bool = False,
                   profiles: dict[str, DeviceProfile] | None = None) -> Resolution:
    """Turn ``auto`` / an alias / a profile name into a profile, refusing a device the host is not.

    Off-device requests raise :class:`DeviceError` unless ``emulate``; then the profile applies on
    this host and the resolution is marked ``on_device = False``.
    """
    profiles = profiles if profiles is not None else load_profiles()
    detected = match_profile(host, profiles)
    fams = families(profiles)
    if requested == "auto":
        return Resolution(profiles[detected], requested, detected, True, host)
    if requested in fams:
        members = fams[requested]
        if detected in members:
            return Resolution(profiles[detected], requested, detected, True, host)
        what = FAMILY_NAMES.get(requested, requested)
        if requested == "jetson" and host.is_jetson:
            raise DeviceError(f"this host is a Jetson ({host.board_model or host.tegra_release}) but no profile "
                              f"matches it; pick one of {', '.join(members)} with --device or add a profile")
        if not emulate:
            raise DeviceError(f"this host is not a {what} (detected: {detected}, {host.summary()}); "
                              f"pass --emulate to apply the {requested} settings here anyway")
        default = next((m for m in members if profiles[m].family_default), members[0])
        return Resolution(profiles[default], requested, detected, False, host)
    if requested not in profiles:
        raise ProfileError(f"unknown device {requested!r}; known: {', '.join(known_names(profiles))}")
    profile = profiles[requested]
    on_device = requested == detected or (
        not profile.detect and profile.arch in ("any", host.arch))
    if not on_device and not emulate:
        raise DeviceError(f"this host is not a {requested} (detected: {detected}, {host.summary()}); "
                          f"pass --emulate to apply the {requested} profile here anyway")
    return Resolution(profile, requested, detected, on_device, host)
