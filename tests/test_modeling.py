"""TernaryLM as a Hugging Face model: presets, KV-cache generation, save/load, Auto classes."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from ternarylm.configuration import TernaryLMConfig
from ternarylm.modeling import TernaryLMForCausalLM, count_parameters
from ternarylm.quantization import BitLinear


def test_132m_preset_has_the_papers_parameter_count():
    with torch.device("meta"):
        model = TernaryLMForCausalLM(TernaryLMConfig.from_preset("132m"))
    assert count_parameters(model) == 131_835_648
    assert model.lm_head.weight is not model.model.embed_tokens.weight


def test_ternary_and_fp_twins_differ_only_in_linears():
    tern = TernaryLMForCausalLM(TernaryLMConfig.from_preset("tiny"))
    fp = TernaryLMForCausalLM(TernaryLMConfig.from_preset("tiny", precision="fp"))
    assert sum(isinstance(m, BitLinear) for m in tern.modules()) == 2 * 7
    assert not any(isinstance(m, BitLinear) for m in fp.modules())
    assert count_parameters(tern) == count_parameters(fp)


def test_kv_cache_generation_equals_full_recomputation():
    torch.manual_seed(0)
    model = TernaryLMForCausalLM(TernaryLMConfig.from_preset("tiny", num_key_value_heads=2)).eval()
    ids = torch.randint(0, 512, (2, 6))
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    x = ids
    with torch.no_grad():
        for _ in range(12):
            nxt = model(x, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            x = torch.cat([x, nxt], 1)
    assert torch.equal(out, x)


def _greedy_without_cache(model, ids: list[int], steps: int) -> list[int]:
    x = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(steps):
            nxt = model(x, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            x = torch.cat([x, nxt], 1)
    return x[0].tolist()


@pytest.mark.parametrize("precision", ["ternary", "fp"])
def test_left_padded_batch_generation_equals_each_row_alone(precision):
    """generate() on a left-padded batch (KV cache, positions from the mask) gives every row the tokens
    that greedy decoding of that row alone, without a cache, gives."""
    torch.manual_seed(1)
    model = TernaryLMForCausalLM(TernaryLMConfig.from_preset("tiny", num_key_value_heads=2,
                                                             precision=precision)).eval()
    rows = [[5, 17, 301, 44, 9, 120, 7], [88, 3, 250], [410, 11, 62, 90, 8]]
    width, pad = max(map(len, rows)), 0
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    out = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=pad,
                         eos_token_id=None)
    for i, r in enumerate(rows):
        assert out[i, width - len(r):].tolist() == _greedy_without_cache(model, r, 10), f"row {i}"


def test_fp_twin_computes_what_transformers_llama_computes():
    """The fp twin on the same weights is transformers' own LlamaForCausalLM (RoPE, GQA, RMSNorm, SwiGLU)."""
    torch.manual_seed(2)
    cfg = TernaryLMConfig.from_preset("tiny", num_key_value_heads=2, precision="fp", rope_theta=500.0)
    ours = TernaryLMForCausalLM(cfg).eval()
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        tie_word_embeddings=False)).eval()
    llama.load_state_dict(ours.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, llama(ids).logits, rtol=1e-5, atol=1e-5)


def test_checkpoint_config_without_the_llama_fields_still_loads():
    """ckpt.pt files written before the model moved onto Llama's classes store no head_dim, hidden_act
    or rope_parameters: the config derives them (FORMATS: ckpt format_version 1 is unchanged)."""
    from ternarylm.checkpoint import config_from_checkpoint

    old = {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 4, "intermediate_size": 128, "max_position_embeddings": 256,
           "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "precision": "ternary", "quant": {},
           "model_type": "ternarylm", "transformers_version": "4.57.1"}
    cfg = config_from_checkpoint({"config": old})
    assert cfg.head_dim == 16 and cfg.hidden_act == "silu"
    assert cfg.rope_parameters["rope_theta"] == 10000.0
    assert TernaryLMForCausalLM(cfg).model.layers[1].mlp.down_proj.in_features == 128


def test_rope_comes_from_rope_theta_or_rope_parameters_and_scaling_is_refused():
    assert TernaryLMConfig(rope_parameters={"rope_type": "default", "rope_theta": 500.0}).rope_theta == 500.0
    assert TernaryLMConfig(rope_theta=300.0).rope_parameters == {"rope_type": "default", "rope_theta": 300.0}
    for scaling in ({"rope_type": "linear", "factor": 2.0}, {"type": "dynamic", "factor": 2.0}):
        with pytest.raises(ValueError, match="is not supported; TernaryLM uses default RoPE"):
            TernaryLMConfig(rope_scaling=scaling)


def test_save_and_load_through_auto_classes(tmp_path):
    torch.manual_seed(0)
    model = TernaryLMForCausalLM(TernaryLMConfig.from_preset("tiny")).eval()
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "ternarylm"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 512, (1, 8))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_bad_config_is_a_clear_error():
    import pytest

    with pytest.raises(ValueError, match="unknown preset"):
        TernaryLMConfig.from_preset("huge")
    with pytest.raises(ValueError, match="unknown config key"):
        TernaryLMConfig.from_preset("tiny", hiden_size=3)
    with pytest.raises(ValueError, match="divisible"):
        TernaryLMConfig.from_preset("tiny", hidden_size=66)
