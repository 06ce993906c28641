"""The compiled CPU kernels of the ViT forward pass against their numpy definitions."""

import numpy as np
import pytest
from dino_fixture import pixels, tiny_state
from dinov2_fixture import VARIANTS
from dinov2_fixture import tiny_state as tiny_v2_state

from visiontk.vit import ViT, ops

RNG = np.random.default_rng(7)


def both(monkeypatch, fn):
    """fn() through the compiled kernels, then through the definitions."""
    compiled = fn()
    with monkeypatch.context() as m:
        m.setenv("VISIONTK_KERNELS", "xp")
        return compiled, fn()


@pytest.mark.parametrize("width", [1, 15, 16, 197, 901])  # remainders of the 16 lanes
def test_softmax_equals_definition(monkeypatch, width):
    scores = (RNG.standard_normal((2, 3, 5, width)) * 30).astype(np.float32)
    scores[0, 0, 0, :] = -1e4  # all equal: a uniform row
    scores[0, 0, 1, 0] = 200.0  # the rest underflow
    scores[1, 2, 4, -1] = 50.0  # the maximum in the scalar remainder

    def run():
        x = scores.copy()
        ops.softmax_inplace(x, np)
        return x

    compiled, reference = both(monkeypatch, run)
    np.testing.assert_allclose(compiled, reference, rtol=2e-6, atol=1e-12)
    np.testing.assert_allclose(compiled.sum(-1), 1.0, rtol=1e-5)
    assert compiled[0, 0, 0, 0] == pytest.approx(1 / width, rel=1e-6)


def test_exp_is_accurate_over_the_whole_range():
    from visiontk.vit import _cpu_kernels

    x = np.linspace(-87.3, 0, 200_001).astype(np.float32)
    # the softmax of [x, 0] is e^x / (1 + e^x): e^x is recovered from the first column
    rows = np.stack([x, np.zeros_like(x)], axis=1)
    _cpu_kernels.softmax_inplace(rows)
    exact = np.exp(x.astype(np.float64))
    np.testing.assert_allclose(rows[:, 0] / rows[:, 1], exact, rtol=3e-7)


def test_layer_norm_gelu_and_heads_equal_definitions(monkeypatch):
    x = (RNG.standard_normal((2, 37, 48)) * 3 + 1).astype(np.float32)
    weight, bias = RNG.standard_normal((2, 48)).astype(np.float32)
    compiled, reference = both(monkeypatch, lambda: ops.layer_norm(x, weight, bias, np))
    np.testing.assert_allclose(compiled, reference, rtol=1e-5, atol=2e-6)

    y = (RNG.standard_normal((37, 48)) * 4).astype(np.float32)
    compiled, reference = both(monkeypatch, lambda: ops.gelu(y.copy(), np, bias=bias))
    np.testing.assert_allclose(compiled, reference, rtol=1e-5, atol=2e-6)
    compiled, reference = both(monkeypatch, lambda: ops.gelu(y, np))
    np.testing.assert_allclose(compiled, reference, rtol=1e-5, atol=2e-6)
    assert not np.allclose(compiled, y * (y > 0))  # not a ReLU: the erf tail is there

    qkv = RNG.standard_normal((2, 37, 3 * 48)).astype(np.float32)
    qkv_bias = RNG.standard_normal(3 * 48).astype(np.float32)
    compiled, reference = both(monkeypatch, lambda: ops.split_heads(qkv, qkv_bias, 3, 0.25, np))
    for got, want, shape in zip(
        compiled, reference, [(2, 3, 37, 16), (2, 3, 16, 37), (2, 3, 37, 16)], strict=True
    ):
        assert got.shape == want.shape == shape and got.flags.c_contiguous
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_kernels_do_not_depend_on_where_a_buffer_starts():
    """Vectorised body and scalar remainder must compute the same thing: shift the data by
    0..15 floats and the bytes stay the same (SIFT's kernels did not, with approximate
    functions)."""
    from visiontk.vit import _cpu_kernels

    data = (RNG.standard_normal((12, 203)) * 10).astype(np.float32)
    weight, bias = RNG.standard_normal((2, 203)).astype(np.float32)
    results = []
    for shift in range(16):
        buffer = np.empty(data.size + 16, np.float32)
        x = buffer[shift : shift + data.size].reshape(data.shape)
        x[:] = data
        normed = _cpu_kernels.layer_norm(x, weight, bias, 1e-6)
        _cpu_kernels.softmax_inplace(x)
        results.append(
            (x.tobytes(), normed.tobytes(), _cpu_kernels.gelu(normed.copy(), bias).tobytes())
        )
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("variant", ["dino", *VARIANTS])
def test_forward_pass_compiled_equals_definitions(monkeypatch, variant):
    model = ViT(tiny_state(patch=8) if variant == "dino" else tiny_v2_state(variant))
    image = pixels(40, 24) if variant == "dino" else pixels(42, 70)
    compiled, reference = both(monkeypatch, lambda: model.last_block(image, features=True))
    for got, want in zip(compiled, reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
