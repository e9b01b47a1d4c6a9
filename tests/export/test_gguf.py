"""ternary-export gguf: the file reads back with gguf.GGUFReader to exactly the checkpoint's trits.

A tiny Llama whose sizes fit TQ blocks (hidden 256, intermediate 512, 4 heads, 2 KV heads), random
latent weights ternarised (no training needed: the mapping, not the model, is under test).

Tolerances:
- ternary linears (TQ2_0 / TQ1_0 / Q4_0): dequantised == trits x fp16(scale), bit for bit; against the
  float32 scales the relative error is <= 2**-11 (fp16 rounding of the block scale, the format's only
  approximation). The trits themselves are checked exactly.
- kept 8-bit / 4-bit layers (Q8_0 / Q4_0): codes x fp16(scale), bit for bit.
- 16-bit layers, F16 embedding/head: float16 of the float32 weights, bit for bit.
- Q8_0 embedding/head (llama.cpp's quantiser on float weights): per block of 32,
  |error| <= amax * (1/254 + 2**-11) (half a step of amax/127, plus fp16 rounding of that step).
"""

from __future__ import annotations

import fnmatch
import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from clitools import cli
from modeltools import save_lm_checkpoint
from ternarylm.export.gguf import export_gguf, permutation

from ternarylm.quantization import int_weight, ternary_weight

ARCH = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-6)
# Mixed precision: q kept at 8 (splits the fused q/k/v into parts), one down_proj at 4, one o_proj at 16.
PLAN = {"*.q_proj": 8, "model.layers.1.mlp.down_proj": 4, "model.layers.0.self_attn.o_proj": 16}
LLAMA_KEYS = ("general.architecture", "general.name", "general.file_type", "general.quantization_version",
              "llama.vocab_size", "llama.context_length", "llama.embedding_length", "llama.block_count",
              "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
              "llama.attention.key_length", "llama.attention.value_length", "llama.rope.dimension_count",
              "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
              "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
              "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
              "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token")
MODULES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
           "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
           "ffn_down": "mlp.down_proj"}


@pytest.fixture(scope="module")
def tokenizer():
    from ternarylm.data.stories import synthetic_stories
    from ternarylm.data.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(synthetic_stories(150), vocab_size=320)


def _save(root, name, tokenizer, kind="causal-lm", **overrides):
    from ternarylm.configuration import TernaryLMConfig
    from ternarylm.modeling import TernaryLMForCausalLM

    fields = {**ARCH, "vocab_size": tokenizer.get_vocab_size(), "eos_token_id": 0, "pad_token_id": 1, **overrides}
    cfg = TernaryLMConfig(**fields)
    torch.manual_seed(0)
    state = TernaryLMForCausalLM(cfg).state_dict()
    path = save_lm_checkpoint(root / name / "ckpt.pt", state, cfg, tokenizer, step=7)
    if kind != "causal-lm":
        from ternarylm.checkpoint import load_checkpoint, save_checkpoint

        ckpt = load_checkpoint(path)
        ckpt.pop("format"), ckpt.pop("format_version")
        save_checkpoint({**ckpt, "kind": kind}, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("gguf_ckpts")
    return {
        "channel": _save(root, "channel", tokenizer, quant={"granularity": "channel"}),
        "mixed": _save(root, "mixed", tokenizer, quant={"granularity": "tensor", "keep_precision": PLAN}),
        "group": _save(root, "group", tokenizer, quant={"granularity": "group", "group_size": 64}),
        "narrow": _save(root, "narrow", tokenizer, hidden_size=384, intermediate_size=1024, num_attention_heads=6,
                        num_key_value_heads=6),  # the `small` preset's widths
        "fp": _save(root, "fp", tokenizer, precision="fp"),
        "classifier": _save(root, "classifier", tokenizer, kind="sequence-classification"),
    }


def _read(path):
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    return reader, tensors


def _field(reader, key):
    """A metadata value: scalar, string, or list (strings or numbers), without ReaderField.contents()
    (absent from older gguf releases)."""
    f = reader.fields[key]
    types = list(f.types)
    if types[0] == gguf.GGUFValueType.ARRAY:
        if types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]


def _deq(t):
    """Dequantised tensor as [rows, cols] float32 (GGUF shapes are stored innermost first)."""
    out = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
    rows_cols = [int(x) for x in reversed(list(t.shape))]
    return np.asarray(out, dtype=np.float32).reshape(rows_cols)


def _expected(state, module, cfg_quant, plan):
    """What a linear must read back as: (exact dequantised weight, float32-scale weight, trits or None)."""
    w = state[f"{module}.weight"].float()
    bits = max([b for p, b in plan.items() if fnmatch.fnmatch(module, p)], default=2)
    if bits == 16:
        x = w.numpy().astype(np.float16).astype(np.float32)
        return x, w.numpy(), None
    if bits in (4, 8):
        codes, scales = int_weight(w, bits)
        c, s = codes.numpy().astype(np.float32), np.repeat(scales.numpy(), 32, axis=1)
        return c * s.astype(np.float16).astype(np.float32), c * s, None
    trits, scales = ternary_weight(w, cfg_quant.get("granularity", "tensor"), cfg_quant.get("group_size"))
    t = trits.numpy().astype(np.float32)
    s = np.repeat(scales.numpy(), w.shape[1] // scales.shape[1], axis=1)
    return t * s.astype(np.float16).astype(np.float32), t * s, trits.numpy()


def _check_linears(path, ckpt_path, qtype_name, plan=None, quant=None):
    from ternarylm.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    state, plan, quant = ckpt["model"], plan or {}, quant or ckpt["config"]["quant"]
    reader, tensors = _read(path)
    heads = {"attn_q": ARCH["num_attention_heads"], "attn_k": ARCH["num_key_value_heads"]}
    seen = {}
    for i in range(ARCH["num_hidden_layers"]):
        for short, module in MODULES.items():
            t = tensors[f"blk.{i}.{short}.weight"]
            exact, f32, trits = _expected(state, f"model.layers.{i}.{module}", quant, plan)
            if short in heads:  # llama.cpp's row order for q/k (interleaved RoPE pairs)
                idx = permutation(exact.shape[0], heads[short])
                exact, f32, trits = exact[idx], f32[idx], None if trits is None else trits[idx]
            got = _deq(t)
            np.testing.assert_array_equal(got, exact, err_msg=t.name)
            rel = np.abs(got - f32).max() / np.abs(f32).max()
            if trits is not None:
                assert rel <= 2.0 ** -11, (t.name, rel)
                np.testing.assert_array_equal(np.sign(got).astype(np.int8), trits, err_msg=t.name)
            seen[t.tensor_type.name] = seen.get(t.tensor_type.name, 0) + 1
        for norm, src in (("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm")):
            t = tensors[f"blk.{i}.{norm}.weight"]
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(_deq(t).ravel(), state[f"model.layers.{i}.{src}.weight"].numpy())
    assert tensors["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    np.testing.assert_array_equal(_deq(tensors["output_norm.weight"]).ravel(), state["model.norm.weight"].numpy())
    assert qtype_name in seen
    return reader, tensors, state, seen


def _check_float(t, w, kind):
    got = _deq(t)
    assert t.tensor_type.name == kind.upper() and got.shape == w.shape
    if kind == "f16":
        np.testing.assert_array_equal(got, w.astype(np.float16).astype(np.float32))
        return
    amax = np.abs(w.reshape(w.shape[0], -1, 32)).max(axis=2, keepdims=True)
    err = np.abs((got - w).reshape(w.shape[0], -1, 32))
    step = {"q8_0": 1 / 254, "q4_0": 1 / 8}[kind]  # half a step; Q4_0's +8 clamps to 7 (a whole step, amax/8)
    assert np.all(err <= amax * (step + 2.0 ** -11) * 1.001 + 1e-12), float((err / amax).max())


@pytest.mark.parametrize("qtype", ["tq2_0", "tq1_0"])
def test_tq_reads_back_exact_with_llama_metadata(ckpts, tokenizer, tmp_path, qtype):
    out = tmp_path / f"m-{qtype}.gguf"
    result = export_gguf(ckpts["channel"], out, qtype=qtype)
    assert result.path == out and out.stat().st_size == result.n_bytes
    assert 0 < result.max_scale_rounding <= 2.0 ** -11
    reader, tensors, state, seen = _check_linears(out, ckpts["channel"], qtype.upper())
    assert seen == {qtype.upper(): 14}
    _check_float(tensors["token_embd.weight"], state["model.embed_tokens.weight"].numpy(), "q8_0")
    _check_float(tensors["output.weight"], state["lm_head.weight"].numpy(), "q8_0")
    assert len(tensors) == 3 + 9 * ARCH["num_hidden_layers"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left

    # every key llama.cpp's llama loader reads, with the checkpoint's values
    missing = [k for k in LLAMA_KEYS if k not in reader.fields]
    assert not missing
    v = lambda k: _field(reader, k)
    assert v("general.architecture") == "llama" and v("general.name") == "channel"
    ftype = {"tq2_0": gguf.LlamaFileType.MOSTLY_TQ2_0, "tq1_0": gguf.LlamaFileType.MOSTLY_TQ1_0}[qtype]
    assert v("general.file_type") == int(ftype) and v("general.quantization_version") == gguf.GGML_QUANT_VERSION
    expect = {"llama.vocab_size": tokenizer.get_vocab_size(), "llama.context_length": 128,
              "llama.embedding_length": 256, "llama.block_count": 2, "llama.feed_forward_length": 512,
              "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
              "llama.attention.key_length": 64, "llama.attention.value_length": 64, "llama.rope.dimension_count": 64}
    assert {k: v(k) for k in expect} == expect
    assert v("llama.rope.freq_base") == pytest.approx(10000.0)
    assert v("llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6, rel=1e-6)
    assert tensors["token_embd.weight"].shape.tolist() == [256, tokenizer.get_vocab_size()]  # ne0 = hidden

    # tokenizer: llama.cpp's gpt2 BPE with the GPT-2 regex, our tokens, merges and special ids
    assert v("tokenizer.ggml.model") == "gpt2" and v("tokenizer.ggml.pre") == "gpt-2"
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    assert v("tokenizer.ggml.tokens") == sorted(vocab, key=vocab.get)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    assert v("tokenizer.ggml.merges") == [m if isinstance(m, str) else " ".join(m) for m in merges]
    types = v("tokenizer.ggml.token_type")
    assert types[0] == types[1] == int(gguf.TokenType.CONTROL)  # <|endoftext|>, <|pad|>
    assert set(types[2:]) == {int(gguf.TokenType.NORMAL)}
    assert (v("tokenizer.ggml.bos_token_id"), v("tokenizer.ggml.eos_token_id"),
            v("tokenizer.ggml.padding_token_id")) == (0, 0, 1)
    assert v("tokenizer.ggml.add_bos_token") is False and v("tokenizer.ggml.add_eos_token") is False
    assert v("ternarylm.scale_granularity") == "channel" and v("ternarylm.source_step") == 7


def test_q4_0_head_and_embedding(ckpts, tmp_path):
    """``--lm-head/--embedding q4_0``: llama.cpp's Q4_0 of the float tables, read back within its bound; the
    file is smaller than with Q8_0 by exactly the two tables' difference (4.5 vs 8.5 bits per weight)."""
    q8, q4 = tmp_path / "q8.gguf", tmp_path / "q4.gguf"
    export_gguf(ckpts["channel"], q8, qtype="tq2_0")
    export_gguf(ckpts["channel"], q4, qtype="tq2_0", lm_head="q4_0", embedding="q4_0")
    _, tensors, state, seen = _check_linears(q4, ckpts["channel"], "TQ2_0")
    assert seen == {"TQ2_0": 14}
    _check_float(tensors["token_embd.weight"], state["model.embed_tokens.weight"].numpy(), "q4_0")
    _check_float(tensors["output.weight"], state["lm_head.weight"].numpy(), "q4_0")
    tables = state["model.embed_tokens.weight"].numel() + state["lm_head.weight"].numel()
    saved = q8.stat().st_size - q4.stat().st_size
    assert abs(saved - tables * (34 - 18) // 32) < 64  # Q8_0 34 bytes per 32, Q4_0 18 (metadata alignment aside)


def test_mixed_precision_group_scales_and_f16(ckpts, tmp_path):
    """Kept layers -> Q8_0 / Q4_0 / F16 (exact codes), group scales exact in Q4_0, F16 head/embedding."""
    out = tmp_path / "mixed.gguf"
    export_gguf(ckpts["mixed"], out, qtype="tq2_0", lm_head="f16", embedding="f16")
    _, tensors, state, seen = _check_linears(out, ckpts["mixed"], "TQ2_0", plan=PLAN)
    assert seen == {"TQ2_0": 10, "Q8_0": 2, "Q4_0": 1, "F16": 1}
    _check_float(tensors["token_embd.weight"], state["model.embed_tokens.weight"].numpy(), "f16")
    _check_float(tensors["output.weight"], state["lm_head.weight"].numpy(), "f16")

    out = tmp_path / "group.gguf"
    export_gguf(ckpts["group"], out, qtype="q4_0")
    _, _, _, seen = _check_linears(out, ckpts["group"], "Q4_0")
    assert seen == {"Q4_0": 14}


def test_qk_permutation_keeps_attention_scores(ckpts, tmp_path):
    """HF Llama (rotate-half RoPE) on the checkpoint's q/k == llama.cpp's layout (adjacent-pair RoPE,
    ggml's mode 0) on the GGUF's q/k: the same attention logits at every head and position pair."""
    out = tmp_path / "m.gguf"
    export_gguf(ckpts["channel"], out, qtype="tq2_0")
    _, tensors = _read(out)
    from ternarylm.checkpoint import load_checkpoint

    state = load_checkpoint(ckpts["channel"])["model"]
    quant = {"granularity": "channel"}
    wq_hf, _, _ = _expected(state, "model.layers.0.self_attn.q_proj", quant, {})
    wk_hf, _, _ = _expected(state, "model.layers.0.self_attn.k_proj", quant, {})
    wq_g, wk_g = _deq(tensors["blk.0.attn_q.weight"]), _deq(tensors["blk.0.attn_k.weight"])
    h, kvh, hd, theta = 4, 2, 64, ARCH["rope_theta"]
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)

    def rope_hf(x, p):  # x [heads, hd]: rotate (x_i, x_{i+hd/2})
        c, s = np.cos(p * inv), np.sin(p * inv)
        a, b = x[:, :hd // 2], x[:, hd // 2:]
        return np.concatenate([a * c - b * s, b * c + a * s], axis=1)

    def rope_ggml(x, p):  # ggml rope mode 0: rotate adjacent pairs (x_2i, x_2i+1)
        c, s = np.cos(p * inv), np.sin(p * inv)
        a, b = x[:, 0::2], x[:, 1::2]
        y = np.empty_like(x)
        y[:, 0::2], y[:, 1::2] = a * c - b * s, a * s + b * c
        return y

    rng = np.random.default_rng(0)
    xq, xk = rng.standard_normal(256), rng.standard_normal(256)
    group = h // kvh
    for pq, pk in ((5, 2), (17, 17), (100, 3)):
        q_hf = rope_hf((wq_hf.astype(np.float64) @ xq).reshape(h, hd), pq)
        k_hf = rope_hf((wk_hf.astype(np.float64) @ xk).reshape(kvh, hd), pk)
        q_g = rope_ggml((wq_g.astype(np.float64) @ xq).reshape(h, hd), pq)
        k_g = rope_ggml((wk_g.astype(np.float64) @ xk).reshape(kvh, hd), pk)
        s_hf = np.array([q_hf[i] @ k_hf[i // group] for i in range(h)])
        s_g = np.array([q_g[i] @ k_g[i // group] for i in range(h)])
        np.testing.assert_allclose(s_g, s_hf, rtol=1e-9, atol=1e-9 * np.abs(s_hf).max())
    # without the permutation the scores would differ (the check has teeth)
    q_bad = rope_ggml((wq_hf.astype(np.float64) @ xq).reshape(h, hd), 5)
    k_bad = rope_ggml((wk_hf.astype(np.float64) @ xk).reshape(kvh, hd), 2)
    s_bad = np.array([q_bad[i] @ k_bad[i // group] for i in range(h)])
    assert not np.allclose(s_bad, s_hf, rtol=1e-3)


def test_cli_writes_and_refuses_bad_input(ckpts, tmp_path):
    out = tmp_path / "cli.gguf"
    ok = cli("ternarylm.export.cli", "gguf", ckpts["channel"], "--type", "tq1_0", "--out", out)
    assert "wrote" in ok.stdout and out.is_file()
    before = out.read_bytes()

    def refused(*args, contains, target=None):
        target = target or tmp_path / "bad.gguf"
        proc = cli("ternarylm.export.cli", "gguf", *args, "--out", target, check=False)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and contains in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
        return lines[0]

    refused(ckpts["fp"], "--type", "tq2_0", contains="full precision")
    refused(ckpts["classifier"], "--type", "tq2_0", contains="sequence-classification")
    refused(ckpts["narrow"], "--type", "tq2_0", contains="hidden_size 384 is not a multiple of 256")
    refused(ckpts["group"], "--type", "tq1_0", contains="group_size 64")
    refused(ckpts["channel"], "--type", "tq2_0", contains="already exists", target=out)
    assert out.read_bytes() == before  # the refused run left the existing file alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.gguf"]  # nothing else written, no temp files

    cli("ternarylm.export.cli", "gguf", ckpts["channel"], "--type", "tq2_0", "--out", out, "--force",
        "--embedding", "q4_0")
    _, tensors = _read(out)
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.TQ2_0
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.Q4_0
    assert tensors["output.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0


def test_narrow_model_goes_out_exactly_as_q4_0(ckpts, tmp_path):
    """The `small` preset's 384-wide rows do not fit TQ blocks; q4_0 holds the same trits exactly."""
    out = tmp_path / "narrow.gguf"
    export_gguf(ckpts["narrow"], out, qtype="q4_0")
    reader, tensors = _read(out)
    from ternarylm.checkpoint import load_checkpoint

    state = load_checkpoint(ckpts["narrow"])["model"]
    exact, _, _ = _expected(state, "model.layers.1.mlp.down_proj", {"granularity": "tensor"}, {})
    np.testing.assert_array_equal(_deq(tensors["blk.1.ffn_down.weight"]), exact)
    assert _field(reader, "general.file_type") == int(gguf.LlamaFileType.MOSTLY_Q4_0)


def test_tokenizer_metadata_pads_and_refuses(tokenizer, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from ternarylm.export.gguf import tokenizer_metadata

    n = tokenizer.get_vocab_size()
    kv = {k: v for k, v, _ in tokenizer_metadata(tokenizer.to_str(), n + 3)}
    assert kv["tokenizer.ggml.tokens"][n:] == [f"[PAD{i}]" for i in range(n, n + 3)]  # a pinned, larger vocab
    assert kv["tokenizer.ggml.token_type"][n:] == [int(gguf.TokenType.UNUSED)] * 3
    with pytest.raises(ValueError, match="vocab_size is 10"):
        tokenizer_metadata(tokenizer.to_str(), 10)
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match="not a plain byte-level BPE"):
        tokenizer_metadata(wordpiece.to_str(), 2)


def test_q8_0_head_needs_hidden_multiple_of_32(tokenizer, tmp_path):
    path = _save(tmp_path, "odd", tokenizer, hidden_size=48, intermediate_size=96, num_attention_heads=2,
                 num_key_value_heads=2)
    with pytest.raises(ValueError, match="hidden_size 48 is not a multiple of 32.*--embedding f16"):
        export_gguf(path, tmp_path / "odd.gguf", qtype="q4_0")
    assert not (tmp_path / "odd.gguf").exists()


def test_failure_while_writing_leaves_nothing(ckpts, tmp_path, monkeypatch):
    def boom(self, *a, **k):
        raise OSError("disk full")

    out = tmp_path / "m.gguf"
    out.write_bytes(b"old")
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError, match="disk full"):
        export_gguf(ckpts["channel"], out, qtype="tq2_0", force=True)
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
