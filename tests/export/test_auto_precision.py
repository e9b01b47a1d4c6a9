"""``--embedding/--lm-head auto``: the smallest candidate that passes verify is chosen and recorded."""

from __future__ import annotations

import json

import pytest
from clitools import cli

from ternarylm.export.precision import candidates
from ternarylm.format.targets import get_target


def test_candidates_follow_the_target_and_the_fixed_option():
    cpu, nodot = get_target("ort-cpu"), get_target("ort-arm64-nodot")
    assert candidates(cpu, True, "auto", "auto") == [("int4", "int4"), ("int4", "int8"), ("int8", "int8")]
    assert candidates(cpu, True, "auto", "int8") == [("int4", "int8"), ("int8", "int8")]
    assert candidates(cpu, True, "int8", "int4") == [("int8", "int4")]  # nothing to choose
    # the Pi 4 target never picks an 8-bit head (onnxruntime has no native kernel for it there)
    assert all(head in ("int4", "float") for _, head in candidates(nodot, True, "auto", "auto"))
    assert candidates(get_target("portable"), True, "auto", "auto") == [("float", "float")]
    assert candidates(cpu, False, "auto", "auto") == [("int8", None)]  # a classifier: no head option


def test_auto_export_keeps_the_first_passing_candidate(tiny_ckpt, tmp_path):
    out = tmp_path / "auto"
    proc = cli("ternarylm.export.cli", "onnx", tiny_ckpt, "--out", out)
    export = json.loads((out / "config.json").read_text())["export"]
    choice = export["precision_choice"]
    tried = choice["tried"]
    assert [(t["embedding"], t["lm_head"]) for t in tried] == candidates(get_target("ort-cpu"), True, "auto",
                                                                         "auto")[:len(tried)]
    assert all(not t["passed"] for t in tried[:-1])  # it stopped at the first that passed (or the last)
    assert (export["embedding"], export["lm_head"]) == (choice["embedding"], choice["lm_head"]) == \
        (tried[-1]["embedding"], tried[-1]["lm_head"])
    assert "embedding/lm-head auto:" in proc.stdout
    if choice["passed"]:  # the written folder passes ternary-export verify with the same engine and tolerance
        report = tmp_path / "verify.json"
        cli("ternarylm.export.cli", "verify", out, "--ckpt", tiny_ckpt, "--engines", tried[-1]["engine"],
            "--json", report)  # verify's defaults are the search's: same prompts, tokens, tolerance
        engine = json.loads(report.read_text())["engines"][tried[-1]["engine"]]
        assert engine["max_logit_diff"] == pytest.approx(tried[-1]["max_logit_diff"], rel=1e-5)
    assert not list(tmp_path.glob(".*tmp*"))  # candidates' scratch folders are gone


def test_fixed_precisions_are_not_searched(tiny_ckpt, tmp_path):
    out = tmp_path / "fixed"
    cli("ternarylm.export.cli", "onnx", tiny_ckpt, "--out", out, "--embedding", "int8", "--lm-head", "int8")
    export = json.loads((out / "config.json").read_text())["export"]
    assert "precision_choice" not in export and (export["embedding"], export["lm_head"]) == ("int8", "int8")


def test_kl_divergence_is_zero_for_equal_logits_and_matches_the_closed_form():
    import numpy as np

    from ternarylm.format.compare import kl_divergence

    a = np.array([[2.0, 0.0], [0.0, 0.0]])
    assert kl_divergence(a, a + 3.0) == pytest.approx([0.0, 0.0], abs=1e-12)  # a shift is the same distribution
    p = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
    expected = (p * (np.log(p) - np.log(0.5))).sum(-1)
    assert kl_divergence(a, np.zeros_like(a)) == pytest.approx(expected)
    masked = np.array([[0.0, -np.inf, 0.0]])  # a token the reference rules out adds nothing (not nan)
    assert kl_divergence(masked, np.array([[0.0, 0.0, 0.0]])) == pytest.approx([np.log(1.5)])


def test_auto_rejects_a_head_whose_kl_cost_is_over_the_bound(tiny_ckpt, tmp_path, monkeypatch):
    """With the KL bound below what int4 costs, the search passes over int4 candidates whose engines do match
    their reference, records why, and keeps int8; verify of the kept folder reports the same cost."""
    import ternarylm.export.verify as verify
    from ternarylm.export.api import export_checkpoint

    monkeypatch.setattr(verify, "DEFAULT_MAX_KLD", 1e-9)
    out = export_checkpoint(tiny_ckpt, tmp_path / "strict", target="ort-cpu", embedding="auto", lm_head="auto")
    choice = json.loads((out / "config.json").read_text())["export"]["precision_choice"]
    first = choice["tried"][0]
    assert (first["embedding"], first["lm_head"]) == ("int4", "int4") and not first["passed"]
    assert first["max_logit_diff"] <= get_target("ort-cpu").relative_tolerance and first["greedy_agreement"] >= 0.9
    assert first["kl_divergence_mean"] > choice["max_kld"] == 1e-9  # rejected for its cost, not its engine
    kept = choice["tried"][-1]
    assert not choice["passed"] and (kept["embedding"], kept["lm_head"]) == ("int8", "int8")
    report = verify.verify_export(out, tiny_ckpt, engines=[kept["engine"]], max_kld=1e-9)
    assert report["precision"]["kl_divergence_mean"] == pytest.approx(kept["kl_divergence_mean"], rel=1e-6)


def test_quantised_head_is_judged_apart_from_the_engines(tiny_ckpt, tmp_path):
    """An int4 head and embedding on the ``portable`` target (tolerance 1e-2, the same computation as training):
    the engines are held to a reference carrying the same int4 codes, so they match it as tightly as a float-head
    export does, and the cost of int4 is reported on its own (KL divergence, top-1). A bound below that cost fails
    in one line."""
    out = tmp_path / "int4"
    cli("ternarylm.export.cli", "onnx", tiny_ckpt, "--out", out, "--target", "portable", "--embedding", "int4",
        "--lm-head", "int4")
    report_path = tmp_path / "verify.json"
    proc = cli("ternarylm.export.cli", "verify", out, "--ckpt", tiny_ckpt, "--json", report_path)
    report = json.loads(report_path.read_text())
    assert report["passed"] and "mean KL" in proc.stdout
    for engine in report["engines"].values():
        assert engine["max_logit_diff"] < 1e-2 and engine["greedy_agreement"] == 1.0
    cost = report["precision"]
    assert cost["quantized"] == {"model.embed_tokens": {"bits": 4, "block_size": 32},
                                 "lm_head": {"bits": 4, "block_size": 32}}
    assert 0 < cost["kl_divergence_mean"] <= cost["kl_divergence_max"] and 0 <= cost["top1_agreement"] <= 1
    assert cost["passed"] and cost["kl_divergence_mean"] <= cost["max_kld"] == 0.01

    strict = cli("ternarylm.export.cli", "verify", out, "--ckpt", tiny_ckpt, "--max-kld",
                 f"{cost['kl_divergence_mean'] / 2:.3g}", check=False)
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert "quantised head/embedding" in strict.stderr and "--lm-head/--embedding int8" in strict.stderr
    negative = cli("ternarylm.export.cli", "verify", out, "--ckpt", tiny_ckpt, "--max-kld", "-1", check=False)
    assert negative.returncode == 2 and "--max-kld" in negative.stderr and "Traceback" not in negative.stderr
