"""CUDA versions of SIFT's three heavy loops (kernels/sift.cu, loaded with cupy.RawModule).

Same interface as :mod:`visiontk.sift._cpu_kernels` and the xp definitions; importing this
module raises ImportError without CuPy.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cupy as cp

from .constants import DESCR_BINS, DESCR_WIDTH, IMAGE_BORDER, ORI_BINS

SOURCE = Path(__file__).with_name("kernels") / "sift.cu"
#: Threads per block for the per-keypoint kernels (one block per keypoint).
BLOCK = 128


@functools.cache
def _module(device_id: int):
    return cp.RawModule(code=SOURCE.read_text(), options=("--std=c++14",))


def _kernel(name: str):
    return _module(cp.cuda.Device().id).get_function(name)


def find_candidates(octave, threshold: float, xp=cp):
    """CUDA :func:`visiontk.sift.detect.find_candidates`; candidates in row-major order."""
    g = cp.ascontiguousarray(octave.gaussians, dtype=cp.float32)
    n_gauss, h, w = g.shape
    inner = (n_gauss - 3) * h * w
    # Extrema are sparse: a tenth of the pixels is a generous bound; rerun bigger if exceeded.
    capacity = max(1024, inner // 10)
    while True:
        count = cp.zeros(1, cp.uint64)
        out = [cp.empty(capacity, cp.int64) for _ in range(3)]
        blocks = min((inner + 255) // 256, 65535 * 8)
        _kernel("extrema")((blocks,), (256,),
                           (g, cp.int32(n_gauss), cp.int32(h), cp.int32(w),
                            cp.float32(threshold), cp.int32(IMAGE_BORDER), cp.uint64(capacity),
                            count, *out))
        found = int(count.get()[0])
        if found <= capacity:
            break
        capacity = found
    layer, row, col = (a[:found] for a in out)
    order = cp.argsort((layer * h + row) * w + col)
    return layer[order], row[order], col[order]


def raw_orientation_histograms(gaussians, layer, row, col, scale, xp=cp):
    """CUDA :func:`visiontk.sift.orient.raw_orientation_histograms`."""
    g = cp.ascontiguousarray(gaussians, dtype=cp.float32)
    _, h, w = g.shape
    count = int(layer.shape[0])
    hist = cp.zeros((count, ORI_BINS), cp.float32)
    if count:
        _kernel("orientation_histograms")(
            (count,), (BLOCK,),
            (g, cp.int32(h), cp.int32(w), layer.astype(cp.int64), row.astype(cp.int64),
             col.astype(cp.int64), scale.astype(cp.float32), cp.int32(count), hist))
    return hist


def raw_descriptors(gaussians, layer, x, y, direction, scale, xp=cp):
    """CUDA :func:`visiontk.sift.describe.raw_descriptors`."""
    g = cp.ascontiguousarray(gaussians, dtype=cp.float32)
    _, h, w = g.shape
    count = int(layer.shape[0])
    out = cp.zeros((count, DESCR_WIDTH * DESCR_WIDTH * DESCR_BINS), cp.float32)
    if count:
        _kernel("descriptors")(
            (count,), (BLOCK,),
            (g, cp.int32(h), cp.int32(w), layer.astype(cp.int64), x.astype(cp.float32),
             y.astype(cp.float32), direction.astype(cp.float32), scale.astype(cp.float32),
             cp.int32(count), out))
    return out
