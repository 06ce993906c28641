"""The CPU's exact nearest-neighbour search: distance tiles from BLAS, scanned while hot.

For a tile of rows of A against columns of B, one float32 GEMM (BLAS) gives the dot products
and :func:`scan_tile` (numba, releasing the GIL) turns them into squared distances exactly as
the numpy path does (``dot · −2 + |a|² + |b|²``, in that order, float32, no fused
multiply-add), keeps each row's three nearest columns (ties to the lower index, as argmin) and
the minimum of each column (for the mutual test). Tiles of 4 MB stay in the cache between the
GEMM and the scan; the rows are split into one band per thread, each band running its GEMMs
on one BLAS thread (threadpoolctl), so the scans run in parallel too. Measured against FAISS's
exact IndexFlatL2 in bench/match_bench.py.

Importing this module raises ImportError when numba is missing; callers then use the xp code.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np

from .._numba_cache import use_user_cache
from . import _cpu_kernels_int as _int

use_user_cache()

#: Bytes of one distance tile (rows × columns × 4): stays in the cache between GEMM and scan.
TILE_BYTES = 4 * 2**20
#: Columns of B per tile.
TILE_COLUMNS = 1024
#: Candidates kept per row (the integer re-score orders the three nearest).
K = 3
#: Below this many distances, one band (BLAS threads as they are): splitting costs more than
#: it saves.
BANDS_FROM = 2**20

_lock = threading.Lock()
_pool: dict = {}


@nb.njit(cache=True, nogil=True, error_model="numpy")
def scan_tile(dots, a_sq, b_sq, col0, top_val, top_idx, col_min):  # pragma: no cover - numba
    """Fold one tile (rows × columns of dot products) into each row's three nearest (values
    ascending, indices into B) and into the columns' minima."""
    rows, cols = dots.shape
    d = np.empty(cols, np.float32)
    minus_two = np.float32(-2.0)
    for i in range(rows):
        ai = a_sq[i]
        row = dots[i]
        v0, v1, v2 = top_val[i, 0], top_val[i, 1], top_val[i, 2]
        below = 0
        for j in range(cols):  # vectorised: distances, column minima, and how many could enter
            v = row[j] * minus_two + ai
            v = v + b_sq[j]
            d[j] = v
            col_min[j] = min(col_min[j], v)
            below += v < v2
        if below == 0:  # most tiles after a row's first: none nearer than its third nearest
            continue
        i0, i1, i2 = top_idx[i, 0], top_idx[i, 1], top_idx[i, 2]
        for j in range(cols):  # nearly always one compare: the third nearest so far
            v = d[j]
            if v < v2:
                jj = col0 + j
                if v < v1:
                    v2, i2 = v1, i1
                    if v < v0:
                        v1, i1 = v0, i0
                        v0, i0 = v, jj
                    else:
                        v1, i1 = v, jj
                else:
                    v2, i2 = v, jj
        top_val[i, 0], top_val[i, 1], top_val[i, 2] = v0, v1, v2
        top_idx[i, 0], top_idx[i, 1], top_idx[i, 2] = i0, i1, i2


def nearest_candidates(
    af: np.ndarray,
    bf: np.ndarray,
    a_sq: np.ndarray,
    b_sq: np.ndarray,
    threads: int,
    a: np.ndarray | None = None,
    b: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's three nearest columns (N×3 indices and float32 squared distances, ascending,
    ties to the lower index; index −1 and inf where B has fewer than three rows) and each
    column's minimum; ``af``, ``bf``: float32 descriptors, ``a_sq``, ``b_sq``: their squared
    norms. Given the uint8 descriptors themselves (``a``, ``b``, 128-D) on a CPU with AVX2 or
    VNNI, the distance tiles come from :mod:`._cpu_kernels_int` instead of BLAS: the same
    values."""
    n_a, n_b = len(af), len(bf)
    cols = min(n_b, TILE_COLUMNS)
    rows = max(1, min(n_a, TILE_BYTES // (4 * cols)))
    top_val = np.full((n_a, K), np.inf, np.float32)
    top_idx = np.full((n_a, K), -1, np.int64)
    bands = 1 if n_a * n_b < BANDS_FROM else max(1, min(threads, -(-n_a // rows)))
    col_min = np.full((bands, n_b), np.inf, np.float32)
    bounds = [n_a * t // bands for t in range(bands + 1)]

    integer = _integer_path(a, b)
    if integer is not None:
        assert a is not None and b is not None  # _integer_path is None without them
        a_pad, packed = _int.pad_rows(integer, a), _int.pack_columns(integer, b)
        row_terms = _int.row_terms(integer, a, a_sq)
        shape = _int.tile_shape(integer, rows, cols)
    else:
        row_terms, shape = a_sq, (rows, cols)

    def band(t: int) -> None:
        tile = np.empty(shape, np.float32)
        for c0 in range(0, n_b, cols):
            c1 = min(c0 + cols, n_b)
            for r0 in range(bounds[t], bounds[t + 1], rows):
                r1 = min(r0 + rows, bounds[t + 1])
                out = tile[: r1 - r0, : c1 - c0]
                if integer is not None:
                    _int.dot_tile(integer, a_pad, r0, r1, packed, c0, c1, tile)
                else:
                    np.matmul(af[r0:r1], bf[c0:c1].T, out=out)
                scan_tile(
                    out,
                    row_terms[r0:r1],
                    b_sq[c0:c1],
                    c0,
                    top_val[r0:r1],
                    top_idx[r0:r1],
                    col_min[t, c0:c1],
                )

    if bands == 1:
        band(0)
    else:
        pool, controller = _threads(bands)
        # one BLAS thread per band: the bands are the parallelism (BLAS threads spinning
        # beside the scans would slow both)
        with controller.limit(limits=1, user_api="blas"):
            list(pool.map(band, range(bands)))
    return top_idx, top_val, col_min.min(axis=0)


def _integer_path(a, b) -> _int.Path | None:
    """The kernel of :mod:`._cpu_kernels_int` that makes the distance tiles: for two uint8
    128-D descriptor sets, the one this CPU's SIMD level allows (None: float32 BLAS)."""
    if (
        a is None
        or b is None
        or a.dtype != np.uint8
        or b.dtype != np.uint8
        or a.ndim != 2
        or b.ndim != 2
        or a.shape[1] != _int.DIMS
        or b.shape[1] != _int.DIMS
    ):
        return None
    return _int.chosen()


def _threads(n: int):
    """A thread pool of ``n`` and the BLAS thread controller, made once per process."""
    with _lock:
        if n not in _pool:
            from threadpoolctl import ThreadpoolController

            _pool[n] = (
                ThreadPoolExecutor(n, thread_name_prefix="visiontk-match"),
                ThreadpoolController(),
            )
        return _pool[n]


@nb.njit(cache=True, nogil=True)
def rescore(a, b, cand):  # pragma: no cover - numba
    """Exact squared distances (integers, as float64) of each row of ``a`` to its candidate
    rows of ``b``; −1 candidates (B shorter than three rows) stay inf."""
    n, k = cand.shape
    out = np.full((n, k), np.inf)
    for i in range(n):
        for t in range(k):
            j = cand[i, t]
            if j < 0:
                continue
            acc = np.int64(0)
            for c in range(a.shape[1]):
                diff = np.int64(a[i, c]) - np.int64(b[j, c])
                acc += diff * diff
            out[i, t] = acc
    return out
