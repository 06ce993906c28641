"""The integer dot-product tiles of the exact matcher (visiontk.matching._cpu_kernels_int), on
every SIMD path this machine can execute: exact integers, any row offset, any column count, the
whole byte range; and the same matches on every path, BLAS included."""

import os
import subprocess
import sys

import numpy as np
import pytest

import visiontk
from visiontk import simd
from visiontk.errors import OptionError
from visiontk.matching import _cpu_kernels as search
from visiontk.matching import _cpu_kernels_int as dots

RUNNABLE = [level for level in dots.PATHS if dots.available(level)]
path_params = [
    pytest.param(
        dots.PATHS[level],
        id=level,
        marks=pytest.mark.skipif(
            level not in RUNNABLE,
            reason=f"this CPU (or numba's target) has no {level}: {simd.describe()}",
        ),
    )
    for level in dots.PATHS
]


@pytest.mark.parametrize("path", path_params)
@pytest.mark.parametrize(
    "n, m, r0, c0", [(1, 1, 0, 0), (5, 33, 1, 0), (70, 100, 3, 32), (301, 1100, 17, 1024)]
)
def test_tile_is_the_exact_integer_product(path, n, m, r0, c0):
    rng = np.random.default_rng(n + m)
    a = rng.integers(0, 256, (n, 128), dtype=np.uint8)
    b = rng.integers(0, 256, (m, 128), dtype=np.uint8)
    a[0], b[0] = 255, 0  # the extremes of u8 × (u8 − 128)
    if m > 1:
        b[1] = 255  # and of u8 × u8 (the int16 path)
    r0, c0 = min(r0, n - 1), min(c0, (m - 1) // path.columns * path.columns)
    tile = np.full(dots.tile_shape(path, n - r0, m - c0), np.nan, np.float32)
    dots.dot_tile(path, dots.pad_rows(path, a), r0, n, dots.pack_columns(path, b), c0, m, tile)
    expected = a[r0:].astype(np.int64) @ (b[c0:].astype(np.int64) - path.shift).T
    np.testing.assert_array_equal(tile[: n - r0, : m - c0], expected)


@pytest.mark.parametrize("path", path_params)
def test_row_terms_make_true_distances(path):
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (40, 128), dtype=np.uint8)
    b = rng.integers(0, 256, (50, 128), dtype=np.uint8)
    af, bf = a.astype(np.float32), b.astype(np.float32)
    tile = np.empty(dots.tile_shape(path, 40, 50), np.float32)
    dots.dot_tile(path, dots.pad_rows(path, a), 0, 40, dots.pack_columns(path, b), 0, 50, tile)
    terms = dots.row_terms(path, a, (af * af).sum(axis=1))
    got = tile[:40, :50] * np.float32(-2) + terms[:, None] + (bf * bf).sum(axis=1)[None, :]
    truth = ((a[:, None, :].astype(np.int64) - b[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(got, truth)


@pytest.mark.parametrize("level", simd.LEVELS)
def test_every_level_finds_the_same_candidates(monkeypatch, level):
    """Held to each level by VISIONTK_SIMD, the tiled search gives BLAS's candidates, values
    and column minima bit for bit (ties included: duplicated rows and columns)."""
    if level != "generic" and level not in RUNNABLE:
        pytest.skip(f"this CPU (or numba's target) has no {level}: {simd.describe()}")
    monkeypatch.setenv(simd.ENV, level)
    monkeypatch.setattr(search, "TILE_COLUMNS", 512)
    monkeypatch.setattr(search, "TILE_BYTES", 4 * 512 * 300)
    monkeypatch.setattr(search, "BANDS_FROM", 0)
    rng = np.random.default_rng(11)
    a = rng.integers(0, 256, (700, 128), dtype=np.uint8)
    b = rng.integers(0, 256, (1300, 128), dtype=np.uint8)
    b[700:800] = b[600:700]  # equal columns: ties go to the lower index
    a[10:20] = b[5:15]
    used = search._integer_path(a, b)
    assert (used.level if used else "generic") == level
    af, bf = a.astype(np.float32), b.astype(np.float32)
    a_sq, b_sq = (af * af).sum(axis=1), (bf * bf).sum(axis=1)
    want = search.nearest_candidates(af, bf, a_sq, b_sq, 2)  # float32 BLAS
    got = search.nearest_candidates(af, bf, a_sq, b_sq, 2, a, b)
    for x, y in zip(got, want, strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_bad_level_is_one_line(monkeypatch):
    monkeypatch.setenv(simd.ENV, "avx9000")
    with pytest.raises(OptionError, match="VISIONTK_SIMD='avx9000': expected one of"):
        visiontk.match(np.zeros((3, 128), np.uint8), np.zeros((3, 128), np.uint8))


@pytest.mark.parametrize(
    "name, features, expected",
    [
        ("haswell", None, "machine"),  # numba passes this CPU's features whatever the name
        ("haswell", "+avx2,+fma", "avx2"),
        ("alderlake", "+avxvnni", "avxvnni"),
        ("generic", None, "generic"),
        (None, "+avx2,-avx2", "generic"),  # in order, as LLVM applies them
        ("znver4", "-avx512f", "avx2"),  # turning AVX-512F off turns off VNNI on it
        ("x86-64", "+sse2", "generic"),
    ],
)
def test_numba_target_holds_the_level(monkeypatch, name, features, expected):
    """Our kernels never go above what numba compiles for (LLVM could not emit them, and
    aborts the process trying), nor above this CPU."""
    for key, value in (("NUMBA_CPU_NAME", name), ("NUMBA_CPU_FEATURES", features)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    want = simd.machine_level() if expected == "machine" else expected
    assert simd.numba_level() == min(want, simd.machine_level(), key=simd.LEVELS.index)


@pytest.mark.parametrize("features", ["garbage", "+avx2, +fma", "avx2", "+avx2,,+"])
def test_a_feature_list_llvm_aborts_on_is_one_line(monkeypatch, features):
    monkeypatch.setenv("NUMBA_CPU_FEATURES", features)
    with pytest.raises(OptionError, match=r"NUMBA_CPU_FEATURES=.*without spaces"):
        simd.numba_level()


@pytest.mark.skipif("avx2" not in RUNNABLE, reason=f"no AVX2 here: {simd.describe()}")
def test_code_compiled_for_avx2_matches_the_same(tmp_path):
    """numba compiling every kernel for Haswell (an AVX2 laptop's code, run here) gives the
    same matches as this machine's own level."""
    script = (
        "import numpy as np, visiontk\n"
        "from visiontk import simd\n"
        "rng = np.random.default_rng(3)\n"
        "a = rng.integers(0, 256, (1500, 128), dtype=np.uint8)\n"
        "b = rng.integers(0, 256, (1700, 128), dtype=np.uint8)\n"
        "b[:600] = np.clip(a[:600].astype(int) + rng.integers(-9, 10, (600, 128)), 0, 255)\n"
        "m = visiontk.match(a, b)\n"
        "print(simd.level(), len(m))\n"
        "np.save(__import__('sys').argv[1], np.column_stack([m.pairs, m.distances]))\n"
    )
    runs = {}
    for name, extra in (("host", {}), ("haswell", simd.AVX2_NUMBA)):
        env = {**os.environ, **extra, "NUMBA_CACHE_DIR": str(tmp_path / f"cache-{name}")}
        env.pop(simd.ENV, None)
        out = tmp_path / f"{name}.npy"
        done = subprocess.run(
            [sys.executable, "-c", script, str(out)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runs[name] = (done.stdout.split()[0], np.load(out))
    assert runs["haswell"][0] == "avx2"
    assert len(runs["host"][1]) > 400
    np.testing.assert_array_equal(runs["haswell"][1], runs["host"][1])
