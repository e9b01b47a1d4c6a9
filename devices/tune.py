"""``--tune``: measure candidate lowerings x thread counts on this device and keep the fastest that passes.

Candidates come from the profile: ``[[tune.lowerings]]`` (plus the export as it is) times
``threads.candidates`` (those this host has cores for). A lowering other than ``as-exported`` is built
lazily by the graph rewrite ``ternarylm.format.relower.lower`` (the one the exporter uses; no torch)::

    lower(model, config_json, bits=2, block_size=64, accuracy_level=4) -> (model, config_json)

A lowering the rewrite refuses (a block larger than the checkpoint's scale groups, say) is recorded as
skipped with its reason; ``run_tune(lower=None)`` tunes thread counts only. The rewrite changes the
ternary matmuls only: activation dtype and attention are the export's. Each candidate runs in a fresh process; its logits (prefill last position + every decode
step, identical inputs) are checked against the export run plainly on the CPU: relative max difference
``max|l - ref| / max|ref|`` and greedy (argmax) agreement, both with the profile's tolerances. Candidates
whose log says ORT took its slow MatMulNBits fallback are flagged ``slow_fallback``.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ternarylm.devices.plan import Plan, model_sha256, write_plan
from ternarylm.devices.profile import AS_EXPORTED, DeviceProfile, Lowering
from ternarylm.devices.runner import MeasureRequest, run_measurement
from ternarylm.onnxrt.session import SessionSettings, available_cores

from ternarylm.format.compare import argmax_agreement, relative_max_diff
from ternarylm.format.folder import ModelFolder, model_file_bytes, save_with_external_data
from ternarylm.format.relower import lower as relower_lower

LowerFn = Callable[..., tuple]
THREADS_ONLY = "skipped: lowerings not tried (thread counts only)"


class TuneError(RuntimeError):
    """Tuning cannot start or no candidate passed."""


@dataclass(frozen=True)
class Candidate:
    lowering: Lowering
    threads: int

    def label(self) -> str:
        return f"{self.lowering.label()} t{self.threads}"


def thread_candidates(profile: DeviceProfile, cores: int | None = None) -> list[int]:
    """The profile's thread counts this host can run (never empty: at least all cores)."""
    cores = cores or available_cores()
    counts = sorted({t for t in profile.thread_candidates if t <= cores})
    return counts or [cores]


def lowering_candidates(profile: DeviceProfile) -> list[Lowering]:
    """The export as it is, then the profile's tune lowerings (duplicates dropped, order kept)."""
    out: list[Lowering] = []
    for lw in (AS_EXPORTED, *profile.tune.lowerings):
        if lw not in out:
            out.append(lw)
    return out


def candidates(profile: DeviceProfile, cores: int | None = None,
               threads: list[int] | None = None) -> list[Candidate]:
    counts = threads or thread_candidates(profile, cores)
    return [Candidate(lw, t) for lw in lowering_candidates(profile) for t in counts]


def _slug(lowering: Lowering) -> str:
    return lowering.label().replace(" ", "_").replace("+", "").replace("=", "-").replace(".", "-")


def call_lower(lower: LowerFn, model, config: dict, lowering: Lowering):
    """``lower(model, config_json, bits=, block_size=, accuracy_level=) -> (model, config_json)`` for
    ``lowering``'s target (its bits come from the target registry)."""
    if lowering.bits is None:
        raise ValueError(f"target {lowering.target} has no MatMulNBits lowering")
    return lower(model, config, bits=lowering.bits, **lowering.lower_options())


def build_lowered(folder: ModelFolder, lowering: Lowering, out_dir: Path, lower: LowerFn) -> Path:
    """Write the lowered model (and its config, when the rewrite returns one) to ``out_dir``."""
    import copy

    import onnx

    model = onnx.load(str(folder.model_path))
    lowered, config = call_lower(lower, model, copy.deepcopy(folder.config), lowering)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{_slug(lowering)}.onnx"
    save_with_external_data(lowered, path)  # as the export's model.onnx
    if config is not None:
        path.with_suffix(".config.json").write_text(json.dumps(config, indent=2))
    return path


def compare_logits(ref, got) -> tuple[float, float]:
    """``(relative max difference, argmax agreement)`` of ``got`` against ``ref`` (``ternarylm.format.compare``)."""
    return relative_max_diff(got, ref), argmax_agreement(got, ref)


@dataclass
class TuneResult:
    rows: list[dict]
    winner: dict | None
    plan: Plan | None
    plan_file: Path | None


def _row(cand: Candidate) -> dict:
    lw = cand.lowering
    return {"candidate": cand.label(), "lowering": lw.label(), "target": lw.target, "bits": lw.bits,
            "block_size": lw.block_size, "accuracy_level": lw.accuracy_level,
            "session_config": lw.session_config, "threads": cand.threads}


def run_tune(folder: ModelFolder, profile: DeviceProfile, *, providers: list[str], workdir: Path,
             plan_file: Path, on_device: bool, host_summary: str, ort_version: str,
             prompt_len: int = 128, decode_tokens: int = 32, warmup: int = 1, repeats: int = 3,
             threads: list[int] | None = None, memory_limit_mb: int | None = None, timeout_s: float = 600,
             lower: LowerFn | None | str = "auto", progress: Callable[[str], None] | None = None) -> TuneResult:
    """Measure every candidate, pick the fastest passing one, write the plan (and its lowered model)."""
    lower_fn = relower_lower if lower == "auto" else lower
    progress = progress or (lambda _msg: None)
    workdir.mkdir(parents=True, exist_ok=True)
    config = str(folder.path / "config.json")

    def request(model: Path, cand_threads: int, session_config: dict, logits: Path, prov: list[str],
                reps: int, warm: int) -> MeasureRequest:
        s = SessionSettings(model=str(model), providers=prov, intra_op_threads=cand_threads,
                            provider_options={p: dict(profile.provider_options.get(p, {})) for p in prov},
                            session_config=session_config, log_info=True)
        return MeasureRequest(s, config=config, prompt_len=prompt_len, decode_tokens=decode_tokens, warmup=warm,
                              repeats=reps, logits_out=str(logits), memory_limit_mb=memory_limit_mb,
                              timeout_s=timeout_s)

    import numpy as np

    progress("reference: the export as it is, CPU")
    ref_file = workdir / "reference.npy"
    ref = run_measurement(request(folder.model_path, 0, {}, ref_file, ["CPUExecutionProvider"], 1, 0))
    if ref["status"] != "ok":
        raise TuneError(f"the export itself does not run on the CPU here: {ref.get('message', ref['status'])}")
    reference = np.load(ref_file)

    objective = "decode_ms_p50" if profile.tune.objective == "decode" else "prefill_ms"
    rows: list[dict] = []
    built: dict[Lowering, Path | str] = {}
    cands = candidates(profile, threads=threads)
    for cand in cands:
        row = _row(cand)
        rows.append(row)
        lw = cand.lowering
        if lw not in built:
            if lw.target == "as-exported":
                built[lw] = folder.model_path
            elif lower_fn is None:
                built[lw] = THREADS_ONLY
            else:
                progress(f"lowering {lw.label()}")
                try:
                    built[lw] = build_lowered(folder, lw, workdir, lower_fn)
                except ValueError as e:  # the rewrite refuses this lowering for this model: say why
                    built[lw] = f"skipped: {e}"[:300]
                except Exception as e:  # noqa: BLE001  (a crashing rewrite is that candidate's result)
                    built[lw] = f"lowering failed: {type(e).__name__}: {e}"[:300]
        model = built[lw]
        if isinstance(model, str):
            row.update(status="skipped" if model.startswith("skipped:") else "error", message=model, passed=False)
            continue
        progress(cand.label())
        logits_file = workdir / "candidate.npy"
        logits_file.unlink(missing_ok=True)
        res = run_measurement(request(model, cand.threads, lw.session_config, logits_file, providers,
                                      repeats, warmup))
        row.update({k: res.get(k) for k in ("status", "message", "slow_fallback", "decode_ms_p50",
                                             "decode_ms_p95", "decode_tokens_per_s", "prefill_ms",
                                             "prefill_tokens_per_s", "peak_rss_mb", "load_s") if k in res})
        row["model_bytes"] = model_file_bytes(model)
        row["model_path"] = str(model)
        if res["status"] == "ok":
            rel, agree = compare_logits(reference, np.load(logits_file))
            row.update(max_rel_diff=rel, argmax_agreement=agree,
                       passed=rel <= profile.tune.max_rel_diff and agree >= profile.tune.min_argmax_agreement)
        else:
            row["passed"] = False
    passing = [r for r in rows if r.get("passed") and r.get(objective) is not None]
    winner = min(passing, key=lambda r: r[objective]) if passing else None
    for r in rows:
        r["chosen"] = r is winner
    if winner is None:
        return TuneResult(rows, None, None, None)

    plan_file.parent.mkdir(parents=True, exist_ok=True)
    win_lowering = cands[next(i for i, r in enumerate(rows) if r is winner)].lowering
    model_file = model_sha = config_file = None
    if win_lowering.target != "as-exported":
        dest = plan_file.parent / f"model.{profile.name}.onnx"
        src = Path(winner["model_path"])
        # the graph names its data file: re-save under the plan's name (a re-tune replaces the old pair)
        import onnx

        save_with_external_data(onnx.load(str(src)), dest)
        model_file, model_sha = dest.name, model_sha256(dest)
        if src.with_suffix(".config.json").is_file():
            config_file = f"config.{profile.name}.json"
            shutil.copyfile(src.with_suffix(".config.json"), plan_file.parent / config_file)
    figures = {k: winner.get(k) for k in ("decode_ms_p50", "decode_ms_p95", "decode_tokens_per_s", "prefill_ms",
                                          "peak_rss_mb", "max_rel_diff", "argmax_agreement", "slow_fallback")}
    clean_rows = [{k: v for k, v in r.items() if k != "model_path"} for r in rows]
    plan = Plan(device=profile.name, ort_version=ort_version, lowering=win_lowering, threads=winner["threads"],
                providers=list(providers), manifest_sha256=folder.manifest_sha256, on_device=on_device,
                model_file=model_file, model_sha256=model_sha, config_file=config_file, host=host_summary, objective=profile.tune.objective,
                created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), result=figures,
                tried=clean_rows)
    write_plan(plan, plan_file)
    return TuneResult(clean_rows, {k: v for k, v in winner.items() if k != "model_path"}, plan, plan_file)
