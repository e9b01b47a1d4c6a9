"""ckpt.pt -> a Hugging Face folder (``ternary-export hf``): transformers loads it as a plain llama model,
without trust_remote_code, and computes our forward.

Tolerances (measured on this tiny model, see docs/HF.md): each decoder linear of the loaded model gives
our BitLinear's output to <= 1e-5 of its largest value on the same input (measured <= 7e-7); the whole
model's logits agree to <= 1e-2 of the largest logit (measured <= 1.4e-3: a float-rounding difference
upstream occasionally moves one 8-bit activation code across a rounding boundary, on ~1% of positions;
elsewhere the difference is ~4e-6), with the same argmax on >= 99% of positions and the same greedy
tokens. The dense paths (activation_bits 0, the fp twin) are a plain LlamaForCausalLM: <= 1e-5.
"""

from __future__ import annotations

import json

import pytest
import torch

from clitools import cli, one_line_error
from interop_tools import KEPT_FP
from ternarylm.format.compare import argmax_agreement, relative_max_diff

MODULE_TOL = 1e-5
MODEL_TOL = 1e-2


def _variant(ckpt_path, out_path, kind=None, precision=None, **quant):
    """The same weights with another quantisation config (or kind): no training needed."""
    from ternarylm.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    ckpt["config"] = {**ckpt["config"], "quant": {**ckpt["config"]["quant"], **quant}}
    if precision:
        ckpt["config"]["precision"] = precision
    if kind:
        ckpt["kind"] = kind
    return save_checkpoint({k: v for k, v in ckpt.items() if k not in ("format", "format_version")}, out_path)


def _inputs(n=6):
    from ternarylm.data.stories import synthetic_stories

    return list(synthetic_stories(n * 3, seed=9))


def _batch(tok, n=6, length=40):
    rows = [ids for ids in (tok.encode(t).ids for t in _inputs(n)) if len(ids) >= length][:n]
    return torch.tensor([r[:length] for r in rows])


def _ours(ckpt_path):
    from ternarylm.checkpoint import load_checkpoint, model_from_checkpoint

    return model_from_checkpoint(load_checkpoint(ckpt_path))


@pytest.mark.parametrize("layout", ["packed", "latent"])
def test_hf_folder_loads_without_remote_code_and_matches(layout, ternary_ckpt, interop_tokenizer, tmp_path):
    pytest.importorskip("accelerate", reason="transformers' BitNet quantizer needs accelerate to load")
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM
    from transformers.integrations.bitnet import AutoBitLinear, BitLinear

    from ternarylm.hf import export_hf

    result = export_hf(ternary_ckpt, tmp_path / "hf", layout=layout)
    assert result.layout == layout and len(result.ternary) == 13 and result.float_linears == [KEPT_FP]
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"] and "auto_map" not in cfg
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "bitnet" and qc["modules_to_not_convert"] == ["lm_head", KEPT_FP]
    assert (qc["linear_class"], qc["quantization_mode"]) == (
        ("bitlinear", "offline") if layout == "packed" else ("autobitlinear", "online"))
    with safe_open(str(tmp_path / "hf" / "model.safetensors"), "pt") as f:
        q = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
        assert q.dtype == (torch.uint8 if layout == "packed" else torch.float32)
        assert tuple(q.shape) == ((16, 64) if layout == "packed" else (64, 64))  # 4 trits per byte
        assert f.get_tensor(f"{KEPT_FP}.weight").dtype == torch.float32

    ours = _ours(ternary_ckpt)
    ids = _batch(interop_tokenizer)
    with torch.compiler.set_stance("force_eager"), torch.no_grad():  # skip the CPU compile of BitNet's kernels
        hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
        cls = BitLinear if layout == "packed" else AutoBitLinear
        assert isinstance(hf.model.layers[0].mlp.down_proj, cls)
        assert type(hf.get_submodule(KEPT_FP)) is torch.nn.Linear and type(hf.lm_head) is torch.nn.Linear

        # Layer by layer on the same input: the BitNet layer is our BitLinear.
        inputs = {}
        hooks = [m.register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0]))
                 for n, m in ours.named_modules() if n.endswith("_proj")]
        ref = ours(ids).logits
        for h in hooks:
            h.remove()
        for name, x in inputs.items():
            a, b = ours.get_submodule(name)(x), hf.get_submodule(name)(x)
            assert relative_max_diff(b, a) <= MODULE_TOL, name

        got = hf(ids).logits
        assert relative_max_diff(got, ref) <= MODEL_TOL
        assert argmax_agreement(got, ref) >= 0.99
        prompt = ids[:2, :8]
        g_hf = hf.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=1)
        g_ours = ours.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=1)
        assert (g_hf == g_ours).float().mean().item() >= 0.9


def test_dense_paths_are_a_plain_llama(ternary_ckpt, interop_tokenizer, tmp_path):
    """No activation quantisation (any granularity, 8-bit kept layers too) and the fp twin: a dense
    LlamaForCausalLM with the dequantised weights, no quantization_config, no accelerate needed."""
    from transformers import AutoModelForCausalLM

    from ternarylm.hf import export_hf

    ids = _batch(interop_tokenizer, n=3)
    act0 = _variant(ternary_ckpt, tmp_path / "act0.pt", granularity="channel", activation_bits=0,
                    keep_precision={KEPT_FP: 16, "model.layers.0.mlp.down_proj": 8})
    fp = _variant(ternary_ckpt, tmp_path / "fp.pt", precision="fp")
    for ckpt in (act0, fp):
        result = export_hf(ckpt, tmp_path / f"hf-{ckpt.stem}")
        assert result.layout == "dense" and result.ternary == [] and len(result.float_linears) == 14
        cfg = json.loads((result.path / "config.json").read_text())
        assert "quantization_config" not in cfg
        hf = AutoModelForCausalLM.from_pretrained(result.path).eval()
        with torch.no_grad():
            got, ref = hf(ids).logits, _ours(ckpt)(ids).logits
        assert relative_max_diff(got, ref) <= MODULE_TOL


def test_autotokenizer_and_generation_config(ternary_ckpt, interop_tokenizer, tmp_path):
    from transformers import AutoTokenizer, GenerationConfig

    from ternarylm.hf import export_hf

    out = export_hf(ternary_ckpt, tmp_path / "hf").path
    tok = AutoTokenizer.from_pretrained(out)
    text = _inputs(1)[0]
    assert tok(text)["input_ids"] == interop_tokenizer.encode(text).ids
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|endoftext|>", "<|pad|>", "<|endoftext|>")
    assert tok.decode(tok(text)["input_ids"]) == text
    gen = GenerationConfig.from_pretrained(out)
    assert (gen.eos_token_id, gen.pad_token_id, gen.bos_token_id) == (0, 1, 0)


def test_refusals_write_nothing(ternary_ckpt, tmp_path):
    from ternarylm.hf import export_hf

    cases = {
        "group": (_variant(ternary_ckpt, tmp_path / "group.pt", granularity="group", group_size=32),
                  "one scale per tensor"),
        "channel": (_variant(ternary_ckpt, tmp_path / "channel.pt", granularity="channel"), "--granularity tensor"),
        "int8": (_variant(ternary_ckpt, tmp_path / "int8.pt", keep_precision={"*.down_proj": 8}),
                 "kept at 8 bits"),
        "classifier": (_variant(ternary_ckpt, tmp_path / "cls.pt", kind="sequence-classification"),
                       "causal LMs"),
    }
    for name, (ckpt, expected) in cases.items():
        with pytest.raises(ValueError, match=expected):
            export_hf(ckpt, tmp_path / f"out-{name}")
        assert not (tmp_path / f"out-{name}").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        export_hf(ternary_ckpt, mine, force=True)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp folder left


def test_cli_hf_export(ternary_ckpt, tmp_path):
    out = tmp_path / "hf"
    proc = cli("ternarylm.export.cli", "hf", ternary_ckpt, "--out", out, env={"OMP_NUM_THREADS": "1"})
    assert f"wrote {out}" in proc.stdout and "13 ternary linears, 1 float" in proc.stdout, proc.stdout
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    line = one_line_error(cli("ternarylm.export.cli", "hf", ternary_ckpt, "--out", out, check=False))
    assert "already exists" in line and "--force" in line, line
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_ternarylm_save_pretrained_round_trip(ternary_ckpt, interop_tokenizer, tmp_path):
    """Our own class through save_pretrained/from_pretrained: exact (model_type ternarylm; AutoModel finds
    it once ternarylm.modeling is imported -- that is the trust_remote_code-free route for our class)."""
    from transformers import AutoModelForCausalLM

    from ternarylm.modeling import TernaryLMForCausalLM

    ours = _variant(ternary_ckpt, tmp_path / "ch.pt", granularity="channel",
                    keep_precision={KEPT_FP: 16, "model.layers.0.mlp.down_proj": 8})
    model = _ours(ours)
    model.save_pretrained(tmp_path / "own")
    ids = _batch(interop_tokenizer, n=2)
    for cls in (TernaryLMForCausalLM, AutoModelForCausalLM):
        loaded = cls.from_pretrained(tmp_path / "own").eval()
        assert type(loaded) is TernaryLMForCausalLM
        assert loaded.get_submodule("model.layers.0.mlp.down_proj").weight_bits == 8
        assert loaded.config.ternary_config().granularity == "channel"
        with torch.no_grad():
            assert torch.equal(loaded(ids).logits, model(ids).logits)
