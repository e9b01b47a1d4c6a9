"""``ternary-train --init-from``: ternary QAT from a full-precision Llama folder, keeping its shapes, weights
and tokenizer; then the usual checkpoint, resume, ONNX export and verify. Bad folders: one line, exit 1,
nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from clitools import cli, one_line_error
from interop_tools import edit_config, make_llama_folder, save_tokenizer, tiny_tokenizer

# A few steps at a tiny learning rate: the trained latent weights stay next to the Llama's.
INIT_TRAIN = ["--stories", "200", "--max-steps", "4", "--eval-every", "2", "--eval-batches", "2", "--batch-size", "4",
              "--seq-len", "32", "--warmup-steps", "1", "--lr", "1e-5", "--no-progress", "--threads", "1"]

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # torch in the export/verify subprocesses (they have no --threads)


def test_init_from_llama_trains_resumes_exports_and_verifies(llama_folder, tmp_path):
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    from ternarylm.checkpoint import load_checkpoint

    run = tmp_path / "run"
    proc = cli("ternarylm.cli.train", "--init-from", llama_folder, "--out", run, *INIT_TRAIN)
    assert f"from {llama_folder}" in proc.stdout and "done: step 4" in proc.stdout, proc.stdout
    ckpt = load_checkpoint(run / "ckpt.pt")
    llama = json.loads((llama_folder / "config.json").read_text())
    cfg = ckpt["config"]
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "max_position_embeddings", "rms_norm_eps"):
        assert cfg[key] == llama[key], key
    assert cfg["precision"] == "ternary" and ckpt["meta"]["train_args"]["init_from"] == str(llama_folder)
    assert ckpt["tokenizer_json"] == Tokenizer.from_file(str(llama_folder / "tokenizer.json")).to_str()
    source = load_file(str(llama_folder / "model.safetensors"))
    assert set(source) == set(ckpt["model"])
    drift = max((ckpt["model"][k] - v).abs().max().item() for k, v in source.items())
    assert 0 < drift < 1e-3, drift  # trained from the Llama's weights, not from a fresh init

    proc = cli("ternarylm.cli.train", "--init-from", llama_folder, "--out", run, *INIT_TRAIN, "--resume",
               "--max-steps", "6")
    assert "done: step 6" in proc.stdout, proc.stdout
    assert load_checkpoint(run / "ckpt.pt")["step"] == 6

    export = tmp_path / "export"
    cli("ternarylm.export.cli", "onnx", run / "ckpt.pt", "--out", export, "--target", "ort-cpu",
        "--embedding", "int8", "--lm-head", "int8", env=ONE_THREAD)
    proc = cli("ternarylm.export.cli", "verify", export, "--ckpt", run / "ckpt.pt", "--max-new-tokens", "8",
               env=ONE_THREAD)
    assert "verification passed" in proc.stdout, proc.stdout


def test_load_llama_init_unties_a_tied_head(interop_tokenizer, tmp_path):
    from safetensors.torch import load_file

    from ternarylm.hf import load_llama_init

    folder = make_llama_folder(tmp_path / "tied", interop_tokenizer, tie=True)
    assert "lm_head.weight" not in load_file(str(folder / "model.safetensors"))
    init = load_llama_init(str(folder))
    assert torch.equal(init.state_dict["lm_head.weight"], init.state_dict["model.embed_tokens.weight"])
    assert any("ties its LM head" in note for note in init.notes)
    assert init.architecture["num_key_value_heads"] == 2 and init.architecture["rope_theta"] == 10000.0


@pytest.mark.parametrize("change, message", [
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0}}, "RoPE type 'llama3'"),
    ({"attention_bias": True}, "no biases"),
    ({"hidden_act": "gelu"}, "SwiGLU"),
    ({"quantization_config": {"quant_method": "gptq"}}, "full-precision weights"),
    ({"quantization_config": {"quant_method": "bitnet"}}, "weight_scale is missing"),  # read as a ternary folder
    ({"num_key_value_heads": 3}, "multiple of num_key_value_heads"),
])
def test_load_llama_init_refuses_what_it_cannot_reproduce(llama_folder, tmp_path, change, message):
    from ternarylm.hf import HFError, load_llama_init

    folder = tmp_path / "llama"
    shutil.copytree(llama_folder, folder)
    edit_config(folder, **change)
    with pytest.raises(HFError, match=message):
        load_llama_init(str(folder))


def _bad_not_a_model(tmp_path, tok, llama):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.md").write_text("my notes")
    return folder, "no config.json"


def _bad_model_type(tmp_path, tok, llama):
    folder = tmp_path / "gpt2"
    shutil.copytree(llama, folder)
    edit_config(folder, model_type="gpt2")
    return folder, "model_type 'gpt2'; --init-from supports llama"


def _bad_no_tokenizer(tmp_path, tok, llama):
    return make_llama_folder(tmp_path / "no-tok", tok, with_tokenizer=False), "has no tokenizer"


def _bad_vocab(tmp_path, tok, llama):
    folder = make_llama_folder(tmp_path / "small-vocab", tok, vocab_size=280, with_tokenizer=False)
    save_tokenizer(tiny_tokenizer(vocab_size=320), folder)  # 320 tokens, 280 embedding rows
    return folder, "has 320 tokens but the model's embedding has 280 rows"


@pytest.mark.parametrize("bad", [_bad_not_a_model, _bad_model_type, _bad_no_tokenizer, _bad_vocab],
                         ids=["not-a-model", "model-type", "no-tokenizer", "vocab"])
def test_init_from_bad_folder_is_one_line_and_writes_nothing(bad, interop_tokenizer, llama_folder, tmp_path):
    folder, expected = bad(tmp_path, interop_tokenizer, llama_folder)
    run = tmp_path / "run"
    line = one_line_error(cli("ternarylm.cli.train", "--init-from", folder, "--out", run, *INIT_TRAIN,
                               check=False))
    assert expected in line, line
    assert not run.exists()
