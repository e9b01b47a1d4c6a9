"""ternary-finetune through the real CLI: it beats the majority-class baseline on a learnable synthetic
MRPC, writes ckpt.pt / metrics.json / dev_curve.png, and keeps the backbone ternary."""

from __future__ import annotations

import json

import pytest
import torch
from clitools import cli

from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint


def test_mrpc_beats_majority_baseline(finetuned):
    out, proc = finetuned
    metrics = json.loads((out / "metrics.json").read_text())
    test, base = metrics["test"], metrics["majority_baseline"]["test"]
    assert metrics["majority_baseline"]["label_name"] == "equivalent"  # MRPC-like imbalance: ~68% paraphrases
    assert 0.6 < base["accuracy"] < 0.8
    assert test["accuracy"] >= base["accuracy"] + 0.1, (test, base)
    assert test["f1"] > 0 and test["f1"] > base["f1"], (test, base)
    assert metrics["dev"]["accuracy"] >= metrics["majority_baseline"]["dev"]["accuracy"]
    assert metrics["examples"] == {"train": 270, "dev": 30, "test": 100}
    assert metrics["f1_kind"] == "binary (positive class 1)"
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] and metrics["history"]
    assert json.loads((out.parent / "metrics-copy.json").read_text())["test"] == test  # --json
    # the table and the JSON line on stdout; progress and notes on stderr
    assert "majority acc" in proc.stdout and "test" in proc.stdout
    headline = json.loads(proc.stdout.strip().splitlines()[-1])
    assert headline["test"]["accuracy"] == test["accuracy"]
    assert "carved from" in proc.stderr
    png = (out / "dev_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_classifier_checkpoint(finetuned, tiny_ckpt):
    out, _ = finetuned
    ckpt = load_checkpoint(out / "ckpt.pt")
    assert ckpt["kind"] == "sequence-classification"
    assert ckpt["config"]["id2label"] == {"0": "not_equivalent", "1": "equivalent"}
    task = ckpt["task"]
    assert task["text_columns"] == ["#1 String", "#2 String"] and task["labels"] == ["not_equivalent", "equivalent"]
    enc = task["encoding"]
    assert enc["template"] == "[bos] s1 [sep] s2 [eos]" and enc["max_len"] == 128
    assert enc["sep_token_id"] == enc["eos_token_id"]  # the BPE has no separator token: eos doubles as one
    assert ckpt["metrics"]["test"]["accuracy"] == json.loads((out / "metrics.json").read_text())["test"]["accuracy"]

    from ternarylm.classification import TernaryLMForSequenceClassification
    from ternarylm.quantization import TERNARY_BITS, BitLinear, ternary_linears

    model = model_from_checkpoint(ckpt, expect_kind="sequence-classification")
    assert isinstance(model, TernaryLMForSequenceClassification) and model.config.num_labels == 2
    linears = dict(ternary_linears(model))
    assert len(linears) == 7 * model.config.num_hidden_layers  # q k v o gate up down, all still BitLinear
    assert all(m.weight_bits == TERNARY_BITS for m in linears.values())
    assert not isinstance(model.score, BitLinear) and isinstance(model.score, torch.nn.Linear)
    # the backbone was fine-tuned (QAT), not frozen
    lm = load_checkpoint(tiny_ckpt)["model"]
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(lm[name], ckpt["model"][name])
    assert "lm_head.weight" not in ckpt["model"] and ckpt["model"]["score.weight"].shape == (2, 64)


def test_classify_generic_table_with_truncation(tiny_ckpt, tmp_path):
    """classify: a CSV with a single text column and string labels; --max-len so short that most rows
    are cut, which the run must report."""
    rows = ["text,topic"] + [f'"{("Lily saw a big dog in the park, " * (i % 4 + 1)).strip()}",animals' if i % 2
                             else f'"Tom ate a cake, a pie and some bread {i}",food' for i in range(60)]
    data = tmp_path / "topics.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    proc = cli("ternarylm.cli.finetune", "classify", "--ckpt", tiny_ckpt, "--train", data, "--text-cols", "text",
               "--label-col", "topic", "--out", out, "--max-len", "12", "--max-steps", "4", "--eval-every", "2",
               "--no-progress", "--threads", "1")
    assert "truncated to --max-len 12" in proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == ["animals", "food"] and metrics["truncated"]["train"] > 0
    assert metrics["steps"] == 4 and [h["step"] for h in metrics["history"]] == [2, 4]
    assert "test" not in metrics
    enc = load_checkpoint(out / "ckpt.pt")["task"]["encoding"]
    assert enc["text_columns"] == ["text"] and enc["template"] == "[bos] s [eos]"


@pytest.mark.parametrize("sub", ["mrpc", "classify"])
def test_help_has_examples(sub):
    proc = cli("ternarylm.cli.finetune", sub, "--help")
    assert "Examples:" in proc.stdout and "--ckpt" in proc.stdout
