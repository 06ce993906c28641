"""Brute-force matching: nearest neighbours, exact, ratio and mutual semantics, bounded memory
by chunks."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import visiontk
from visiontk import matching


def reference(a, b, ratio, mutual):
    d = cdist(a.astype(float), b.astype(float))
    order = np.argsort(d, axis=1, kind="stable")
    nn = order[:, 0]
    d1 = d[np.arange(len(a)), nn]
    d2 = d[np.arange(len(a)), order[:, 1]]
    keep = d1 < ratio * d2
    if mutual:
        keep &= np.argmin(d, axis=0)[nn] == np.arange(len(a))
    rows = np.nonzero(keep)[0]
    return np.stack([rows, nn[rows]], axis=1), d1[rows]


@pytest.fixture(scope="module")
def descriptors():
    rng = np.random.default_rng(0)
    b = rng.integers(0, 120, (700, 128)).astype(np.uint8)
    a = np.clip(
        b[rng.permutation(700)[:500]].astype(int) + rng.integers(-6, 7, (500, 128)), 0, 255
    ).astype(np.uint8)
    a[:100] = rng.integers(0, 120, (100, 128))  # some without a true partner
    return a, b


@pytest.mark.parametrize("ratio, mutual", [(0.8, True), (0.8, False), (0.95, True)])
def test_matches_equal_brute_force_reference(descriptors, ratio, mutual):
    a, b = descriptors
    m = visiontk.match(a, b, ratio=ratio, mutual=mutual)
    pairs, dist = reference(a, b, ratio, mutual)
    np.testing.assert_array_equal(m.pairs, pairs)
    np.testing.assert_allclose(m.distances, dist, rtol=1e-6)
    assert 300 < len(m) < 500


def test_nearest_neighbours_against_brute_force():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (300, 128)).astype(np.uint8)
    b = rng.integers(0, 256, (250, 128)).astype(np.uint8)
    b[:40] = a[:40]  # exact partners
    idx, d1, d2, mutual = matching.nearest_neighbours(a, b)
    d = np.linalg.norm(a[:, None].astype(float) - b[None].astype(float), axis=2)
    order = np.argsort(d, axis=1, kind="stable")
    np.testing.assert_array_equal(idx, order[:, 0])
    np.testing.assert_allclose(d1, d[np.arange(300), order[:, 0]], rtol=1e-6)
    np.testing.assert_allclose(d2, d[np.arange(300), order[:, 1]], rtol=1e-6)
    back = np.argmin(d, axis=0)
    np.testing.assert_array_equal(mutual, back[idx] == np.arange(300))
    assert mutual[:40].all() and (d1[:40] == 0).all()
    _, _, second, _ = matching.nearest_neighbours(a[:5], b[:1])
    assert np.isinf(second).all()


def test_chunking_does_not_change_the_result(descriptors, monkeypatch):
    a, b = descriptors
    whole = visiontk.match(a, b)
    monkeypatch.setattr(matching, "_kernels", lambda: None)  # the xp path chunks by rows
    monkeypatch.setattr(matching, "CHUNK_BYTES", 4 * len(b) * 7)  # 7 rows per chunk
    chunked = visiontk.match(a, b)
    np.testing.assert_array_equal(whole.pairs, chunked.pairs)


def candidate_sets():
    rng = np.random.default_rng(3)
    for n, m in ((1, 1), (4, 2), (2, 7), (700, 3), (1500, 1100), (2100, 2049)):
        a = rng.integers(0, 140, (n, 128)).astype(np.uint8)
        b = rng.integers(0, 140, (m, 128)).astype(np.uint8)
        h = min(n, m) // 2
        b[:h] = np.clip(a[:h].astype(int) + rng.integers(-3, 4, (h, 128)), 0, 255)
        yield a, b
    # the whole byte range, extremes included (the VNNI tiles shift B by −128)
    full = rng.integers(0, 256, (333, 128)).astype(np.uint8)
    full[:5], full[5:10] = 255, 0
    yield full, np.vstack([full[::-1][:200], rng.integers(0, 256, (90, 128)).astype(np.uint8)])
    few = rng.integers(0, 3, (900, 128)).astype(np.uint8)  # many exact ties
    yield few, np.vstack([few[:300], few[:300], rng.integers(0, 3, (400, 128)).astype(np.uint8)])
    yield rng.random((300, 64)).astype(np.float32), rng.random((500, 64)).astype(np.float32)


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_search_equals_the_xp_definition(monkeypatch, threads):
    """The tiled, banded search (visiontk.matching._cpu_kernels) gives the xp path's candidates,
    values and column minima bit for bit, ties to the lower index included, so the matches
    are the same."""
    from visiontk.matching import _cpu_kernels as _match_kernels

    monkeypatch.setattr(_match_kernels, "TILE_COLUMNS", 512)  # several tiles each way
    monkeypatch.setattr(_match_kernels, "TILE_BYTES", 4 * 512 * 300)
    monkeypatch.setattr(_match_kernels, "BANDS_FROM", 0)
    monkeypatch.setattr(matching, "_threads", lambda: threads)
    for a, b in candidate_sets():
        af, bf = a.astype(np.float32), b.astype(np.float32)
        a_sq, b_sq = (af * af).sum(axis=1), (bf * bf).sum(axis=1)
        k = min(3, len(b))
        want = matching._candidates_xp(af, bf, a_sq, b_sq, k, np)
        # float32 BLAS tiles, and (uint8, AVX2 or better) the integer tiles of _cpu_kernels_int
        for given in ((), (a, b)):
            got = _match_kernels.nearest_candidates(af, bf, a_sq, b_sq, threads, *given)
            np.testing.assert_array_equal(got[0][:, :k], want[0])
            np.testing.assert_array_equal(got[1][:, :k], want[1])
            np.testing.assert_array_equal(got[2], want[2])
        compiled = matching.nearest_neighbours(a, b)
        with monkeypatch.context() as m:
            m.setattr(matching, "_kernels", lambda: None)
            defined = matching.nearest_neighbours(a, b)
        for x, y in zip(compiled, defined, strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("compiled", [True, False])
def test_wide_integer_descriptors_are_exact(monkeypatch, compiled):
    """uint16 descriptors: squared differences summed in int64 (int32 overflowed above
    65535² / 2 per sum and reordered neighbours)."""
    if not compiled:
        monkeypatch.setattr(matching, "_kernels", lambda: None)
    rng = np.random.default_rng(9)
    a = rng.integers(0, 65535, (200, 128)).astype(np.uint16)
    b = rng.integers(0, 65535, (150, 128)).astype(np.uint16)
    truth = cdist(a.astype(float), b.astype(float))
    nearest, d1, _, _ = matching.nearest_neighbours(a, b)
    np.testing.assert_array_equal(nearest, truth.argmin(axis=1))
    np.testing.assert_allclose(d1, truth.min(axis=1), rtol=1e-12)


def test_edge_cases():
    one = np.ones((1, 128), np.uint8)
    empty = np.zeros((0, 128), np.uint8)
    assert len(visiontk.match(empty, one)) == 0
    assert len(visiontk.match(one, empty)) == 0
    assert visiontk.match(one, one).pairs.tolist() == [[0, 0]]
    with pytest.raises(visiontk.VisiontkError):
        visiontk.match(one, one, ratio=1.5)


def test_max_distance(descriptors):
    a, b = descriptors
    full = visiontk.match(a, b)
    limit = float(np.median(full.distances))
    m = visiontk.match(a, b, max_distance=limit)
    assert len(m) > 0 and m.distances.max() <= limit
    assert len(m) < len(full)


def test_mutual_with_exact_ties_keeps_one_pair_per_b():
    rng = np.random.default_rng(5)
    b = rng.integers(0, 200, (50, 128)).astype(np.uint8)
    a = np.concatenate([b[:10], b[:10]])  # every target claimed twice, at distance 0
    m = visiontk.match(a, b, ratio=1.0, mutual=True)
    assert m.pairs.tolist() == [[i, i] for i in range(10)]
    assert len(visiontk.match(a, b, ratio=1.0, mutual=False)) == 20


@pytest.mark.parametrize("compiled", [True, False])
def test_symmetric_applies_the_ratio_test_from_both_sides(monkeypatch, descriptors, compiled):
    """symmetric=True keeps a pair when it passes the ratio test from A's side and from B's
    and is mutual (COLMAP's cross_check); brute-force reference, both code paths."""
    if not compiled:
        monkeypatch.setattr(matching, "_kernels", lambda: None)
    a, b = descriptors
    a = a.copy()
    a[450] = np.clip(a[400].astype(int) + 1, 0, 255)  # two rows of A nearly alike
    d = cdist(a.astype(float), b.astype(float))
    ab, ba = d.argsort(axis=1, kind="stable"), d.T.argsort(axis=1, kind="stable")
    want = []
    for i in range(len(a)):
        j = ab[i, 0]
        if ba[j, 0] == i and d[i, j] < 0.8 * d[i, ab[i, 1]] and d[i, j] < 0.8 * d[ba[j, 1], j]:
            want.append((i, j))
    m = visiontk.match(a, b, ratio=0.8, symmetric=True)
    np.testing.assert_array_equal(m.pairs, np.array(want).reshape(-1, 2))
    one_sided = {tuple(p) for p in visiontk.match(a, b, ratio=0.8).pairs.tolist()}
    assert {tuple(p) for p in m.pairs.tolist()} < one_sided  # strictly fewer here
    assert not ({400, 450} & set(m.pairs[:, 0].tolist()))  # B's side is ambiguous for both
    with pytest.raises(visiontk.VisiontkError, match="symmetric"):
        visiontk.match(a, b, symmetric="yes")
