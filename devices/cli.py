"""``ternary-profile``: memory and latency of an export (and its fp32 twin) on this device.

    ternary-profile --device cpu --model DIR --baseline FP32_DIR      table + report.json + profile.png
    ternary-profile --device rpi --model DIR --tune                   pick the fastest passing lowering
    ternary-profile --device jetson --model DIR --emulate             a Jetson profile's settings, here
    ternary-profile --list-devices | --detect

Each model runs in a fresh process (``python -m ternarylm.devices.measure``). User mistakes end with
one line and a non-zero exit; a configuration that runs out of memory is a row of the table.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from ternarylm import __version__
from ternarylm.devices import report as rep
from ternarylm.devices.deploy import (ProviderError, deploy_settings, lowering_note, ort_version, resolve_providers,
                                     settings_for)
from ternarylm.devices.detect import DeviceError, HostInfo, Resolution, detect_host, match_profile, resolve_device
from ternarylm.devices.plan import Plan, PlanError, plan_path
from ternarylm.devices.profile import ProfileError, families, load_profiles
from ternarylm.onnxrt.session import SessionSettings
from ternarylm.devices.tune import TuneError, TuneResult, run_tune
from ternarylm.format.entries import CAUSAL_LM
from ternarylm.format.folder import FolderError, ModelFolder, architecture_mismatch, model_file_bytes


def _prompt_lens(text: str) -> list[int]:
    try:
        lens = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.UsageError(f"--prompt-len takes integers separated by commas, got {text!r}") from None
    if not lens or any(n <= 0 for n in lens):
        raise click.UsageError("--prompt-len values must be positive")
    return lens


def _list_devices() -> None:
    profiles = load_profiles()
    headers = ["device", "description", "target", "providers", "threads", "budget MB", "context"]
    body = [[p.name, p.description, p.export_target, ",".join(x.replace("ExecutionProvider", "") for x in p.providers),
             str(p.threads or "all"), str(p.memory_budget_mb), str(p.recommended_context)]
            for p in profiles.values()]
    rep.print_table("device profiles", headers, body, echo=click.echo)
    for alias, members in families(profiles).items():
        click.echo(f"alias {alias}: {' | '.join(members)} (resolved by detection)")
    click.echo("auto: the detected device")


def _show_detect(host: HostInfo) -> None:
    click.echo(f"device:    {match_profile(host)}")
    click.echo(f"host:      {host.summary()}")
    if host.board_model:
        click.echo(f"board:     {host.board_model}")
    if host.tegra_release:
        click.echo(f"L4T:       {host.tegra_release}")
    click.echo(f"providers: {', '.join(host.providers) or 'onnxruntime not installed'}")


def _open(path: Path, what: str) -> ModelFolder:
    try:
        folder = ModelFolder.open(path)
    except FolderError as e:
        raise click.ClickException(f"{what}: {e}") from None
    if folder.kind != CAUSAL_LM:
        raise click.ClickException(f"{what}: {path} holds a {folder.kind} export; ternary-profile measures language-model "
                                   "decoders (prefill and decode), so pass a causal-LM export folder")
    return folder


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "-m", "model_dir", type=click.Path(path_type=Path), help="Export folder to profile.")
@click.option("--baseline", "-b", "baseline_dir", type=click.Path(path_type=Path),
              help="Its full-precision twin (ternary-export --with-baseline); every figure also as a ratio.")
@click.option("--device", "-d", default="auto", show_default=True,
              help="Profile name, alias (rpi, jetson) or auto; --list-devices shows them.")
@click.option("--emulate", is_flag=True, help="Apply the profile's settings on a host that is not that device.")
@click.option("--providers", help="Comma list overriding the profile's execution providers (cpu, cuda, ...).")
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads (default: the plan's, else the profile's).")
@click.option("--prompt-len", default="128", show_default=True, help="Prompt length(s) for prefill, comma separated.")
@click.option("--decode-tokens", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--warmup", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Report folder [./profile-DEVICE].")
@click.option("--tune", is_flag=True, help="Try the profile's candidate lowerings and thread counts; write a plan.")
@click.option("--plan", "plan_file", type=click.Path(path_type=Path),
              help="Plan file to read / write [MODEL/plan.DEVICE.json].")
@click.option("--no-plan", is_flag=True, help="Ignore an existing plan: use the profile's settings.")
@click.option("--memory-limit", type=click.IntRange(min=64),
              help="Address-space limit (MB) for each measurement process: emulates a smaller device.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds before one measurement is abandoned.")
@click.option("--op-profile", is_flag=True,
              help="Also show where a decoded token's time goes, per operator (onnxruntime's profiler, separate run).")
@click.option("--list-devices", is_flag=True, help="List device profiles and exit.")
@click.option("--detect", "show_detect", is_flag=True, help="Print what this host is detected as and exit.")
@click.option("--root", default="/", hidden=True, help="Filesystem root for detection (tests).")
def main(model_dir, baseline_dir, device, emulate, providers, threads, prompt_len, decode_tokens, warmup, repeats,
         out_dir, tune, plan_file, no_plan, memory_limit, timeout, op_profile, list_devices, show_detect, root):
    """Profile an export's memory and latency on this device (and tune its lowering with --tune)."""
    try:
        if list_devices:
            return _list_devices()
        host = detect_host(root)
        if show_detect:
            return _show_detect(host)
        if model_dir is None:
            raise click.UsageError("--model DIR is required (the folder ternary-export wrote)")
        resolution = resolve_device(device, host, emulate=emulate)
        profile = resolution.profile
        prompt_lens = _prompt_lens(prompt_len)
        folder = _open(model_dir, "--model")
        baseline = _open(baseline_dir, "--baseline") if baseline_dir else None
        if baseline is not None:
            diff = architecture_mismatch(folder.architecture, baseline.architecture)
            if diff:
                raise click.ClickException(f"--baseline {baseline.path} is not the same architecture as the model "
                                           f"({'; '.join(diff[:3])}); pass the twin exported from the same checkpoint")
        max_pos = folder.architecture.get("max_position_embeddings")
        if max_pos and max(prompt_lens) + decode_tokens > max_pos:
            raise click.UsageError(f"prompt {max(prompt_lens)} + {decode_tokens} decode tokens exceeds the model's "
                                   f"context of {max_pos}")
        override = [p for p in providers.split(",") if p.strip()] if providers else None
        chosen = resolve_providers(profile, override, host.providers)
        version = ort_version()
        pfile = plan_file or plan_path(folder.path, profile.name)
        out = out_dir or Path(f"profile-{profile.name}")
        out.mkdir(parents=True, exist_ok=True)
        banner = "" if resolution.on_device else " [EMULATED: settings applied on this host, not device figures]"

        tune_result = None
        if tune:
            tune_result = _run_tune(folder, profile, resolution, chosen, pfile, version, prompt_lens[0],
                                    decode_tokens, warmup, repeats, [threads] if threads else None, memory_limit,
                                    timeout, banner)
        rs = deploy_settings(folder, resolution, use_plan=not no_plan, plan_file=plan_file, providers=override,
                             threads=threads)
        plan, chosen = rs.plan, rs.session.providers
        settings = {"ternary": rs.session}
        if baseline is not None:
            settings["baseline"] = settings_for(baseline, profile, host, providers=chosen,
                                                threads=settings["ternary"].threads)
        targets = {"ternary": plan.lowering.target if plan and plan.model_file else folder.target,
                   "baseline": baseline.target if baseline else None}
        results = _measure_all(settings, {"ternary": folder, "baseline": baseline}, targets, prompt_lens,
                               decode_tokens, warmup, repeats, memory_limit, timeout, op_profile)
    except (DeviceError, ProfileError, ProviderError, PlanError, FolderError) as e:
        raise click.ClickException(str(e)) from None

    run = ProfileRun(resolution, folder, baseline, settings, plan, pfile, version, results, tune_result, banner,
                     {"prompt_lens": prompt_lens, "decode_tokens": decode_tokens, "warmup": warmup,
                      "repeats": repeats, "memory_limit_mb": memory_limit})
    _print_results(run)
    charts = [rep.write_chart(results, out / "profile.png", f"{profile.name}: ternary vs baseline{banner}",
                              prompt_lens[0])]
    if tune_result:
        charts.append(rep.write_tune_chart(tune_result.rows, out / "tune.png",
                                           f"{profile.name} tune: decode ms/token{banner}"))
    written = [rep.write_json(_report(run), out / "report.json"), *filter(None, charts)]
    click.echo(f"wrote {' and '.join(map(str, written))}")
    if None in charts:
        click.echo(f"note: {rep.NO_CHART_NOTE}")
    if not any(r["status"] == "ok" for r in results):
        sys.exit(1)


@dataclass
class ProfileRun:
    """Everything one ``ternary-profile`` invocation decided and measured."""

    resolution: Resolution
    folder: ModelFolder
    baseline: ModelFolder | None
    settings: dict[str, SessionSettings]
    plan: Plan | None
    plan_file: Path
    ort_version: str
    results: list[dict]
    tune: TuneResult | None
    banner: str
    workload: dict

    @property
    def ratios(self) -> dict[str, dict]:
        """``{prompt_len: ratios}`` where both models ran."""
        out = {}
        for n in self.workload["prompt_lens"]:
            ok = {r["model"]: r for r in self.results if r["prompt_len"] == n and r["status"] == "ok"}
            if "ternary" in ok and "baseline" in ok:
                out[str(n)] = rep.ratios(ok["ternary"], ok["baseline"])
        return out

    @property
    def notes(self) -> list[str]:
        profile, host = self.resolution.profile, self.resolution.host
        notes = []
        hint = None if self.plan else lowering_note(self.folder, profile, host)
        if hint:
            notes.append(hint)
        for r in self.results:
            if r.get("model") == "ternary" and (r.get("peak_rss_mb") or 0) > profile.memory_budget_mb:
                notes.append(f"peak RSS {r['peak_rss_mb']:.0f} MB exceeds the {profile.name} budget of "
                             f"{profile.memory_budget_mb} MB")
        if max(self.workload["prompt_lens"]) + self.workload["decode_tokens"] > profile.recommended_context:
            notes.append(f"prompt + decode exceeds the {profile.name} recommended context of "
                         f"{profile.recommended_context}")
        return notes


def _print_results(run: ProfileRun) -> None:
    ratios = run.ratios
    rows = []
    for r in run.results:
        rows.append({**r, "model": f"{r['model']} ({r.get('target')})"})
        if r["model"] == "baseline" and str(r["prompt_len"]) in ratios:
            rows.append(rep.ratio_row(ratios[str(r["prompt_len"])], rep.RESULT_COLUMNS, "ratio (x better)"))
    headers, body = rep.table_rows(rows, rep.RESULT_COLUMNS)
    how = f"plan {run.plan.lowering.label()}" if run.plan else "profile settings"
    title = (f"{run.resolution.profile.name} on {run.resolution.host.summary()}, onnxruntime {run.ort_version}, "
             f"{run.settings['ternary'].threads} threads, {how}{run.banner}")
    rep.print_table(title, headers, body, echo=click.echo)
    for r in run.results:
        if r["status"] != "ok":
            click.echo(f"{r['model']} prompt {r['prompt_len']}: {r['status']}: {r.get('message', '')}")
        elif r.get("slow_fallback"):
            click.echo(f"{r['model']}: onnxruntime took its slow MatMulNBits fallback (unpacked compute)")
    for r in run.results:
        m = r.get("memory_mb")
        if r["status"] == "ok" and m:
            click.echo(f"memory {r['model']} prompt {r['prompt_len']}: imports {m['imports']:.0f} + session "
                       f"{m['session']:.0f} (file-backed {m['session_file_backed'] or 0:.0f}) + generation "
                       f"{m['generation']:.0f} (KV cache {m['kv_cache']:.1f}) = peak {m['peak']:.0f} MB")
    for r in run.results:
        ops = (r.get("op_profile") or {}).get("ms_per_token")
        if r["status"] == "ok" and ops:
            top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(ops.items())[:6])
            click.echo(f"decode ms/token by operator, {r['model']} prompt {r['prompt_len']} (profiled run "
                       f"{r['op_profile']['run_ms']:.2f} ms): {top}")
    for note in run.notes:
        click.echo(f"note: {note}")


def _report(run: ProfileRun) -> dict:
    """report.json (format ternarylm-device-report, version 1)."""
    host = run.resolution.host
    return {
        "format": rep.REPORT_FORMAT, "format_version": rep.REPORT_VERSION, "package_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "on_device": run.resolution.on_device,
        "device": {**run.resolution.to_dict(), "profile_settings": run.resolution.profile.to_dict()},
        "onnxruntime": {"version": run.ort_version, "available_providers": host.providers},
        "cpu_model": host.cpu_model,
        "threads": run.settings["ternary"].threads,
        "settings": {k: s.to_dict() for k, s in run.settings.items()},
        "workload": run.workload,
        "plan": {"file": str(run.plan_file), **run.plan.to_dict()} if run.plan else None,
        "models": {"ternary": run.folder.info(), "baseline": run.baseline.info() if run.baseline else None},
        "results": run.results,
        "ratios": {"convention": rep.RATIO_CONVENTION, "by_prompt_len": run.ratios},
        "tune": {"rows": run.tune.rows, "winner": run.tune.winner} if run.tune else None,
        "notes": run.notes,
    }


def _measure_all(settings, folders, targets, prompt_lens, decode_tokens, warmup, repeats, memory_limit, timeout,
                 op_profile: bool = False) -> list[dict]:
    from ternarylm.devices.runner import MeasureRequest, run_measurement
    from tqdm import tqdm

    jobs = [(n, label) for n in prompt_lens for label in settings]
    results = []
    with tqdm(jobs, desc="profiling", unit="run", file=sys.stderr, leave=False) as bar:
        for n, label in bar:
            bar.set_description(f"{label} prompt {n}")
            folder = folders[label]
            s = settings[label]
            # INFO logging in the measured process only, so onnxruntime's slow-path line reaches the runner
            req = MeasureRequest(dataclasses.replace(s, log_info=True), config=str(folder.path / "config.json"), prompt_len=n,
                                 decode_tokens=decode_tokens, warmup=warmup, repeats=repeats,
                                 memory_limit_mb=memory_limit, timeout_s=timeout, op_profile=op_profile,
                                 extra={"model": label, "target": targets[label]})
            res = run_measurement(req)
            res["prompt_len"] = n
            res["model_file"] = s.model
            res["model_bytes"] = model_file_bytes(s.model) if s.model != str(folder.model_path) \
                else folder.model_bytes
            results.append(res)
    return results


def _run_tune(folder, profile, resolution, providers, pfile, version, prompt_len, decode_tokens, warmup, repeats,
              threads, memory_limit, timeout, banner):
    from tqdm import tqdm

    workdir = pfile.parent / f".tune-{profile.name}"
    bar = tqdm(desc="tuning", file=sys.stderr, leave=False, unit="run")

    def progress(msg: str) -> None:
        bar.set_description(msg[:60])
        bar.update(1)

    try:
        result = run_tune(folder, profile, providers=providers, workdir=workdir, plan_file=pfile,
                          on_device=resolution.on_device, host_summary=resolution.host.summary(),
                          ort_version=version, prompt_len=prompt_len, decode_tokens=decode_tokens, warmup=warmup,
                          repeats=repeats, threads=threads, memory_limit_mb=memory_limit, timeout_s=timeout,
                          progress=progress)
    except TuneError as e:
        raise click.ClickException(str(e)) from None
    finally:
        bar.close()
        shutil.rmtree(workdir, ignore_errors=True)
    headers, body = rep.table_rows(result.rows, rep.TUNE_COLUMNS)
    rep.print_table(f"tune {profile.name}: candidates (objective: {profile.tune.objective}){banner}",
                    headers, body, echo=click.echo)
    skipped = [r for r in result.rows if r.get("status") == "skipped"]
    if skipped:
        click.echo(f"{len(skipped)} candidate(s) {skipped[0]['message']}")
    if result.winner is None:
        raise click.ClickException("no candidate passed the logits check; nothing written (see the table above)")
    click.echo(f"plan: {result.winner['lowering']}, {result.winner['threads']} threads -> {result.plan_file}")
    return result


if __name__ == "__main__":
    main()
