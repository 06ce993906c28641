"""The VNNI dot-product tiles of the exact matcher (visiontk.matching._cpu_kernels_int8): exact
integers, any row offset, any column count, the whole byte range."""

import numpy as np
import pytest

from visiontk.matching import _cpu_kernels_int8 as dots

pytestmark = pytest.mark.skipif(
    not dots.available(),
    reason="this CPU (or numba's target) has no AVX-512 VNNI: the matcher uses float32 BLAS here",
)


@pytest.mark.parametrize(
    "n, m, r0, c0", [(1, 1, 0, 0), (5, 33, 1, 0), (70, 100, 3, 32), (301, 1100, 17, 1024)]
)
def test_tile_is_the_exact_integer_product(n, m, r0, c0):
    rng = np.random.default_rng(n + m)
    a = rng.integers(0, 256, (n, 128), dtype=np.uint8)
    b = rng.integers(0, 256, (m, 128), dtype=np.uint8)
    a[0], b[0] = 255, 0  # the extremes of u8 × (u8 − 128)
    r0, c0 = min(r0, n - 1), min(c0, (m - 1) // 32 * 32)
    tile = np.full(dots.tile_shape(n - r0, m - c0), np.nan, np.float32)
    dots.dot_tile(dots.pad_rows(a), r0, n, dots.pack_columns(b), c0, m, tile)
    expected = a[r0:].astype(np.int64) @ (b[c0:].astype(np.int64) - 128).T
    np.testing.assert_array_equal(tile[: n - r0, : m - c0], expected)


def test_row_terms_make_true_distances():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (40, 128), dtype=np.uint8)
    b = rng.integers(0, 256, (50, 128), dtype=np.uint8)
    af, bf = a.astype(np.float32), b.astype(np.float32)
    tile = np.empty(dots.tile_shape(40, 50), np.float32)
    dots.dot_tile(dots.pad_rows(a), 0, 40, dots.pack_columns(b), 0, 50, tile)
    terms = dots.row_terms(a, (af * af).sum(axis=1))
    got = tile[:40, :50] * np.float32(-2) + terms[:, None] + (bf * bf).sum(axis=1)[None, :]
    truth = ((a[:, None, :].astype(np.int64) - b[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(got, truth)
