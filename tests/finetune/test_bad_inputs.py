"""Bad input through the real CLIs: each exits non-zero with a one-line error and writes nothing.
MRPC files with a missing column or a label outside {0, 1}; a table without the named columns; a
classification checkpoint given to the language-model tools, and anything but a language-model
checkpoint given to ternary-finetune; LM and classifier export folders given to the wrong loader."""

from __future__ import annotations

import json

import pytest
from clitools import cli, one_line_error
from synthetic_mrpc import HEADER


def _one_line_error(proc):
    line = one_line_error(proc, code=None)
    assert line.startswith("Error: "), line
    return line


@pytest.mark.parametrize("header, row, message", [
    ("Quality\t#1 ID\t#2 ID\t#1 String", "1\t10\t11\tA cat sat.", "no column '#2 String'"),
    (HEADER, "2\t10\t11\tA cat sat.\tThe cat sat.", "Quality '2' is not 0 or 1"),
])
def test_bad_mrpc_files(tmp_path, tiny_ckpt, header, row, message):
    data = tmp_path / "MRPC"
    data.mkdir()
    (data / "msr_paraphrase_train.txt").write_text(f"{header}\n1\t1\t2\tA\tB\n{row}\n")
    out = tmp_path / "run"
    line = _one_line_error(cli("ternarylm.cli.finetune", "mrpc", "--ckpt", tiny_ckpt, "--data", data,
                               "--out", out, check=False))
    assert message in line and "msr_paraphrase_train.txt:" in line
    assert not out.exists()


def test_table_without_the_named_columns(tmp_path, tiny_ckpt):
    (tmp_path / "t.csv").write_text("sentence,label\nhello,1\nbye,0\n")
    out = tmp_path / "run"
    line = _one_line_error(cli("ternarylm.cli.finetune", "classify", "--ckpt", tiny_ckpt, "--train",
                               tmp_path / "t.csv", "--text-cols", "text", "--label-col", "label", "--out", out,
                               check=False))
    assert "t.csv:1: no column 'text'" in line and "'sentence', 'label'" in line
    assert not out.exists()


@pytest.mark.parametrize("which", ["classifier", "text file", "other torch file"])
def test_finetune_needs_a_language_model_checkpoint(tmp_path, finetuned, mrpc_dir, which):
    import torch

    ckpt = {"classifier": finetuned[0] / "ckpt.pt", "text file": mrpc_dir / "msr_paraphrase_test.txt",
            "other torch file": tmp_path / "weights.pt"}[which]
    if which == "other torch file":
        torch.save({"weight": torch.zeros(2, 2)}, ckpt)
    out = tmp_path / "run"
    line = _one_line_error(cli("ternarylm.cli.finetune", "mrpc", "--ckpt", ckpt, "--data", mrpc_dir, "--out", out,
                               check=False))
    assert {"classifier": "already a fine-tuned sequence-classification checkpoint",
            "text file": "not a readable checkpoint",
            "other torch file": "not a ternarylm checkpoint"}[which] in line
    assert not out.exists()


@pytest.mark.parametrize("tool", [("ternarylm.cli.evaluate",), ("ternarylm.cli.generate",)])
def test_lm_tools_refuse_a_classifier(finetuned, tool):
    line = _one_line_error(cli(*tool, finetuned[0] / "ckpt.pt", check=False))
    assert "sequence-classification checkpoint but this command needs a causal-lm checkpoint" in line


def test_verify_dispatches_a_classifier_export(finetuned, classifier_export):
    proc = cli("ternarylm.export.cli", "verify", classifier_export("portable"), "--ckpt", finetuned[0] / "ckpt.pt")
    assert "label agreement" in proc.stdout and "verification passed" in proc.stdout


def test_ternary_export_onnx_exports_a_classifier(finetuned, tmp_path):
    out = tmp_path / "exp"
    cli("ternarylm.export.cli", "onnx", finetuned[0] / "ckpt.pt", "--out", out, "--target", "ort-cpu",
        "--with-baseline")
    assert json.loads((out / "config.json").read_text())["kind"] == "sequence-classification"
    assert json.loads((tmp_path / "exp-fp32" / "config.json").read_text())["export"]["target"] == "fp32"
    line = _one_line_error(cli("ternarylm.export.cli", "onnx", finetuned[0] / "ckpt.pt", "--out", tmp_path / "x",
                               "--lm-head", "int8", check=False))
    assert "--lm-head does not apply to a classifier" in line and not (tmp_path / "x").exists()


def test_ternary_run_refuses_a_classifier(classifier_export):
    line = _one_line_error(cli("ternarylm.runtime_py.cli", classifier_export("portable"), "--prompt", "hi",
                               check=False))
    assert "sequence classifier" in line and "ternary-finetune predict" in line


def test_folders_given_to_the_wrong_loader(classifier_export, tmp_path, tiny_ckpt):
    from ternarylm.export.api import export_checkpoint
    from ternarylm.runtime_py.loader import load_classifier, load_numpy, load_ort

    from ternarylm.format.folder import FolderError

    clf = classifier_export("portable")
    for load in (load_numpy, load_ort):
        with pytest.raises(FolderError, match="holds a sequence-classification export.*load_classifier"):
            load(clf)
    lm = export_checkpoint(tiny_ckpt, tmp_path / "lm", target="portable")
    with pytest.raises(FolderError, match="holds a causal-lm export, not a sequence-classification one"):
        load_classifier(lm)
    line = _one_line_error(cli("ternarylm.cli.finetune", "predict", lm, "--text", "hi", check=False))
    assert "causal-lm export" in line


def test_ternary_profile_refuses_a_classifier(classifier_export, tmp_path):
    out = tmp_path / "profile"
    line = _one_line_error(cli("ternarylm.devices.cli", "--device", "cpu", "--model", classifier_export("ort-cpu"),
                               "--out", out, check=False))
    assert "sequence-classification export" in line and "causal-LM export folder" in line and not out.exists()
