"""Nearest-neighbour descriptor matching with Lowe's ratio test and a mutual check.

Exact brute force: squared distances come from one matrix product per chunk of rows
(float32 BLAS), and the three nearest candidates of every row are re-scored in integer
arithmetic, so float rounding can never reorder the neighbours the ratio test compares.
Memory stays bounded by :data:`CHUNK_BYTES` whatever the feature counts (50k × 50k included).
"""

from __future__ import annotations

import numpy as np

from .errors import OptionError
from .features import Features, Matches

#: Upper bound on the distance block held at once (bytes).
CHUNK_BYTES = 128 * 2 ** 20
#: Lowe's ratio (Lowe 2004 used 0.8).
DEFAULT_RATIO = 0.8


def match(features_a, features_b, *, ratio: float = DEFAULT_RATIO, mutual: bool = True,
          max_distance: float | None = None, device: str = "auto") -> Matches:
    """Match descriptors of A against B.

    Parameters
    ----------
    features_a, features_b : Features or (N, D) arrays of descriptors
    ratio : float in (0, 1]
        Keep a match when nearest < ratio × second nearest (1.0 turns the test off).
    mutual : bool
        Keep only pairs that are each other's nearest neighbour.
    max_distance : float, optional
        Drop matches farther than this (descriptor units, 0..~512 for uint8 SIFT).

    Returns
    -------
    Matches with pairs (M, 2) = (index in A, index in B), sorted by index in A.

    Example
    -------
    >>> m = match(sift("a.png"), sift("b.png"))
    >>> m.pairs[:3]
    """
    from .backend import resolve_device

    resolve_device(device)
    if not (isinstance(ratio, (int, float)) and 0 < ratio <= 1):
        raise OptionError(f"match option ratio must be in (0, 1], got {ratio!r}")
    if max_distance is not None and not (isinstance(max_distance, (int, float))
                                         and max_distance >= 0):
        raise OptionError(f"match option max_distance must be >= 0, got {max_distance!r}")
    a = _descriptors(features_a)
    b = _descriptors(features_b)
    if a.shape[1] != b.shape[1]:
        raise OptionError(f"descriptor sizes differ: {a.shape[1]} vs {b.shape[1]}")
    empty = Matches(np.zeros((0, 2), np.int64), np.zeros(0, np.float32))
    if len(a) == 0 or len(b) == 0:
        return empty

    nearest, d1, d2, best_a_for_b = nearest_neighbours(a, b)
    keep = d1 < ratio * d2 if ratio < 1 else np.ones(len(a), bool)
    if mutual:
        keep &= best_a_for_b[nearest] == np.arange(len(a))
    if max_distance is not None:
        keep &= d1 <= max_distance
    rows = np.nonzero(keep)[0]
    return Matches(np.stack([rows, nearest[rows]], axis=1).astype(np.int64),
                   d1[rows].astype(np.float32))


def _descriptors(features) -> np.ndarray:
    data = features.descriptors if isinstance(features, Features) else np.asarray(features)
    if data.ndim != 2:
        raise OptionError(f"descriptors must be a 2-D array, got shape {data.shape}")
    return data


def nearest_neighbours(a: np.ndarray, b: np.ndarray):
    """For each row of ``a``: index of its nearest row of ``b``, the distance to it and to the
    second nearest (inf when ``b`` has one row); and for each row of ``b`` its nearest row of
    ``a``. Distances are Euclidean.

    Example
    -------
    >>> idx, d1, d2, back = nearest_neighbours(np.eye(3), np.eye(3))
    >>> idx.tolist()
    [0, 1, 2]
    """
    af = a.astype(np.float32)
    bf = b.astype(np.float32)
    exact = np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)
    a_sq = (af * af).sum(axis=1)
    b_sq = (bf * bf).sum(axis=1)
    n_a, n_b = len(a), len(b)
    k = min(3, n_b)
    rows = max(1, min(8192, CHUNK_BYTES // (4 * n_b)))
    nearest = np.empty(n_a, np.int64)
    d1 = np.empty(n_a, np.float64)
    d2 = np.full(n_a, np.inf)
    col_best = np.full(n_b, np.inf, np.float32)
    col_arg = np.zeros(n_b, np.int64)
    for start in range(0, n_a, rows):
        stop = min(start + rows, n_a)
        dist = af[start:stop] @ bf.T
        dist *= -2
        dist += a_sq[start:stop, None]
        dist += b_sq[None, :]
        arg = np.argmin(dist, axis=0)
        val = dist[arg, np.arange(n_b)]
        better = val < col_best
        col_best[better] = val[better]
        col_arg[better] = arg[better] + start
        cand = np.argpartition(dist, k - 1, axis=1)[:, :k] if n_b > k else \
            np.broadcast_to(np.arange(n_b), (stop - start, n_b))
        if exact:
            diff = a[start:stop, None, :].astype(np.int32) - b[cand].astype(np.int32)
            sq = (diff * diff).sum(axis=2).astype(np.float64)
        else:
            sq = np.take_along_axis(dist, cand, axis=1).astype(np.float64)
        order = np.argsort(sq, axis=1, kind="stable")
        sq = np.take_along_axis(sq, order, axis=1)
        cand = np.take_along_axis(cand, order, axis=1)
        nearest[start:stop] = cand[:, 0]
        d1[start:stop] = sq[:, 0]
        if k > 1:
            d2[start:stop] = sq[:, 1]
    return nearest, np.sqrt(np.maximum(d1, 0)), np.sqrt(np.maximum(d2, 0)), col_arg
