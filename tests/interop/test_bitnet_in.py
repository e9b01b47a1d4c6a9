"""Hugging Face ternary folders in (``ternary-export onnx|verify FOLDER``): BitNet b1.58 as the hub stores it
(packed 2-bit + weight_scale, bf16 master weights, AutoBitLinear trits), our own ``ternary-export hf`` output
and ``save_pretrained`` folder. Every CPU target is exported and run; onnxruntime, the NumPy runtime and
onnxruntime-genai are compared with transformers' own ``BitNetForCausalLM`` forward.

Tolerances (relative max |logit difference|, ``ternarylm.format.compare``): ``portable`` computes what
transformers computes (ternary weights, per-token int8 activations), so 1e-3 (float summation order only);
``ort-*`` quantise activations per block inside MatMulNBits: the targets' verify bound, 0.05; greedy tokens
must be identical on every engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clitools import cli, one_line_error
from interop_tools import BITNET_LAYOUTS, edit_config, make_bitnet_folder, make_llama_folder

PROMPT = "Once upon a time"
NEW_TOKENS = 12
FLOAT_ENDS = ["--embedding", "float", "--lm-head", "float"]  # random weights: keep the head out of the comparison
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def bitnet_folders(tmp_path_factory, interop_tokenizer):
    root = tmp_path_factory.mktemp("bitnet")
    return {layout: make_bitnet_folder(root / layout, interop_tokenizer, layout=layout, seed=i)
            for i, layout in enumerate(BITNET_LAYOUTS)}


def _transformers(folder):
    from ternarylm.hf.ternary_in import checkpoint_from_hf, transformers_model

    return transformers_model(checkpoint_from_hf(str(folder)))


def _hf_greedy(model, prompt_ids, n):
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        x = torch.tensor([prompt_ids])
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=1)
        full = out[0].tolist()
        logits = model(torch.tensor([full])).logits[0].float().numpy()
    return full[len(prompt_ids):], full, logits


def _engine_logits(engine, ids):
    engine.reset()
    return engine.forward(np.array([ids], np.int64))[0]


@pytest.mark.parametrize("layout", BITNET_LAYOUTS)
def test_bitnet_folder_to_verified_ort_cpu_export_with_one_command(bitnet_folders, layout, tmp_path):
    """The issue's "done when": one command exports, ``verify`` holds it to transformers' forward, and
    onnxruntime, the NumPy runtime and onnxruntime-genai all decode transformers' greedy tokens."""
    from ternarylm.format.compare import relative_max_diff
    from ternarylm.runtime_py import generate, load_engine, load_tokenizer

    folder, out = bitnet_folders[layout], tmp_path / "ort-cpu"
    proc = cli("ternarylm.export.cli", "onnx", folder, "--out", out, "--target", "ort-cpu", *FLOAT_ENDS, env=ONE_THREAD)
    assert f"wrote {out}" in proc.stdout
    config = json.loads((out / "config.json").read_text())
    arch = config["architecture"]
    assert arch["hidden_act"] == "relu2" and arch["sub_norms"] is True and arch["num_key_value_heads"] == 2
    assert config["format_version"] == 2 and arch["rope_theta"] == 500000.0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["source_hf"]["model_type"] == "bitnet"
    report_path = tmp_path / "verify.json"
    proc = cli("ternarylm.export.cli", "verify", out, "--ckpt", folder, "--json", report_path, env=ONE_THREAD)
    assert "verification passed" in proc.stdout, proc.stdout
    report = json.loads(report_path.read_text())
    assert report["reference"] == "transformers"
    for engine, result in report["engines"].items():
        assert result["greedy_agreement"] == 1.0 and result["max_logit_diff"] <= 0.05, (engine, result)

    hf = _transformers(folder)
    prompt = load_tokenizer(out).encode(PROMPT).ids
    want, full, ref = _hf_greedy(hf, prompt, NEW_TOKENS)
    for name in ("ort", "numpy"):
        engine = load_engine(out, engine=name)
        assert generate(engine, prompt, max_new_tokens=NEW_TOKENS)[0] == want, name
        assert relative_max_diff(_engine_logits(engine, full), ref) <= 0.05, name
    og = pytest.importorskip("onnxruntime_genai")
    model = og.Model(str(out))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + NEW_TOKENS, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    while not generator.is_done():
        generator.generate_next_token()
    assert list(generator.get_sequence(0))[len(prompt):] == want


@pytest.mark.parametrize("layout", BITNET_LAYOUTS)
def test_every_cpu_target_runs_the_bitnet_folder(bitnet_folders, layout, tmp_path):
    """portable (the custom op, standard ONNX ops), ort-arm64-nodot (4-bit MatMulNBits), the fp32 twin and
    ort-cuda's graph, exported from the folder and run in onnxruntime and the NumPy runtime. The NumPy runtime
    computes per-token activation quantisation as transformers does: its greedy tokens are transformers' on every
    ternary target. onnxruntime equals transformers to float rounding on portable; on ort-arm64-nodot MatMulNBits
    quantises activations per block, so it is held to verify's measures (teacher-forced argmax agreement, 0.05).
    The fp32 / fp16 twins drop activation quantisation: ORT and NumPy must agree with each other."""
    import onnx

    from ternarylm.export.api import export_checkpoint
    from ternarylm.format.compare import argmax_agreement, relative_max_diff
    from ternarylm.runtime_py import generate, load_engine, load_tokenizer

    folder = bitnet_folders[layout]
    hf = _transformers(folder)
    for target in ("portable", "ort-arm64-nodot", "fp32", "fp16", "ort-cuda"):
        out = export_checkpoint(str(folder), tmp_path / target, target=target, embedding="float", lm_head="float")
        if target == "ort-cuda":  # no CUDA here: the graph is checked, not run
            onnx.checker.check_model(str(out / "model.onnx"))
            continue
        prompt = load_tokenizer(out).encode(PROMPT).ids
        want, full, ref = _hf_greedy(hf, prompt, NEW_TOKENS)
        ort, numpy = load_engine(out, engine="ort"), load_engine(out, engine="numpy")
        got = {"ort": _engine_logits(ort, full), "numpy": _engine_logits(numpy, full)}
        if target in ("fp32", "fp16"):  # fp16: relu2 and the sub-norms run in float32 inside the graph
            assert relative_max_diff(got["ort"], got["numpy"]) <= (1e-4 if target == "fp32" else 1e-2)
            continue
        assert generate(numpy, prompt, max_new_tokens=NEW_TOKENS)[0] == want, target
        assert relative_max_diff(got["numpy"], ref) <= 1e-3, target
        if target == "portable":
            assert generate(ort, prompt, max_new_tokens=NEW_TOKENS)[0] == want
            assert relative_max_diff(got["ort"], ref) <= 1e-3
        else:
            assert relative_max_diff(got["ort"], ref) <= 0.05 and argmax_agreement(got["ort"], ref) >= 0.9


def test_export_time_precision_override_on_a_bitnet_folder(bitnet_folders, tmp_path):
    """``--keep-precision`` on a folder whose trits are held as int8: the overridden layers are made latent and
    quantised to 8 bits, the rest stay the stored trits; verify then holds the export to our own model with the
    same plan (transformers cannot apply it) and it passes at portable's bound."""
    from ternarylm.export.api import export_checkpoint
    from ternarylm.export.verify import verify_export

    folder = bitnet_folders["packed"]
    out = export_checkpoint(str(folder), tmp_path / "keep8", target="portable", embedding="float", lm_head="float",
                            keep_precision={"*.down_proj": 8})
    config = json.loads((out / "config.json").read_text())
    assert config["export"]["keep_precision"] == {"model.layers.0.mlp.down_proj": 8, "model.layers.1.mlp.down_proj": 8}
    report = verify_export(out, str(folder))
    assert report["reference"] == "ternarylm" and report["passed"], report
    for result in report["engines"].values():
        assert result["greedy_agreement"] == 1.0 and result["max_logit_diff"] <= 1e-2


def test_imported_checkpoint_is_transformers_model(bitnet_folders):
    """The checkpoint dict read from a packed folder rebuilds (our PyTorch model: BitNet's decoder layers with
    BitLinear) to transformers' forward, and its latent weights ternarise back to exactly the stored trits."""
    from safetensors.torch import load_file
    from transformers.integrations.bitnet import unpack_weights

    from ternarylm.checkpoint import latent_weights, model_from_checkpoint
    from ternarylm.format.compare import relative_max_diff
    from ternarylm.hf.ternary_in import checkpoint_from_hf, transformers_model
    from ternarylm.quantization import ternary_weight

    folder = bitnet_folders["packed"]
    ckpt = checkpoint_from_hf(str(folder))
    assert ckpt["config"]["quant"]["granularity"] == "tensor" and ckpt["config"]["tie_word_embeddings"] is True
    stored = load_file(str(folder / "model.safetensors"))
    name = "model.layers.1.mlp.down_proj"
    gamma = 1.0 / stored[f"{name}.weight_scale"].float().item()
    kept = ckpt["model"][f"{name}.weight"]  # in memory: the stored trits themselves, and gamma beside them
    assert kept.dtype == torch.int8 and torch.equal(kept.float(), unpack_weights(stored[f"{name}.weight"], torch.float32))
    assert abs(ckpt["trit_scales"][name] - gamma) <= 1e-6 * gamma
    trits, scales = ternary_weight(latent_weights(ckpt)[f"{name}.weight"], "tensor")  # where a model is built
    assert torch.equal(trits, kept) and abs(scales[0, 0].item() - gamma) <= 1e-6 * gamma
    ours, theirs = model_from_checkpoint(ckpt), transformers_model(ckpt)
    ids = torch.randint(0, ckpt["config"]["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        assert relative_max_diff(ours(ids).logits.numpy(), theirs(ids).logits.numpy()) <= 1e-3


def test_our_hf_folders_come_back_in(ternary_ckpt, tmp_path):
    """Our ``ternary-export hf`` output (a BitNet-quantised Llama, packed) and ``save_pretrained`` of our model
    export to the same portable model as the ckpt.pt they came from."""
    from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint
    from ternarylm.export.api import export_checkpoint
    from ternarylm.format.compare import relative_max_diff
    from ternarylm.hf import export_hf
    from ternarylm.runtime_py import load_engine

    direct = export_checkpoint(ternary_ckpt, tmp_path / "direct", target="portable", embedding="float",
                               lm_head="float")
    hf_packed = export_hf(ternary_ckpt, tmp_path / "hf").path
    pretrained = tmp_path / "pretrained"
    model = model_from_checkpoint(load_checkpoint(ternary_ckpt))
    model.save_pretrained(str(pretrained))
    (pretrained / "tokenizer.json").write_text(load_checkpoint(ternary_ckpt)["tokenizer_json"])
    ids = list(range(2, 30))
    ref = _engine_logits(load_engine(direct, engine="ort"), ids)
    for folder in (hf_packed, pretrained):
        out = export_checkpoint(str(folder), tmp_path / f"{folder.name}-portable", target="portable",
                                embedding="float", lm_head="float")
        got = _engine_logits(load_engine(out, engine="ort"), ids)
        assert relative_max_diff(got, ref) <= 1e-5, folder.name
        config = json.loads((out / "config.json").read_text())
        assert config["export"]["keep_precision"] == json.loads(
            (direct / "config.json").read_text())["export"]["keep_precision"]
        assert config["format_version"] == 1  # the paper's architecture: readable by older ternarylm


def test_bitnet_checkpoint_goes_back_out_as_bitnet(bitnet_folders, tmp_path):
    """BitNet in, ckpt.pt, ``ternary-export hf`` out: a ``bitnet`` folder (BitNetForCausalLM, relu2, tied) whose
    transformers forward is the original folder's, with the same packed trits."""
    from safetensors.torch import load_file

    from ternarylm.checkpoint import save_checkpoint
    from ternarylm.format.compare import relative_max_diff
    from ternarylm.hf import export_hf
    from ternarylm.hf.ternary_in import checkpoint_from_hf, transformers_model

    source = bitnet_folders["packed"]
    ckpt = checkpoint_from_hf(str(source))
    path = save_checkpoint({k: v for k, v in ckpt.items() if k not in ("format", "format_version", "hf_source")},
                           tmp_path / "ckpt.pt")  # the in-memory trits are written as latent weights
    import torch as _torch

    assert _torch.load(path, weights_only=True)["format_version"] == 2  # BitNet's fields: version 2
    out = export_hf(path, tmp_path / "out").path
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "bitnet" and cfg["hidden_act"] == "relu2" and cfg["tie_word_embeddings"] is True
    before, after = load_file(str(source / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert "lm_head.weight" not in after
    name = "model.layers.0.self_attn.v_proj.weight"
    assert torch.equal(before[name], after[name])
    ids = torch.randint(0, cfg["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(1))
    back = checkpoint_from_hf(str(out))
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        a = transformers_model(ckpt)(ids).logits.numpy()
        b = transformers_model(back)(ids).logits.numpy()
    assert relative_max_diff(b, a) <= 1e-3


def _refused(*args, tmp_path):
    out = tmp_path / "never"
    proc = cli("ternarylm.export.cli", "onnx", *args, "--out", out, check=False)
    line = one_line_error(proc)
    assert not out.exists()
    return line


def test_bad_hf_folders_are_refused_in_one_line(interop_tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    def folder(name, **kw):
        return make_bitnet_folder(tmp_path / name, interop_tokenizer, **kw)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a Hugging Face model folder" in _refused(empty, tmp_path=tmp_path)

    other = folder("gpt2")
    edit_config(other, model_type="gpt2")
    line = _refused(other, tmp_path=tmp_path)
    assert "model_type 'gpt2'" in line and "bitnet" in line and "ternarylm" in line

    no_scale = folder("no-scale")
    state = load_file(str(no_scale / "model.safetensors"))
    del state["model.layers.0.mlp.up_proj.weight_scale"]
    save_file(state, str(no_scale / "model.safetensors"))
    assert "model.layers.0.mlp.up_proj.weight_scale is missing" in _refused(no_scale, tmp_path=tmp_path)

    not_trits = folder("not-trits")
    state = load_file(str(not_trits / "model.safetensors"))
    state["model.layers.1.self_attn.k_proj.weight"][0, 0] = 0b11  # code 3
    save_file(state, str(not_trits / "model.safetensors"))
    assert "code 3, which is not a trit" in _refused(not_trits, tmp_path=tmp_path)

    float_not_trits = folder("float-not-trits", layout="autobitlinear")
    state = load_file(str(float_not_trits / "model.safetensors"))
    state["model.layers.0.self_attn.q_proj.weight"][3, 3] = 0.5
    save_file(state, str(float_not_trits / "model.safetensors"))
    assert "holds 0.5, not a trit" in _refused(float_not_trits, tmp_path=tmp_path)

    no_tok = folder("no-tokenizer", with_tokenizer=False)
    assert "has no tokenizer" in _refused(no_tok, tmp_path=tmp_path)

    small_vocab = folder("small-vocab", vocab_size=interop_tokenizer.get_vocab_size() - 8)
    assert "vocabulary does not match the embedding" in _refused(small_vocab, tmp_path=tmp_path)

    wrong_rows = folder("wrong-rows")
    edit_config(wrong_rows, vocab_size=interop_tokenizer.get_vocab_size() + 4)
    assert "does not match the embedding" in _refused(wrong_rows, tmp_path=tmp_path)

    llama = make_llama_folder(tmp_path / "llama", interop_tokenizer)
    assert "--init-from" in _refused(llama, tmp_path=tmp_path)

    assert "does not exist" in _refused(tmp_path / "missing" / "model", tmp_path=tmp_path)

    proc = cli("ternarylm.export.cli", "gguf", folder("for-gguf"), "--type", "tq2_0", "--out", tmp_path / "m.gguf",
               check=False)
    assert "export it with ternary-export onnx" in one_line_error(proc) and not (tmp_path / "m.gguf").exists()


def test_init_from_a_bitnet_folder_continues_qat(bitnet_folders, tmp_path):
    """``ternary-train --init-from`` a packed BitNet folder: the run keeps BitNet's architecture (relu2, sub-norms,
    tied head) and starts from weights that ternarise to the folder's trits; it exports and verifies as usual."""
    from ternarylm.checkpoint import load_checkpoint
    from ternarylm.hf.ternary_in import checkpoint_from_hf
    from ternarylm.quantization import ternary_weight

    folder, run = bitnet_folders["packed"], tmp_path / "run"
    proc = cli("ternarylm.cli.train", "--init-from", folder, "--out", run, "--stories", "200", "--max-steps", "2",
               "--eval-every", "2", "--eval-batches", "1", "--batch-size", "4", "--seq-len", "32",
               "--warmup-steps", "1", "--lr", "1e-6", "--no-progress", "--threads", "1")
    assert "is ternary (bitnet, packed-bitlinear)" in proc.stdout, proc.stdout
    ckpt = load_checkpoint(run / "ckpt.pt")
    cfg = ckpt["config"]
    assert (cfg["hidden_act"], cfg["sub_norms"], cfg["tie_word_embeddings"]) == ("relu2", True, True)
    assert ckpt["format_version"] == 2
    source = checkpoint_from_hf(str(folder))["model"]  # int8 trits in memory
    name = "model.layers.0.mlp.gate_proj.weight"
    same = (ternary_weight(ckpt["model"][name])[0] == source[name]).float().mean().item()
    assert same > 0.99, same  # two steps at lr 1e-6 keep the trits
    export = tmp_path / "export"
    cli("ternarylm.export.cli", "onnx", run / "ckpt.pt", "--out", export, *FLOAT_ENDS, env=ONE_THREAD)
    proc = cli("ternarylm.export.cli", "verify", export, "--ckpt", run / "ckpt.pt", "--max-new-tokens", "8",
               env=ONE_THREAD)
    assert "verification passed" in proc.stdout, proc.stdout
