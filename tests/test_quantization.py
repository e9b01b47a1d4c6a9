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
    """STE as the module says: the backward treats both quantisers as the identity, so the gradients
    are those of a plain linear evaluated at the quantised values, with no zeroing of weights that the
    ternariser clamps to +-1 (|w| > 1.5 gamma) and no gradient through the absmean scale."""
    torch.manual_seed(0)
    layer = BitLinear(32, 8)  # ternary weights, 8-bit per-token activations
    with torch.no_grad():
        layer.weight[0, :3] = torch.tensor([5.0, -5.0, 0.01])  # two far outside the clamp, one rounded to 0
    x = torch.randn(4, 32, requires_grad=True)
    g_out = torch.randn(4, 8)
    layer(x).backward(g_out)

    trits, scales = ternary_weight(layer.weight)
    w_q = trits.float() * scales  # what the forward multiplies by
    assert trits[0, 0] == 1 and trits[0, 1] == -1 and trits[0, 2] == 0
    step = x.detach().abs().amax(dim=-1, keepdim=True) / 127
    x_q = torch.round(x.detach() / step) * step  # per-token absmax int8 grid
    torch.testing.assert_close(layer.weight.grad, g_out.T @ x_q, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, g_out @ w_q, rtol=1e-5, atol=1e-6)
    assert (layer.weight.grad[0, :3] != 0).all()  # clamped and zeroed weights still learn


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
