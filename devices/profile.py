"""Device profiles: one TOML file per target in ``devices/profiles/``, read into dataclasses.

A profile is data, not a code path: execution providers and their options, thread counts, the
lowering of the ternary matmuls the device should run (export target, MatMulNBits block size,
accuracy level, ORT session config such as ``mlas.use_lut_gemm``), the candidates ``--tune`` tries,
a memory budget, a recommended context length and notes. Adding a device is adding a file.

A lowering names an export target of ``ternarylm.format.targets.TARGETS`` (the names
``ternary-export onnx --target`` accepts); its bits and activation dtype are read from there, never
restated here.

Stdlib and ``ternarylm.format`` only (``tomllib``; ``tomli`` on Python 3.10): a device imports this
without torch, transformers or onnxruntime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ternarylm.format.targets import TARGETS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6's Ubuntu 22.04): the same parser, as a package
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

PROFILE_VERSION = 1
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

# Block sizes on ORT's fast MatMulNBits kernels (16 and 256 fall to a path slower than fp32).
FAST_BLOCK_SIZES = (32, 64, 128)
# Short provider names accepted on the command line.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
TUNE_OBJECTIVES = ("decode", "prefill")


class ProfileError(ValueError):
    """A profile that does not exist or does not validate (message names the file and the field)."""


@dataclass(frozen=True)
class Lowering:
    """How the ternary matmuls run: an export target plus its options and session config.

    ``target = "as-exported"`` means the model folder's own ``model.onnx``, unchanged.
    ``lower_options()`` are the keyword options the ``lower`` rewrite (``ternarylm.format.relower.lower``) receives.
    """

    target: str
    block_size: int | None = None
    accuracy_level: int | None = None
    session_config: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.target != "as-exported" and self.target not in TARGETS:
            raise ProfileError(f"unknown export target {self.target!r}; use one of "
                               f"{', '.join(TARGETS)} or as-exported")
        if self.bits is not None:
            if self.block_size not in FAST_BLOCK_SIZES:
                raise ProfileError(f"target {self.target}: block_size must be one of {FAST_BLOCK_SIZES}, "
                                   f"got {self.block_size!r}")
            if self.accuracy_level not in (0, 1, 2, 3, 4):
                raise ProfileError(f"target {self.target}: accuracy_level must be 0-4, "
                                   f"got {self.accuracy_level!r}")
        object.__setattr__(self, "session_config", {str(k): str(v) for k, v in self.session_config.items()})

    def __hash__(self) -> int:
        return hash((self.target, self.block_size, self.accuracy_level, tuple(sorted(self.session_config.items()))))

    @property
    def bits(self) -> int | None:
        target = TARGETS.get(self.target)
        return target.bits if target else None

    @property
    def activation_dtype(self) -> str | None:
        target = TARGETS.get(self.target)
        return target.activation_dtype if target else None

    def lower_options(self) -> dict:
        opts = {"block_size": self.block_size, "accuracy_level": self.accuracy_level}
        return {k: v for k, v in opts.items() if v is not None}

    def label(self) -> str:
        """Short human name, e.g. ``ort-cpu 2b bs64 acc4 +lut``."""
        if self.target == "as-exported":
            parts = ["as-exported"]
        else:
            parts = [self.target]
            if self.bits:
                parts += [f"{self.bits}b", f"bs{self.block_size}", f"acc{self.accuracy_level}"]
        parts += [f"+{k.split('.')[-1].replace('use_', '').replace('_gemm', '')}" if v == "1" else f"{k}={v}"
                  for k, v in sorted(self.session_config.items())]
        return " ".join(parts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bits"] = self.bits
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Lowering:
        d = {k: v for k, v in d.items() if k != "bits"}
        unknown = set(d) - {"target", "block_size", "accuracy_level", "session_config"}
        if unknown:
            raise ProfileError(f"unknown lowering field(s): {', '.join(sorted(unknown))}")
        if "target" not in d:
            raise ProfileError("a lowering needs a target")
        return cls(**d)


AS_EXPORTED = Lowering("as-exported")


@dataclass(frozen=True)
class DetectRules:
    """What identifies the device from the host's files (paths relative to the filesystem root).

    A profile matches when every ``requires`` file exists and a ``device_tree_model`` substring is in
    ``/proc/device-tree/model`` or a ``tegra_compatible`` substring is in ``/proc/device-tree/compatible``.
    """

    requires: tuple[str, ...] = ()
    device_tree_model: tuple[str, ...] = ()
    tegra_compatible: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.requires or self.device_tree_model or self.tegra_compatible)


@dataclass(frozen=True)
class TuneSpec:
    objective: str = "decode"
    max_rel_diff: float = 0.05
    min_argmax_agreement: float = 0.9
    lowerings: tuple[Lowering, ...] = ()

    def __post_init__(self):
        if self.objective not in TUNE_OBJECTIVES:
            raise ProfileError(f"tune.objective must be one of {TUNE_OBJECTIVES}, got {self.objective!r}")
        if not 0 < self.max_rel_diff < 1 or not 0 <= self.min_argmax_agreement <= 1:
            raise ProfileError("tune.max_rel_diff must be in (0, 1) and min_argmax_agreement in [0, 1]")


@dataclass(frozen=True)
class DeviceProfile:
    """One deployment target. Every field documented in docs/DEVICES.md."""

    name: str
    description: str
    providers: tuple[str, ...]
    lowering: Lowering
    memory_budget_mb: int
    recommended_context: int
    arch: str = "any"  # "any", "x86_64" or "aarch64"
    family: str | None = None  # alias this profile answers to ("rpi", "jetson")
    family_default: bool = False  # the family member used when emulating the alias off-device
    detect: DetectRules = field(default_factory=DetectRules)
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)
    threads: int = 0  # intra-op threads; 0 = every core this process may run on
    thread_candidates: tuple[int, ...] = (1, 2, 4)
    lowering_no_dotprod: Lowering | None = None  # used on ARM64 hosts without dotprod
    tune: TuneSpec = field(default_factory=TuneSpec)
    notes: tuple[str, ...] = ()
    version: int = PROFILE_VERSION

    def __post_init__(self):
        if self.version != PROFILE_VERSION:
            raise ProfileError(f"profile {self.name}: version {self.version} is not supported "
                               f"(this ternarylm reads version {PROFILE_VERSION})")
        if self.arch not in ("any", "x86_64", "aarch64"):
            raise ProfileError(f"profile {self.name}: arch must be any, x86_64 or aarch64, got {self.arch!r}")
        if not self.providers:
            raise ProfileError(f"profile {self.name}: providers.order is empty")
        for p in self.providers:
            if not p.endswith("ExecutionProvider"):
                raise ProfileError(f"profile {self.name}: {p!r} is not an execution provider name")
        if self.threads < 0 or any(t <= 0 for t in self.thread_candidates):
            raise ProfileError(f"profile {self.name}: thread counts must be positive (0 = all cores)")
        if self.memory_budget_mb <= 0 or self.recommended_context <= 0:
            raise ProfileError(f"profile {self.name}: memory_budget_mb and recommended_context must be > 0")

    @property
    def uses_gpu(self) -> bool:
        return any(p in GPU_PROVIDERS for p in self.providers)

    @property
    def export_target(self) -> str:
        return self.lowering.target

    def lowering_for(self, dotprod: bool | None, arch: str | None) -> Lowering:
        """The lowering for a host: the no-dotprod variant on ARM64 hosts that lack dotprod."""
        if self.lowering_no_dotprod and arch == "aarch64" and dotprod is False:
            return self.lowering_no_dotprod
        return self.lowering

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lowering"] = self.lowering.to_dict()
        d["lowering_no_dotprod"] = self.lowering_no_dotprod.to_dict() if self.lowering_no_dotprod else None
        d["tune"]["lowerings"] = [lw.to_dict() for lw in self.tune.lowerings]
        d["export_target"] = self.export_target
        return d

    @classmethod
    def from_toml(cls, data: dict, source: str = "<profile>") -> DeviceProfile:
        """Build from the TOML layout of ``devices/profiles/*.toml``."""
        try:
            d = dict(data)
            providers = d.pop("providers", {})
            threads = d.pop("threads", {})
            detect = d.pop("detect", {})
            tune = dict(d.pop("tune", {}))
            lowering = Lowering.from_dict(d.pop("lowering"))
            nodot = d.pop("lowering_no_dotprod", None)
            tune_lowerings = tuple(Lowering.from_dict(x) for x in tune.pop("lowerings", []))
            return cls(
                providers=tuple(providers["order"]),
                provider_options={k: {kk: str(vv) for kk, vv in v.items()}
                                  for k, v in providers.get("options", {}).items()},
                threads=int(threads.get("intra_op", 0)),
                thread_candidates=tuple(int(t) for t in threads.get("candidates", (1, 2, 4))),
                detect=DetectRules(**{k: tuple(v) for k, v in detect.items()}),
                lowering=lowering,
                lowering_no_dotprod=Lowering.from_dict(nodot) if nodot else None,
                tune=TuneSpec(lowerings=tune_lowerings, **tune),
                notes=tuple(d.pop("notes", ())),
                **d,
            )
        except ProfileError as e:
            raise ProfileError(f"{source}: {e}") from None
        except (KeyError, TypeError) as e:
            raise ProfileError(f"{source}: missing or unexpected field ({e})") from None


def _load_file(path: Path) -> DeviceProfile:
    if tomllib is None:
        raise ProfileError("reading device profiles on Python 3.10 needs tomli: pip install tomli")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: not valid TOML ({e})") from None
    profile = DeviceProfile.from_toml(data, source=str(path))
    if profile.name != path.stem:
        raise ProfileError(f"{path}: name {profile.name!r} does not match the file name")
    return profile


def load_profiles(directory: Path | str = PROFILE_DIR) -> dict[str, DeviceProfile]:
    """Every profile in a directory, by name (sorted)."""
    return {p.stem: _load_file(p) for p in sorted(Path(directory).glob("*.toml"))}


def families(profiles: dict[str, DeviceProfile]) -> dict[str, list[str]]:
    """Alias -> member profile names, e.g. ``{"rpi": ["rpi4", "rpi5"]}``."""
    out: dict[str, list[str]] = {}
    for p in profiles.values():
        if p.family:
            out.setdefault(p.family, []).append(p.name)
    return out


def known_names(profiles: dict[str, DeviceProfile] | None = None) -> list[str]:
    """Names accepted by ``--device``: profiles, aliases and ``auto``."""
    profiles = profiles if profiles is not None else load_profiles()
    return ["auto", *profiles, *families(profiles)]


def load_profile(name: str, directory: Path | str = PROFILE_DIR) -> DeviceProfile:
    """A profile by exact name (aliases are resolved by :func:`ternarylm.devices.detect.resolve_device`)."""
    profiles = load_profiles(directory)
    if name not in profiles:
        raise ProfileError(f"unknown device {name!r}; known: {', '.join(known_names(profiles))}")
    return profiles[name]
