"""``ternary-profile`` end to end through click's CliRunner (measurements are real subprocesses)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from devices_tinymodel import FAST
from ternarylm.devices import runner as runner_mod
from ternarylm.devices import tune as tune_mod
from ternarylm.devices.cli import main
from ternarylm.devices.profile import Lowering, load_profile


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, fragment: str):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert fragment in lines[0], lines[0]
    return lines[0]


def test_list_devices():
    r = run("--list-devices")
    assert r.exit_code == 0
    for name in ("cpu", "rpi4", "rpi5", "jetson-orin-nano", "jetson-agx-orin", "ort-arm64-nodot", "alias rpi"):
        assert name in r.stdout


@pytest.mark.parametrize("root, device", [("rpi4", "rpi4"), ("jetson-agx-orin", "jetson-agx-orin"),
                                          ("x86-avx512", "cpu")])
def test_detect(fixture_root, root, device):
    r = run("--detect", "--root", fixture_root(root))
    assert r.exit_code == 0 and f"device:    {device}" in r.stdout


def test_profile_with_baseline_writes_table_json_png(tiny_exports, tmp_path, fixture_root):
    out = tmp_path / "report"
    r = run("--device", "cpu", "--model", tiny_exports["nbits"], "--baseline", tiny_exports["dense"],
            "--out", out, "--root", fixture_root("x86-avx512"), *FAST)
    assert r.exit_code == 0, r.output
    assert "ternary (ort-cpu)" in r.stdout and "baseline (fp32)" in r.stdout and "ratio (x better)" in r.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["on_device"] is True and rep["device"]["profile"] == "cpu"
    assert rep["onnxruntime"]["version"] and "CPUExecutionProvider" in rep["onnxruntime"]["available_providers"]
    assert rep["cpu_model"] == "Intel(R) Xeon(R) Platinum 8480+" and rep["threads"] >= 1
    assert rep["models"]["ternary"]["manifest_sha256"] and rep["models"]["baseline"]["target"] == "fp32"
    t, b = (next(x for x in rep["results"] if x["model"] == m) for m in ("ternary", "baseline"))
    assert t["status"] == b["status"] == "ok"
    ratios = rep["ratios"]["by_prompt_len"]["16"]
    assert ratios["model_bytes"] == pytest.approx(b["model_bytes"] / t["model_bytes"])
    assert ratios["decode_tokens_per_s"] == pytest.approx(t["decode_tokens_per_s"] / b["decode_tokens_per_s"])
    assert ratios["peak_rss_mb"] == pytest.approx(b["peak_rss_mb"] / t["peak_rss_mb"])
    assert (out / "profile.png").stat().st_size > 1000
    m = t["memory_mb"]  # the peak's breakdown is printed under the table, from the same report figures
    assert (f"memory ternary prompt 16: imports {m['imports']:.0f} + session {m['session']:.0f}" in r.stdout
            and f"= peak {m['peak']:.0f} MB" in r.stdout)


def test_op_profile_prints_where_a_decoded_token_goes(tiny_exports, tmp_path, fixture_root):
    out = tmp_path / "report"
    r = run("--device", "cpu", "--model", tiny_exports["nbits"], "--out", out, "--root", fixture_root("x86-avx512"),
            "--op-profile", *FAST)
    assert r.exit_code == 0, r.output
    result = json.loads((out / "report.json").read_text())["results"][0]
    ops = result["op_profile"]["ms_per_token"]
    top, ms = next(iter(ops.items()))
    assert "MatMulNBits" in ops and f"decode ms/token by operator, ternary prompt 16" in r.stdout
    assert f"{top} {ms:.2f}" in r.stdout  # the printed line is the report's largest operator


def test_jetson_on_a_laptop_says_so(tiny_exports, tmp_path, fixture_root):
    r = run("--device", "jetson", "--model", tiny_exports["nbits"], "--out", tmp_path,
            "--root", fixture_root("x86-avx512"))
    one_line_error(r, "this host is not a Jetson")
    assert not (tmp_path / "report.json").exists()


def test_emulated_jetson_without_cuda_names_onnxruntime_gpu(tiny_exports, tmp_path, fixture_root):
    r = run("--device", "jetson", "--emulate", "--model", tiny_exports["nbits"], "--out", tmp_path,
            "--root", fixture_root("x86-avx512"))
    one_line_error(r, "onnxruntime-gpu")


def test_cuda_requested_without_cuda_provider(tiny_exports, tmp_path, fixture_root):
    r = run("--device", "cpu", "--providers", "cuda", "--model", tiny_exports["nbits"], "--out", tmp_path,
            "--root", fixture_root("x86-avx512"))
    line = one_line_error(r, "CUDAExecutionProvider")
    assert "onnxruntime-gpu" in line


def test_emulate_marks_every_output_off_device(tiny_exports, tmp_path, fixture_root):
    out = tmp_path / "rep"
    r = run("--device", "jetson", "--emulate", "--providers", "cpu", "--model", tiny_exports["nbits"],
            "--out", out, "--root", fixture_root("x86-avx512"), *FAST)
    assert r.exit_code == 0, r.output
    assert "EMULATED" in r.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["on_device"] is False and rep["device"]["on_device"] is False
    assert rep["device"]["profile"] == "jetson-orin-nano" and rep["settings"]["ternary"]["intra_op_threads"] == 6


def test_unknown_device_lists_known(tiny_exports, tmp_path):
    line = one_line_error(run("--device", "pi", "--model", tiny_exports["nbits"], "--out", tmp_path),
                          "unknown device 'pi'")
    assert "rpi5" in line and "jetson" in line


def test_model_is_required():
    r = run("--device", "cpu")
    assert r.exit_code == 2 and "--model" in r.output


def test_folder_without_manifest(tmp_path):
    (tmp_path / "m").mkdir()
    one_line_error(run("--model", tmp_path / "m", "--device", "cpu", "--out", tmp_path), "no manifest.json")


def test_tampered_model(export_copy, tmp_path):
    d = export_copy("nbits")
    data = bytearray((d / "model.onnx").read_bytes())
    data[100] ^= 1
    (d / "model.onnx").write_bytes(bytes(data))
    one_line_error(run("--model", d, "--device", "cpu", "--out", tmp_path), "sha256 does not match")


def test_baseline_with_other_architecture(tiny_exports, tmp_path):
    import devices_tinymodel

    other = devices_tinymodel.write_folder(tmp_path / "other", "dense", arch={"vocab_size": 128})
    one_line_error(run("--model", tiny_exports["nbits"], "--baseline", other, "--device", "cpu", "--out", tmp_path),
                   "not the same architecture")


def test_prompt_longer_than_context(tiny_exports, tmp_path):
    r = run("--model", tiny_exports["nbits"], "--device", "cpu", "--prompt-len", "600", "--out", tmp_path)
    assert r.exit_code == 2 and "exceeds the model's context" in r.output


def test_oom_is_a_row_and_the_sweep_continues(tiny_exports, tmp_path, monkeypatch):
    real = runner_mod.run_measurement

    def baseline_starved(req, **kw):
        if req.extra.get("model") == "baseline":
            req.memory_limit_mb = 100  # far below what python + onnxruntime need
        return real(req, **kw)

    monkeypatch.setattr(runner_mod, "run_measurement", baseline_starved)
    out = tmp_path / "rep"
    r = run("--model", tiny_exports["nbits"], "--baseline", tiny_exports["dense"], "--device", "cpu",
            "--prompt-len", "8,16", "--decode-tokens", "4", "--warmup", "0", "--repeats", "1", "--out", out)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    statuses = [(x["model"], x["prompt_len"], x["status"]) for x in rep["results"]]
    assert statuses == [("ternary", 8, "ok"), ("baseline", 8, "oom"), ("ternary", 16, "ok"), ("baseline", 16, "oom")]
    assert "baseline prompt 8: oom" in r.stdout and rep["ratios"]["by_prompt_len"] == {}


def test_everything_failing_exits_nonzero(tiny_exports, tmp_path):
    r = run("--model", tiny_exports["nbits"], "--device", "cpu", "--memory-limit", "100", "--out", tmp_path, *FAST)
    assert r.exit_code == 1 and "oom" in r.stdout


def test_tune_then_stale_plan(export_copy, tmp_path):
    """Tuning lowerings x thread counts, the plan is used, and a plan from another ORT is refused."""
    d = export_copy("nbits")
    out = tmp_path / "rep"
    r = run("--model", d, "--device", "cpu", "--tune", "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    assert "plan: " in r.stdout
    plan = json.loads((d / "plan.cpu.json").read_text())
    # every thread count the cpu profile allows on this host was tried (1, 2, 4, 8 up to its cores)
    tried_threads = sorted({row["threads"] for row in plan["tried"]})
    assert tried_threads == tune_mod.thread_candidates(load_profile("cpu"))
    assert plan["threads"] in tried_threads
    # the profile's lowerings were really built (format.relower) and measured beside the export as it is
    lowered = [row for row in plan["tried"] if row["target"] != "as-exported"]
    assert lowered and all(row["status"] == "ok" for row in lowered), lowered
    label = Lowering.from_dict(plan["lowering"]).label()
    rep = json.loads((out / "report.json").read_text())
    assert rep["tune"]["winner"]["chosen"] is True and rep["plan"]["threads"] == plan["threads"]
    assert (out / "tune.png").is_file()

    r2 = run("--model", d, "--device", "cpu", "--out", out, *FAST)  # the plan is picked up
    assert r2.exit_code == 0 and f"plan {label}" in r2.stdout

    plan["ort_version"] = "1.0.0"
    (d / "plan.cpu.json").write_text(json.dumps(plan))
    line = one_line_error(run("--model", d, "--device", "cpu", "--out", out, *FAST),
                          "tuned with onnxruntime 1.0.0")
    assert "--tune" in line and "--no-plan" in line
    assert run("--model", d, "--device", "cpu", "--no-plan", "--out", out, *FAST).exit_code == 0


def test_profile_flags_the_slow_fallback(tiny_exports, tmp_path):
    """ternary-profile measures with onnxruntime's INFO log on, so a MatMulNBits that falls back to its
    unpacked fp32 path is named in the output and report.json, exactly when this ORT logs it."""
    from test_device_measure import ort_logs_slow_fallback

    r = run("--model", tiny_exports["slow"], "--device", "cpu", "--out", tmp_path, *FAST)
    assert r.exit_code == 0, r.output
    expected = ort_logs_slow_fallback(0)
    assert ("slow MatMulNBits fallback" in r.stdout) is expected
    rep = json.loads((tmp_path / "report.json").read_text())
    assert all(x["slow_fallback"] is expected for x in rep["results"])
