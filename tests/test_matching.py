"""Brute-force matching: exact, ratio and mutual semantics, bounded memory by chunks."""

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
    a = np.clip(b[rng.permutation(700)[:500]].astype(int) + rng.integers(-6, 7, (500, 128)),
                0, 255).astype(np.uint8)
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


def test_chunking_does_not_change_the_result(descriptors, monkeypatch):
    a, b = descriptors
    whole = visiontk.match(a, b)
    monkeypatch.setattr(matching, "CHUNK_BYTES", 4 * len(b) * 7)  # 7 rows per chunk
    chunked = visiontk.match(a, b)
    np.testing.assert_array_equal(whole.pairs, chunked.pairs)


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
