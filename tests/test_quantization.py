"""BitLinear (absmean ternary weights + 8-bit activations, STE) and quantize_ on foreign models."""

import pytest
import torch
import torch.nn as nn

from ternarylm.quantization import BitLinear, TernaryConfig, quantize_, ternary_linears, ternary_weight


def test_forward_uses_ternary_weights_times_absmean():
    torch.manual_seed(0)
    layer = BitLinear(64, 16, quant=TernaryConfig(activation_bits=0))
    x = torch.randn(3, 64)
    trits, scales = ternary_weight(layer.weight)
    assert set(trits.unique().tolist()) <= {-1, 0, 1}
    assert torch.allclose(scales, layer.weight.abs().mean().expand(16, 1))
    expected = x @ (trits.float() * scales).T
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_straight_through_estimator_passes_gradients():
    torch.manual_seed(0)
    layer = BitLinear(32, 8)
    x = torch.randn(4, 32, requires_grad=True)
    layer(x).sum().backward()
    # STE: dL/dW equals the gradient of a plain linear evaluated at the quantised inputs
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("granularity,group", [("channel", None), ("group", 32)])
def test_scale_granularities(granularity, group):
    layer = BitLinear(64, 8, quant=TernaryConfig(granularity=granularity, group_size=group))
    _, scales = ternary_weight(layer.weight, granularity, group)
    assert scales.shape == (8, 1 if granularity == "channel" else 2)


def test_config_validates_and_round_trips():
    cfg = TernaryConfig(granularity="group", group_size=64)
    assert TernaryConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="group_size"):
        TernaryConfig(granularity="group", group_size=48)
    with pytest.raises(ValueError, match="granularity"):
        TernaryConfig(granularity="row")


def test_quantize_swaps_linears_of_a_hf_llama_but_not_the_head():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    before = model(torch.tensor([[1, 2, 3]])).logits
    quantize_(model, TernaryConfig())
    names = [n for n, _ in ternary_linears(model)]
    assert len(names) == 2 * 7 and "lm_head" not in names
    assert isinstance(model.lm_head, nn.Linear) and not isinstance(model.lm_head, BitLinear)
    after = model(torch.tensor([[1, 2, 3]])).logits
    assert after.shape == before.shape and not torch.allclose(after, before)


def test_filter_fn_overrides_patterns():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    quantize_(model, filter_fn=lambda m, name: name == "1")
    assert type(model[0]) is nn.Linear and isinstance(model[1], BitLinear)
