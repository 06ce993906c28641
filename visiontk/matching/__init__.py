"""Nearest-neighbour descriptor matching with Lowe's ratio test and a mutual check.

Exact brute force: squared distances come from one matrix product per chunk of rows
(float32 BLAS), and the three nearest candidates of every row are re-scored in integer
arithmetic, so float rounding can never reorder the neighbours the ratio test compares.
Memory stays bounded by :data:`CHUNK_BYTES` (:data:`GPU_CHUNK_BYTES`) whatever the feature
counts (50k × 50k included).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ..errors import OptionError
from ..features import Features, Matches

if TYPE_CHECKING:
    from ..devices import XpArray
    from ..extract import SiftBackend

#: Upper bound on the distance block held at once (bytes). On the CPU a block that stays in
#: the cache while it is scanned, and small enough that first use faults in few fresh pages
#: (8 MB; timings: bench/match_bench.py).
CHUNK_BYTES = 8 * 2**20
#: On a GPU, larger blocks keep it busy.
GPU_CHUNK_BYTES = 128 * 2**20
#: Lowe's ratio (Lowe 2004 used 0.8).
DEFAULT_RATIO = 0.8


def match(
    features_a: Features | ArrayLike,
    features_b: Features | ArrayLike,
    *,
    ratio: float = DEFAULT_RATIO,
    mutual: bool = True,
    max_distance: float | None = None,
    symmetric: bool = False,
    device: str | SiftBackend = "auto",
) -> Matches:
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
    symmetric : bool
        The ratio test from B's side too, and mutual: each keypoint is the other's distinctive
        nearest neighbour (COLMAP's ``cross_check``). A second search, B against A.

    Returns
    -------
    Matches with pairs (M, 2) = (index in A, index in B), sorted by index in A.

    Example
    -------
    >>> import visiontk
    >>> a = visiontk.sift("sample_images/coffee.png")
    >>> m = match(a, visiontk.sift("sample_images/coffee_warped.png"))
    >>> len(m) > 100, m.pairs.shape[1], bool((m.pairs[:, 0] < len(a)).all())
    (True, 2, True)
    """
    from ..devices import to_host
    from ..extract import array_module_for

    # a resolved backend (match_images resolves the device once for every step) has its xp
    xp = array_module_for(device)
    if not (isinstance(ratio, (int, float)) and 0 < ratio <= 1):
        raise OptionError(f"match option ratio must be in (0, 1], got {ratio!r}")
    if not isinstance(symmetric, (bool, np.bool_)):
        raise OptionError(f"match option symmetric must be True or False, got {symmetric!r}")
    if max_distance is not None and not (
        isinstance(max_distance, (int, float)) and max_distance >= 0
    ):
        raise OptionError(f"match option max_distance must be >= 0, got {max_distance!r}")
    a = _descriptors(features_a)
    b = _descriptors(features_b)
    if a.shape[1] != b.shape[1]:
        raise OptionError(f"descriptor sizes differ: {a.shape[1]} vs {b.shape[1]}")
    empty = Matches(np.zeros((0, 2), np.int64), np.zeros(0, np.float32))
    if len(a) == 0 or len(b) == 0:
        return empty

    nearest, d1, d2, is_mutual = (
        to_host(v) for v in nearest_neighbours(xp.asarray(a), xp.asarray(b), xp)
    )
    keep = d1 < ratio * d2 if ratio < 1 else np.ones(len(a), bool)
    if mutual or symmetric:
        keep &= is_mutual
    if symmetric:
        back, b1, b2, _ = (to_host(v) for v in nearest_neighbours(xp.asarray(b), xp.asarray(a), xp))
        keep &= back[nearest] == np.arange(len(a))
        if ratio < 1:
            keep &= b1[nearest] < ratio * b2[nearest]
    if max_distance is not None:
        keep &= d1 <= max_distance
    rows = np.nonzero(keep)[0]
    return Matches(
        np.stack([rows, nearest[rows]], axis=1).astype(np.int64), d1[rows].astype(np.float32)
    )


def _descriptors(features: Features | ArrayLike) -> np.ndarray:
    data = features.descriptors if isinstance(features, Features) else np.asarray(features)
    if data.ndim != 2:
        raise OptionError(f"descriptors must be a 2-D array, got shape {data.shape}")
    return data


def nearest_neighbours(
    a: XpArray, b: XpArray, xp: ModuleType = np
) -> tuple[XpArray, XpArray, XpArray, XpArray]:
    """For each row of ``a``: index of its nearest row of ``b``, the distance to it and to the
    second nearest (inf when ``b`` has one row), and whether the pair is mutual (that row of
    ``b`` has no nearer row of ``a``; ties go to the lower index). Distances are Euclidean.

    Example
    -------
    >>> idx, d1, d2, mutual = nearest_neighbours(np.eye(3), np.eye(3))
    >>> idx.tolist(), mutual.tolist()
    ([0, 1, 2], [True, True, True])

    ``a`` and ``b`` are arrays of ``xp`` (numpy, or cupy to match on the GPU); so are the results.
    """
    af = a.astype(xp.float32)
    bf = b.astype(xp.float32)
    exact = np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)
    a_sq = (af * af).sum(axis=1)
    b_sq = (bf * bf).sum(axis=1)
    k = min(3, len(b))
    kernels = _kernels() if xp is np else None
    if kernels is not None:
        cand, block, col_min = kernels.nearest_candidates(af, bf, a_sq, b_sq, _threads(), a, b)
        cand, block = cand[:, :k], block[:, :k]
    else:
        cand, block, col_min = _candidates_xp(af, bf, a_sq, b_sq, k, xp)
    if exact and kernels is not None:
        sq = kernels.rescore(a, b, cand)
    elif exact:  # re-scored in integers, a block of rows at a time (bounded memory)
        sq = xp.empty(cand.shape, xp.float64)
        step = max(1, CHUNK_BYTES // (4 * a.shape[1] * max(k, 1)))
        for start in range(0, len(a), step):
            diff = a[start : start + step, None, :].astype(xp.int64) - b[
                cand[start : start + step]
            ].astype(xp.int64)
            sq[start : start + step] = (diff * diff).sum(axis=2)
    else:
        sq = block.astype(xp.float64)
    order = xp.argsort(sq, axis=1, kind="stable")
    sq = xp.take_along_axis(sq, order, axis=1)
    cand = xp.take_along_axis(cand, order, axis=1)
    nearest = cand[:, 0]
    d1 = sq[:, 0]
    d2 = sq[:, 1] if k > 1 else xp.full(len(a), xp.inf)
    nearest_block_value = xp.take_along_axis(block, order[:, :1], axis=1)[:, 0]
    mutual = nearest_block_value <= col_min[nearest]
    # Several rows of a can reach one column's minimum only on exact ties: keep the first.
    claimed = xp.nonzero(mutual)[0]
    _, first = xp.unique(nearest[claimed], return_index=True)
    mutual[:] = False
    mutual[claimed[first]] = True
    return nearest, xp.sqrt(xp.maximum(d1, 0)), xp.sqrt(xp.maximum(d2, 0)), mutual


def _candidates_xp(
    af: XpArray, bf: XpArray, a_sq: XpArray, b_sq: XpArray, k: int, xp: ModuleType
) -> tuple[XpArray, XpArray, XpArray]:
    """The xp definition of the candidate search (CuPy on the GPU; numpy without numba): the
    ``k`` nearest columns of every row by float32 distance (ties to the lower index), their
    values, and each column's minimum."""
    n_a, n_b = len(af), len(bf)
    chunk = CHUNK_BYTES if xp is np else max(CHUNK_BYTES, GPU_CHUNK_BYTES)
    rows = max(1, min(8192, chunk // (4 * n_b)))
    cand = xp.empty((n_a, k), xp.int64)
    block = xp.empty((n_a, k), xp.float32)
    col_min = xp.full(n_b, xp.inf, xp.float32)
    for start in range(0, n_a, rows):
        stop = min(start + rows, n_a)
        r = xp.arange(stop - start)
        dist = af[start:stop] @ bf.T
        dist *= -2
        dist += a_sq[start:stop, None]
        dist += b_sq[None, :]
        # Column minima reduce row by row (vectorised); argmin along axis 0 is far slower.
        xp.minimum(col_min, dist.min(axis=0), out=col_min)
        for t in range(k):  # k row-argmin passes beat argpartition by far on wide blocks
            j = xp.argmin(dist, axis=1)
            cand[start:stop, t] = j
            block[start:stop, t] = dist[r, j]
            dist[r, j] = xp.inf
    return cand, block, col_min


def _kernels() -> ModuleType | None:
    """The compiled CPU candidate search, or None without numba."""
    try:
        from . import _cpu_kernels
    except ImportError:
        return None
    return _cpu_kernels


def warm_up() -> None:
    """Compile (or load from numba's cache) the CPU search for uint8 descriptors, as SIFT
    gives them: contiguous arrays, B wider than one tile so that the scan sees whole tiles
    and a tile's slice, writable and read-only as loaded from files (numba compiles each
    memory layout and each of those apart)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (5, 128), dtype=np.uint8)
    b = rng.integers(0, 256, (1100, 128), dtype=np.uint8)
    nearest_neighbours(a, b)
    a.flags.writeable = b.flags.writeable = False
    nearest_neighbours(a, b)


def _threads() -> int:
    """Threads for matching: numba's count (NUMBA_NUM_THREADS; a pipeline worker's share)."""
    import numba

    return numba.get_num_threads()
