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
