"""A device plan: the lowering and thread count ``--tune`` measured fastest on a device.

Written as ``plan.<profile>.json`` next to the model (or where ``--plan`` says); a lowered model, when
the winner is not the folder's own ``model.onnx``, is written beside it as ``model.<profile>.onnx``.
A plan holds the onnxruntime version it was measured with and the sha256 of the model's manifest:
from another ORT version or for a re-exported model it is stale, and loading it says how to re-tune.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ternarylm.devices.profile import Lowering

from ternarylm.format.hashing import sha256_file

PLAN_FORMAT = "ternarylm-device-plan"
PLAN_VERSION = 1


class PlanError(ValueError):
    """A plan file that cannot be used (unreadable, wrong format, model file changed)."""


class StalePlanError(PlanError):
    """A plan measured under other conditions (ORT version, model): re-tune."""


@dataclass
class Plan:
    device: str
    ort_version: str
    lowering: Lowering
    threads: int
    providers: list[str]
    manifest_sha256: str
    on_device: bool
    model_file: str | None = None  # relative to the plan's folder; None = the export's own model.onnx
    model_sha256: str | None = None
    config_file: str | None = None  # the lowered model's config.json (weight map), beside model_file
    host: str = ""
    objective: str = "decode"
    created: str = ""
    result: dict = field(default_factory=dict)  # the winner's figures
    tried: list[dict] = field(default_factory=list)  # every candidate's row
    format: str = PLAN_FORMAT
    version: int = PLAN_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lowering"] = self.lowering.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        d = dict(d)
        d["lowering"] = Lowering.from_dict(d["lowering"])
        return cls(**d)


def plan_path(model_dir: str | Path, device: str) -> Path:
    return Path(model_dir) / f"plan.{device}.json"


def write_plan(plan: Plan, path: str | Path) -> Path:
    """Atomic write (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def retune_hint(device: str, model_dir: str | Path) -> str:
    return f"re-tune: ternary-profile --device {device} --model {model_dir} --tune (or pass --no-plan)"


def load_plan(path: str | Path, *, ort_version: str | None = None, manifest_sha256: str | None = None,
              model_dir: str | Path | None = None) -> Plan:
    """Read a plan and check it still applies; raise :class:`StalePlanError` with a re-tune hint if not."""
    path = Path(path)
    try:
        plan = Plan.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise PlanError(f"{path}: no such plan; run ternary-profile --tune first") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise PlanError(f"{path}: not a device plan ({e})") from None
    if plan.format != PLAN_FORMAT or plan.version > PLAN_VERSION:
        raise PlanError(f"{path}: format {plan.format!r} version {plan.version} is not a plan this "
                        "ternarylm reads; upgrade ternarylm or re-tune")
    hint = retune_hint(plan.device, model_dir or path.parent)
    if ort_version is not None and plan.ort_version != ort_version:
        raise StalePlanError(f"{path}: tuned with onnxruntime {plan.ort_version}, this is {ort_version}; {hint}")
    if manifest_sha256 is not None and plan.manifest_sha256 != manifest_sha256:
        raise StalePlanError(f"{path}: the model was re-exported since this plan was tuned; {hint}")
    if plan.model_file:
        f = plan_model_path(plan, path)
        if not f.is_file() or (plan.model_sha256 and model_sha256(f) != plan.model_sha256):
            raise PlanError(f"{path}: its model {f.name} is missing or modified; {hint}")
    return plan


def model_sha256(path: str | Path) -> str:
    """sha256 of an ONNX file, chained with its external data beside it (``<name>.data``) when there is
    one, so a plan notices either file changing."""
    path = Path(path)
    digest = sha256_file(path)
    data = path.with_name(path.name + ".data")
    if data.is_file():
        digest = hashlib.sha256(f"{digest}:{sha256_file(data)}".encode()).hexdigest()
    return digest


def plan_model_path(plan: Plan, path: str | Path) -> Path | None:
    """The model the plan runs (None: the export's own model.onnx)."""
    return Path(path).parent / plan.model_file if plan.model_file else None
