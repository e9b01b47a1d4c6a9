"""``ternary-run``: real subprocesses for the happy paths and a tampered file, CliRunner for the other
user mistakes; every failure is one line on stderr, exit code non-zero, no traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper
from ternarylm.runtime_py.cli import main

from ternarylm.format.hashing import sha256_file

PROMPT = "Once upon a time"


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "ternarylm.runtime_py.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "TERNARYLM_DEBUG": ""})


def assert_one_line_error(result_stderr: str, *fragments):
    lines = [ln for ln in result_stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result_stderr
    assert "Traceback" not in result_stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def rewrite_manifest(folder, *names):
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in names:
        if (folder / name).exists():
            manifest["files"][name] = {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
        else:
            manifest["files"].pop(name)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def api_text(folder, engine: str, max_new_tokens: int, **sampling) -> str:
    """What ``ternary-run`` should print for PROMPT: the prompt, then the Python API's continuation
    (``generate`` with the folder's eos; greedy unless ``sampling`` says otherwise), then a newline."""
    from ternarylm.runtime_py import generate, load_config, load_numpy, load_ort, load_tokenizer

    tok = load_tokenizer(folder)
    decoder = load_numpy(folder) if engine == "numpy" else load_ort(folder, threads=1)
    new, _ = generate(decoder, tok.encode(PROMPT).ids, max_new_tokens, eos_id=load_config(folder).eos_token_id,
                      **sampling)
    assert new, "no token generated"
    return PROMPT + tok.decode(new) + "\n"


@pytest.mark.parametrize("engine", ["numpy", "ort"])
def test_generates_text_with_each_engine(engine, export_dir):
    """The streamed text is exactly the API's greedy continuation (one thread, so ORT's sums are the API's)."""
    folder = export_dir("portable-2bit")
    threads = ["--threads", "1"] if engine == "ort" else []
    proc = run_cli(folder, "--prompt", PROMPT, "--engine", engine, "--max-new-tokens", 12, *threads)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == api_text(folder, engine, 12)
    assert "tokens/s" in proc.stderr and f"[{engine}]" in proc.stderr


def test_engines_print_the_same_greedy_text(export_dir):
    runner = CliRunner()
    outs = [runner.invoke(main, [str(export_dir("portable-base3")), "--prompt", PROMPT, "--engine", e,
                                 "--max-new-tokens", "16", "--no-stream"]) for e in ("numpy", "ort")]
    assert all(r.exit_code == 0 for r in outs), [r.output for r in outs]
    assert outs[0].stdout == outs[1].stdout == api_text(export_dir("portable-base3"), "numpy", 16)


def test_sampling_options_and_ort_cpu_target(export_dir):
    result = CliRunner().invoke(main, [str(export_dir("ort-cpu")), "--prompt", PROMPT, "--temperature", "0.8",
                                       "--top-k", "20", "--top-p", "0.9", "--seed", "3", "--threads", "1",
                                       "--device", "cpu", "--max-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    # the same seed gives the same draws through the API (one thread on both sides)
    assert result.stdout == api_text(export_dir("ort-cpu"), "ort", 8, temperature=0.8, top_k=20, top_p=0.9, seed=3)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_model_is_refused(damage, folder_copy):
    folder = folder_copy("portable-2bit")
    data = bytearray((folder / "model.onnx").read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    (folder / "model.onnx").write_bytes(bytes(data))
    proc = run_cli(folder, "--prompt", PROMPT, "--engine", "numpy")
    assert proc.returncode != 0 and proc.stdout == ""
    assert_one_line_error(proc.stderr, "model.onnx", "re-export")


@pytest.mark.parametrize("name,engine", [("portable-2bit", "numpy"), ("portable-2bit", "ort"),
                                         ("ort-cpu", "numpy"), ("ort-cpu", "ort")])
def test_invalid_packed_trits_are_refused(name, engine, folder_copy):
    folder = folder_copy(name)
    model = onnx.load(str(folder / "model.onnx"))
    weights = json.loads((folder / "config.json").read_text())["weights"]
    entry = weights["model.layers.0.mlp.down_proj"]
    target = entry["packed"] if entry["kind"] == "ternary" else entry["B"]
    for t in model.graph.initializer:
        if t.name == target:
            arr = numpy_helper.to_array(t).copy()
            arr.reshape(-1)[3] = 0xFF  # code 3 in every 2-bit slot: not a trit
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
    onnx.save(model, str(folder / "model.onnx"))
    rewrite_manifest(folder, "model.onnx")
    result = CliRunner().invoke(main, [str(folder), "--prompt", PROMPT, "--engine", engine])
    assert result.exit_code != 0
    assert_one_line_error(result.stderr, "down_proj", "not valid", "re-export")


def test_missing_tokenizer_is_refused(folder_copy):
    folder = folder_copy("portable-2bit")
    (folder / "tokenizer.json").unlink()
    result = CliRunner().invoke(main, [str(folder), "--prompt", PROMPT])
    assert result.exit_code != 0
    assert_one_line_error(result.stderr, "tokenizer.json")
    rewrite_manifest(folder, "tokenizer.json")  # not even listed any more
    result = CliRunner().invoke(main, [str(folder), "--prompt", PROMPT])
    assert result.exit_code != 0
    assert_one_line_error(result.stderr, "no tokenizer.json")


def test_user_mistakes_are_one_line(export_dir, tmp_path):
    folder = str(export_dir("portable-2bit"))
    runner = CliRunner()
    cases = [
        ([str(tmp_path / "nope"), "--prompt", PROMPT], "not a folder"),
        ([str(tmp_path), "--prompt", PROMPT], "manifest.json"),
        ([folder, "--prompt", "word " * 400, "--engine", "numpy"], "context"),
        ([folder, "--prompt", PROMPT, "--device", "no-such-device"], "unknown device"),
        ([folder, "--prompt", PROMPT, "--top-p", "0"], "top-p"),
    ]
    for args, fragment in cases:
        result = runner.invoke(main, args)
        assert result.exit_code != 0, (args, result.output)
        assert "Traceback" not in result.output and fragment in result.stderr, (args, result.stderr)
        assert result.stdout == "", (args, result.stdout)


def test_import_does_not_pull_torch_or_transformers():
    code = ("import sys, ternarylm.runtime_py, ternarylm.runtime_py.cli; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_numpy_engine_loads_without_torch(export_dir, tmp_path):
    """Load and run with torch and transformers made unimportable, as on a Raspberry Pi."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nfor m in ('torch', 'transformers'):\n    sys.modules[m] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "ternarylm.runtime_py.cli", str(export_dir("portable-2bit")),
                           "--prompt", PROMPT, "--engine", "numpy", "--max-new-tokens", "4"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == api_text(export_dir("portable-2bit"), "numpy", 4) and "tokens/s" in proc.stderr


def _edit_architecture(folder, **changes):
    """Edit config.json and re-hash it in the manifest, so only the config/graph check can notice."""
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architecture"].update(changes)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    rewrite_manifest(folder, "config.json")


@pytest.mark.parametrize("engine", ["numpy", "ort"])
def test_config_that_disagrees_with_the_graph_is_refused(engine, folder_copy):
    folder = folder_copy("ort-cpu")
    layers = json.loads((folder / "config.json").read_text())["architecture"]["num_hidden_layers"]
    _edit_architecture(folder, num_hidden_layers=layers - 1)
    args = ["--engine", engine] if engine == "numpy" else []  # ort: the default engine
    proc = run_cli(folder, "--prompt", PROMPT, *args)
    assert proc.returncode != 0 and proc.stdout == "", proc.stdout  # refused before the prompt is echoed
    assert_one_line_error(proc.stderr, "config.json", f"num_hidden_layers is {layers - 1}", f"has {layers}",
                          "re-export the checkpoint")


@pytest.mark.parametrize("field,value", [("hidden_size", 32), ("num_key_value_heads", 2), ("head_dim", 8),
                                         ("vocab_size", 256)])
def test_every_checked_architecture_field(field, value, folder_copy):
    folder = folder_copy("portable-2bit")
    _edit_architecture(folder, **{field: value})
    for engine in ("numpy", "ort"):
        result = CliRunner().invoke(main, [str(folder), "--prompt", PROMPT, "--engine", engine])
        assert result.exit_code != 0 and result.stdout == "", (engine, result.output)
        assert_one_line_error(result.stderr, f"architecture.{field} is {value}", "re-export the checkpoint")


@pytest.mark.parametrize("engine", ["numpy", "ort"])
def test_one_new_token_has_no_decode_rate(engine, export_dir):
    """One new token comes from the prefill alone: the decode rate is n/a, never nan."""
    proc = run_cli(export_dir("ort-cpu"), "--prompt", PROMPT, "--engine", engine, "--max-new-tokens", 1)
    assert proc.returncode == 0, proc.stderr
    assert not re.search(r"\bnan\b", proc.stderr, re.IGNORECASE), proc.stderr
    assert "generated 1 tokens" in proc.stderr and "decode n/a" in proc.stderr
    assert "prefill" in proc.stderr and "tokens/s" in proc.stderr  # the prefill figure is still there
    proc = run_cli(export_dir("ort-cpu"), "--prompt", PROMPT, "--engine", engine, "--max-new-tokens", 0)
    assert proc.returncode == 0 and not re.search(r"\bnan\b", proc.stderr, re.IGNORECASE), proc.stderr
    assert "prefill n/a" in proc.stderr
