"""The scale space's small pure functions (visiontk._sift.scale_space), which other tests only
reach through whole extractions: octave counts, layer blurs and the two upsampling forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from visiontk import devices
from visiontk._sift.scale_space import layer_sigmas, octave_count, scale_space, upsample_2x


@pytest.mark.parametrize(
    ("h", "w", "upsample", "expected"),
    [
        # OpenCV: round(log2(min side of the doubled image) − 2) + 1 with the doubled octave
        (512, 512, True, round(math.log2(1024) - 2) + 1),
        (400, 600, True, round(math.log2(800) - 2) + 1),
        (400, 600, False, round(math.log2(400) - 2)),
        (1080, 1920, True, round(math.log2(2160) - 2) + 1),
        (16, 16, False, 2),
        (4, 4, False, 1),  # never fewer than one octave
    ],
)
def test_octave_count(h, w, upsample, expected):
    assert octave_count(h, w, upsample) == expected


def test_layer_sigmas_compose_to_each_layers_blur():
    sigma, s = 1.6, 3
    k = 2 ** (1 / s)
    sig = layer_sigmas(sigma, s)
    assert len(sig) == s + 3 and sig[0] == sigma
    total = sigma
    for i in range(1, s + 3):  # blurring by sig[i] takes sigma·k^(i−1) to sigma·k^i
        total = math.sqrt(total**2 + sig[i] ** 2)
        assert total == pytest.approx(sigma * k**i, rel=1e-12)


def test_the_two_upsampling_forms_agree():
    """cv2's form (the CPU's) and the xp definition (the GPU's) to float rounding."""
    image = np.random.default_rng(0).uniform(0, 255, (37, 53)).astype(np.float32)
    fast = devices.upsample_2x(image)
    definition = upsample_2x(image, np)
    assert fast.shape == definition.shape == (74, 106)
    np.testing.assert_allclose(fast, definition, atol=1e-3)
    row = upsample_2x(np.array([[0.0, 4.0]], np.float32), np)[0]
    np.testing.assert_allclose(row, [0, 1, 3, 4])  # 3:1 mixes of neighbouring samples


def test_buffers_are_reused_only_when_nobody_holds_them():
    """The CPU backend keeps the last image's scale-space buffers for the next image of the
    same size, but never lends one a caller still holds: kept octaves stay as they were."""
    from visiontk._sift import backends
    from visiontk.extract import SiftOptions, release_buffers, sift_backend

    backend = sift_backend("cpu")
    if not isinstance(backend, backends.NumbaBackend):
        pytest.skip("numba missing: the definitions allocate afresh")
    rng = np.random.default_rng(4)
    first = rng.random((90, 120), np.float32) * 255
    second = rng.random((90, 120), np.float32) * 255
    opts = SiftOptions()
    release_buffers()
    kept = backend.scale_space(first, opts)
    copy = [o.gaussians.copy() for o in kept]
    again = backend.scale_space(second, opts)  # ``kept`` is alive: fresh buffers
    assert all(a.gaussians is not k.gaussians for a, k in zip(again, kept, strict=True))
    for o, c in zip(kept, copy, strict=True):
        np.testing.assert_array_equal(o.gaussians, c)
    reused = {id(o.gaussians) for o in again}
    del again
    third = backend.scale_space(second, opts)  # nobody holds the second's: lent again
    assert {id(o.gaussians) for o in third} <= reused | {id(o.gaussians) for o in kept}
    expected = scale_space(second, sigma=1.6, n_octave_layers=3, upsample=True, xp=np)
    for got, want in zip(third, expected, strict=True):
        np.testing.assert_allclose(got.gaussians, want.gaussians, rtol=1e-5, atol=1e-3)
    del third, kept
    small = rng.random((60, 70), np.float32) * 255
    shapes = {o.gaussians.shape for o in backend.scale_space(small, opts)} | {(120, 140)}
    assert set(backends._STACKS.held) == shapes  # the 90×120 image's buffers are dropped
    release_buffers()
    assert not backends._STACKS.held
