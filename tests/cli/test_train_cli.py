"""ternary-train / ternary-eval / ternary-generate through real subprocesses on real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from clitools import TINY_TRAIN, cli


def test_training_writes_checkpoints_metrics_and_plot(tiny_run):
    for name in ("ckpt.pt", "best.pt", "metrics.jsonl", "loss.png", "train_summary.json"):
        assert (tiny_run / name).is_file(), name
    ckpt = torch.load(tiny_run / "ckpt.pt", weights_only=True)  # no pickled objects
    assert ckpt["format"] == "ternarylm-ckpt" and ckpt["format_version"] == 1
    assert ckpt["step"] == 40 and "optimizer" in ckpt and ckpt["tokenizer_json"].startswith("{")
    assert ckpt["meta"]["data_fingerprint"] and ckpt["meta"]["train_args"]["max_steps"] == 40
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 20, 40]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5  # it learns
    assert sorted(p.name for p in (tiny_run / "checkpoints").glob("*.pt")) == ["step-0000020.pt", "step-0000040.pt"]


def test_eval_reports_perplexity_table_and_json(tiny_ckpt, tmp_path):
    out = tmp_path / "eval.json"
    proc = cli("ternarylm.cli.evaluate", tiny_ckpt, "--json", out)
    result = json.loads(out.read_text())
    assert "perplexity" in proc.stdout and result["split"] == "val" and result["tokens"] > 1000
    assert abs(result["perplexity"] - 2.718281828 ** result["mean_nll"]) < 1e-6 * result["perplexity"]
    summary = json.loads((tiny_ckpt.parent / "train_summary.json").read_text())
    assert abs(result["mean_nll"] - summary["best_val_loss"]) < 0.05  # same split, same model


def test_eval_on_other_text(tiny_ckpt, tmp_path):
    text = tmp_path / "book.txt"
    text.write_text("Once upon a time there was a cat.\n\nThe cat said hello to the dog.\n" * 40)
    result = json.loads(cli("ternarylm.cli.evaluate", tiny_ckpt, "--data", text, "--split", "all",
                            "--seq-len", "32").stdout.splitlines()[-1])
    assert result["split"] == "all" and result["tokens"] > 100


def _argmax_continuation(ckpt_path, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding the slow way (full forward per token, no KV cache, stop at eos), decoded."""
    from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint, tokenizer_from_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    model, tok = model_from_checkpoint(ckpt).eval(), tokenizer_from_checkpoint(ckpt)
    ids = tok.encode(prompt).ids
    with torch.no_grad():
        for _ in range(max_new_tokens):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] == model.config.eos_token_id:
                break
    return tok.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("sampling", [[], ["--temperature", "0.8", "--top-k", "20", "--top-p", "0.9"]])
def test_generate(tiny_ckpt, sampling):
    """Greedy output is the cache-free argmax continuation; sampling continues the prompt."""
    proc = cli("ternarylm.cli.generate", tiny_ckpt, "--prompt", "Once upon a time", "--max-new-tokens", "12",
               *sampling)
    assert proc.stdout.startswith("Once upon a time") and len(proc.stdout) > len("Once upon a time")
    if not sampling:
        assert proc.stdout == _argmax_continuation(tiny_ckpt, "Once upon a time", 12) + "\n"


def test_help_has_examples():
    for module in ("ternarylm.cli.train", "ternarylm.cli.evaluate", "ternarylm.cli.generate"):
        assert "Examples:" in cli(module, "--help").stdout


def _fails(module, *args, match: str):
    proc = cli(module, *args, check=False)
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert match in proc.stderr, proc.stderr
    return lines


def test_training_bad_input(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    short = tmp_path / "short.txt"
    short.write_text("Hello there.\n")
    out = tmp_path / "run"
    _fails("ternarylm.cli.train", "--out", out, "--data", tmp_path / "missing.txt", match="missing.txt")
    _fails("ternarylm.cli.train", "--out", out, "--data", empty, match="no text")
    _fails("ternarylm.cli.train", "--out", out, "--data", bad, match="UTF-8")
    _fails("ternarylm.cli.train", "--out", out, "--data", short, "--preset", "tiny", "--vocab-size", "300",
           match="fewer than one sequence")
    _fails("ternarylm.cli.train", "--out", out, "--preset", "huge", match="unknown preset")
    _fails("ternarylm.cli.train", "--out", out, "--preset", "tiny", "--stories", "50", "--set", "hiden_size=3",
           match="unknown config key")
    _fails("ternarylm.cli.train", "--out", out, "--lr", "5", match="--lr")
    _fails("ternarylm.cli.train", "--out", out, "--device", "cuda", "--preset", "tiny", "--stories", "50",
           match="CUDA is not available")
    assert not (out / "ckpt.pt").exists()


def test_refuses_to_train_over_another_run(tiny_run):
    _fails("ternarylm.cli.train", "--out", tiny_run, *TINY_TRAIN, match="already holds a training run")


def test_bad_checkpoints(tmp_path, tiny_ckpt):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_ckpt.read_bytes()[:5000])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "ternarylm-ckpt", "evil": object.__new__(torch.nn.ReLU)}, pickled)
    newer = tmp_path / "newer.pt"
    state = torch.load(tiny_ckpt, weights_only=True)
    torch.save({**state, "format_version": 99}, newer)
    _fails("ternarylm.cli.evaluate", truncated, match="truncated")
    _fails("ternarylm.cli.evaluate", text, match="truncated")
    _fails("ternarylm.cli.generate", pickled, "--prompt", "hi", match="pickled Python objects")
    _fails("ternarylm.cli.generate", newer, "--prompt", "hi", match="format_version 99")


def _last_eval(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "val_loss" in r][-1]


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    args = ["--preset", "tiny", "--stories", "400", "--max-steps", "150", "--eval-every", "25",
            "--batch-size", "8", "--seq-len", "64", "--no-progress", "--threads", "1", "--seed", "7"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    cli("ternarylm.cli.train", "--out", straight, *args)
    proc = subprocess.Popen([sys.executable, "-m", "ternarylm.cli.train", "--out", str(killed), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((killed / "checkpoints").glob("step-0000050.pt")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted_at = torch.load(killed / "ckpt.pt", weights_only=True)["step"]
    assert 50 <= interrupted_at < 150, "the run finished before it could be killed"
    cli("ternarylm.cli.train", "--out", killed, *args, "--resume")
    a, b = _last_eval(straight), _last_eval(killed)
    assert a["step"] == b["step"] == 150
    assert a["val_loss"] == b["val_loss"]
    sa = torch.load(straight / "ckpt.pt", weights_only=True)["model"]
    sb = torch.load(killed / "ckpt.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_agree(tmp_path):
    """DDP on the CPU: two gloo ranks under torch.distributed.run (launched with this interpreter, so it
    runs from any venv, on PATH or not) end with identical parameters and count both ranks' tokens."""
    out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "ternarylm.cli.train",
                           "--out", str(out), "--preset", "tiny", "--stories", "300", "--max-steps", "12",
                           "--eval-every", "6", "--batch-size", "4", "--seq-len", "32", "--no-progress",
                           "--threads", "1"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(summary["rank_param_checksums"]) == 2
    assert summary["rank_param_checksums"][0] == summary["rank_param_checksums"][1]
    assert summary["tokens_seen"] == 12 * 4 * 32 * 2


def test_keep_precision_trains_a_mixed_model_and_rejects_bad_plans(tmp_path):
    """--keep-precision lands in the checkpoint's quant config and rebuilds the same mixed model;
    a malformed value, a pattern that matches no linear or an fp run fail in one line, no checkpoint."""
    from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint
    from ternarylm.quantization import ternary_linears

    small = ["--preset", "tiny", "--stories", "200", "--max-steps", "3", "--eval-every", "3", "--batch-size", "4",
             "--seq-len", "32", "--warmup-steps", "1", "--no-progress", "--threads", "1"]
    out = tmp_path / "mixed"
    cli("ternarylm.cli.train", "--out", out, *small, "--keep-precision", "model.layers.0.mlp.*=8",
        "--keep-precision", "*.o_proj=fp16")
    ckpt = load_checkpoint(out / "ckpt.pt")
    assert ckpt["config"]["quant"]["keep_precision"] == {"model.layers.0.mlp.*": 8, "*.o_proj": 16}
    bits = {name: m.weight_bits for name, m in ternary_linears(model_from_checkpoint(ckpt))}
    assert bits["model.layers.0.mlp.down_proj"] == 8 and bits["model.layers.1.self_attn.o_proj"] == 16
    assert bits["model.layers.1.mlp.down_proj"] == 2 and bits["model.layers.0.self_attn.q_proj"] == 2
    for args, match in ((["--keep-precision", "*.o_proj=3"], "must look like PATTERN=BITS"),
                        (["--keep-precision", "model.layer.0.*=8"], "matches no linear"),
                        (["--precision", "fp", "--keep-precision", "*.o_proj=8"], "needs --precision ternary")):
        bad = tmp_path / f"bad{len(args)}{match[:4]}"
        lines = _fails("ternarylm.cli.train", "--out", bad, *small, *args, match=match)
        assert len(lines) == 1 and not (bad / "ckpt.pt").exists()


def test_resume_removes_stale_checkpoint_temp_files(tmp_path):
    """A kill during save_checkpoint leaves ``.ckpt.pt.tmp-<pid>``; the next start removes it (its writer
    is gone) and says so, but leaves a temp file whose writer still runs."""
    small = ["--preset", "tiny", "--stories", "200", "--eval-every", "2", "--batch-size", "4", "--seq-len", "32",
             "--warmup-steps", "1", "--no-progress", "--threads", "1"]
    out = tmp_path / "run"
    cli("ternarylm.cli.train", "--out", out, *small, "--max-steps", "2")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".ckpt.pt.tmp-{dead.pid}"
    stale.write_bytes(b"half a checkpoint")
    live = out / f".best.pt.tmp-{os.getpid()}"  # this test process is alive: maybe still writing
    live.write_bytes(b"being written")
    proc = cli("ternarylm.cli.train", "--out", out, *small, "--max-steps", "4", "--resume")
    assert not stale.exists() and live.exists()
    assert f"removed 1 stale temporary file(s) left by an interrupted write: {stale.name}" in proc.stdout
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 4
    assert _last_eval(out)["step"] == 4
