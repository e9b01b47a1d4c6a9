"""The shared ternary maths: absmean ternarisation, 2-bit / base-3 packing, activation quantisation.
The MatMulNBits layout is checked against onnxruntime itself in tests/test_matmul_nbits_ort.py."""

import numpy as np
import pytest

from ternarylm.format.trits import (
    InvalidPackedWeights,
    bits_per_weight,
    dequantize,
    pack,
    quantize_activations_int8,
    ternarize,
    unpack,
)


def test_worked_examples_from_the_docstring():
    assert pack(np.array([[1, 0, -1, 1]]), "2bit")[0, 0] == 0x86
    assert pack(np.array([[1, 0, -1, 1, 0]]), "base3")[0, 0] == 140


@pytest.mark.parametrize("packing", ["2bit", "base3"])
@pytest.mark.parametrize("k", [1, 4, 5, 7, 64, 97])
def test_pack_unpack_round_trip(packing, k):
    rng = np.random.default_rng(k)
    trits = rng.integers(-1, 2, size=(3, k)).astype(np.int8)
    packed = pack(trits, packing)
    assert packed.dtype == np.uint8
    assert packed.shape == (3, -(-k // (4 if packing == "2bit" else 5)))
    np.testing.assert_array_equal(unpack(packed, k, packing), trits)


def test_base3_is_close_to_the_log2_3_limit():
    assert bits_per_weight("base3") == 1.6 and bits_per_weight("2bit") == 2.0


@pytest.mark.parametrize("packing,bad", [("2bit", 0b11), ("base3", 243)])
def test_invalid_codes_are_rejected(packing, bad):
    with pytest.raises(InvalidPackedWeights, match="not valid"):
        unpack(np.array([[bad]], np.uint8), 4, packing)


def test_absmean_ternarize_per_tensor_and_group():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 64)).astype(np.float32)
    trits, scales = ternarize(w)
    assert set(np.unique(trits)) <= {-1, 0, 1}
    assert scales.shape == (8, 1) and np.allclose(scales, np.abs(w).mean())
    trits_g, scales_g = ternarize(w, "group", 32)
    assert scales_g.shape == (8, 2)
    np.testing.assert_allclose(scales_g[:, 0], np.abs(w[:, :32]).mean(axis=1), rtol=1e-6)
    err = np.abs(dequantize(trits_g, scales_g) - w).mean() / np.abs(w).mean()
    assert err < 0.6
    with pytest.raises(ValueError, match="does not divide"):
        ternarize(w[:, :40], "group", 32)


def test_activation_quantisation_is_per_token_int8():
    """Each token (last-axis row) gets its own absmax / 127 step: the rows' maxima (1 and 3.7) are not
    integer multiples of each other, so a per-tensor step would put the small row off its grid and
    round it 3.7x coarser."""
    x = np.array([[[0.5, -1.0, 0.25, 0.1]], [[3.7, 0.0, -1.85, 0.3]]], np.float32)  # [batch, token, features]
    q = quantize_activations_int8(x)
    step = np.abs(x).max(axis=-1, keepdims=True) / 127
    steps = q / step
    np.testing.assert_allclose(steps, np.rint(steps), atol=1e-4)  # on each token's own grid
    assert np.abs(steps).max(axis=-1).ravel().tolist() == pytest.approx([127, 127])  # absmax -> +-127
    assert (np.abs(q - x) <= step / 2 + 1e-7).all()  # round to nearest on that grid
    per_tensor_step = np.abs(x).max() / 127
    assert not np.allclose(q[0] / per_tensor_step, np.rint(q[0] / per_tensor_step), atol=1e-3)
