"""TernaryLM as a Hugging Face model: presets, KV-cache generation, save/load, Auto classes."""

import torch
from transformers import AutoConfig, AutoModelForCausalLM

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
