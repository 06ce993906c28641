"""Compiled CPU versions of SIFT's per-pixel and per-keypoint loops (numba).

Each function computes exactly what its xp definition computes (``detect.find_candidates``,
``orient.raw_orientation_histograms``, ``describe.raw_descriptors``); tests compare the two on
the same input. They exist because the vectorised numpy forms spend most of their time
materialising windows and scatter indices, which fused loops never build (bench/sift_bench.py).
Importing this module raises ImportError when numba is missing; callers then use the xp code.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .._numba_cache import KernelOptions, use_user_cache
from .constants import (
    ATAN_P1,
    ATAN_P3,
    ATAN_P5,
    ATAN_P7,
    DESCR_BINS,
    DESCR_SCALE_FACTOR,
    DESCR_WIDTH,
    IMAGE_BORDER,
    ORI_BINS,
    ORI_RADIUS_FACTOR,
    ORI_SIGMA_FACTOR,
)

# before the first @njit(cache=True): compiled kernels go to a per-user folder
use_user_cache()

_SQRT2 = math.sqrt(2.0)

# error_model="numpy": a float division by zero gives inf/nan instead of raising, which keeps
# the per-sample loops free of branches, so LLVM vectorises them (the descriptor's sample
# pass most of all). Of fast-math only no-NaN/no-inf/no-signed-zero (what min/max need to
# vectorise) and FMA contraction (fewer instructions per sample): with reciprocal or function
# approximations as well (fastmath=True) the vectorised body and its scalar remainder rounded
# some samples differently, and which samples take which path depends on buffer addresses:
# two processes gave descriptors a byte apart (tests/sift/test_determinism.py).
_KERNEL: KernelOptions = {
    "cache": True,
    "fastmath": {"nnan", "ninf", "nsz", "contract"},
    "error_model": "numpy",
}
#: Rows per parallel task of the extrema search.
BLOCK_ROWS = 32


@nb.njit(inline="always", **_KERNEL)
def _beyond_layers(below, above, v, c):
    """Whether D = ``v`` at column c is also an extremum against the 3×3 neighbours in the
    layers below and above (rows r−1, r, r+1 of each: ``below`` and ``above`` are 3 × w)."""
    if v > 0:
        for dr in range(3):
            for dc in range(c - 1, c + 2):
                if below[dr, dc] > v or above[dr, dc] > v:
                    return False
        return True
    for dr in range(3):
        for dc in range(c - 1, c + 2):
            if below[dr, dc] < v or above[dr, dc] < v:
                return False
    return True


@nb.njit(inline="always", **_KERNEL)
def _in_layer_extrema(above, here, below, threshold, border, flags):
    """flags[c] = 1 where D is beyond ±threshold and an extremum of its 3×3 neighbours in
    its own layer (ties count): a branch-free, vectorised filter that leaves about one pixel
    in a hundred for the full 3×3×3 test. Written out over nine shifted slices indexed from 0:
    indices like ``c − 1`` could be negative as far as LLVM knows, and numba's wrap-around
    of negative indices then kept the loop from vectorising well (5× slower); so did
    helper functions."""
    n = here.shape[0] - 2 * border
    a0, a1, a2 = above[border - 1 :], above[border:], above[border + 1 :]
    h0, h1, h2 = here[border - 1 :], here[border:], here[border + 1 :]
    b0, b1, b2 = below[border - 1 :], below[border:], below[border + 1 :]
    out = flags[border:]
    found = 0
    for c in range(n):
        # a tree of two-argument max/min: the form measured to vectorise
        hi_a = max(a0[c], a1[c])
        hi_b = max(a2[c], h0[c])
        hi_c = max(h2[c], b0[c])
        hi_d = max(b1[c], b2[c])
        lo_a = min(a0[c], a1[c])
        lo_b = min(a2[c], h0[c])
        lo_c = min(h2[c], b0[c])
        lo_d = min(b1[c], b2[c])
        hi = max(max(hi_a, hi_b), max(hi_c, hi_d))  # noqa: PLW3301 - the tree vectorises
        lo = min(min(lo_a, lo_b), min(lo_c, lo_d))  # noqa: PLW3301
        v = h1[c]
        flag = ((v > threshold) & (v >= hi)) | ((v < -threshold) & (v <= lo))
        out[c] = flag
        found += flag
    return found


@nb.njit(parallel=True, **_KERNEL)
def _extrema(g, threshold, border):
    # Pass 1 tests each pixel once, marking extrema in a byte per pixel and counting them per
    # row; pass 2 writes coordinates at the rows' prefix-sum offsets, in row-major order,
    # scanning only the marks of rows that have any.
    n_gauss, h, w = g.shape
    rows = (n_gauss - 3) * h
    counts = np.zeros(rows + 1, np.int64)
    marks = np.zeros((rows, w), np.uint8)
    # Blocks of rows, every layer of a block at once: each DoG row is computed once per block
    # from two Gaussian rows (D is never stored whole), and the cross-layer test reads rows
    # already in cache (three DoG rows of every layer: 5 × 3 × 3840 floats on a doubled
    # 1080p image, within L2).
    inner = h - 2 * border
    n_dog = n_gauss - 1
    for block in nb.prange((inner + BLOCK_ROWS - 1) // BLOCK_ROWS):
        first = border + block * BLOCK_ROWS
        last = min(first + BLOCK_ROWS, h - border)
        # DoG rows r − 1, r, r + 1 of every layer, at row mod 3
        dog = np.empty((n_dog, 3, w), np.float32)
        for r in range(first, last):
            for rr in range(r - 1 if r == first else r + 1, r + 2):
                for d in range(n_dog):
                    out = dog[d, rr % 3]
                    below_row = g[d, rr]
                    above_row = g[d + 1, rr]
                    for c in range(w):
                        out[c] = above_row[c] - below_row[c]
            for layer in range(1, n_gauss - 2):
                k = (layer - 1) * h + r
                mark = marks[k]
                here = dog[layer]
                if (
                    _in_layer_extrema(
                        here[(r - 1) % 3], here[r % 3], here[(r + 1) % 3], threshold, border, mark
                    )
                    == 0
                ):
                    continue
                found = 0
                centre = here[r % 3]
                for c in range(border, w - border):
                    if mark[c]:
                        if _beyond_layers(dog[layer - 1], dog[layer + 1], centre[c], c):
                            found += 1
                        else:
                            mark[c] = 0
                counts[k + 1] = found
    offsets = np.cumsum(counts)
    total = offsets[rows]
    out_layer = np.empty(total, np.int64)
    out_row = np.empty(total, np.int64)
    out_col = np.empty(total, np.int64)
    for k in nb.prange(rows):
        if counts[k + 1] == 0:
            continue
        at = offsets[k]
        mark = marks[k]
        for c in range(border, w - border):
            if mark[c]:
                out_layer[at] = k // h + 1
                out_row[at] = k % h
                out_col[at] = c
                at += 1
    return out_layer, out_row, out_col


def find_candidates(octave, threshold: float):
    """Compiled :func:`visiontk._sift.detect.find_candidates` (same inputs and outputs)."""
    return _extrema(octave.gaussians, np.float32(threshold), IMAGE_BORDER)


# OpenCV's fastAtan2 polynomial (constants.ATAN_P*): far cheaper than libm's atan2 in these
# inner loops.
_ATAN_P1 = np.float32(ATAN_P1)
_ATAN_P3 = np.float32(ATAN_P3)
_ATAN_P5 = np.float32(ATAN_P5)
_ATAN_P7 = np.float32(ATAN_P7)


@nb.njit(inline="always", **_KERNEL)
def _atan2_degrees(y, x):
    # Selects, not branches, so that loops over samples vectorise; OpenCV's fastAtan2 values.
    ax = abs(x)
    ay = abs(y)
    steep = ay > ax
    t = (ax if steep else ay) / ((ay if steep else ax) + np.float32(2.220446e-16))
    t2 = t * t
    a = (((_ATAN_P7 * t2 + _ATAN_P5) * t2 + _ATAN_P3) * t2 + _ATAN_P1) * t
    a = np.float32(90.0) - a if steep else a
    a = np.float32(180.0) - a if x < 0 else a
    return np.float32(360.0) - a if y < 0 else a


@nb.njit(inline="always", **_KERNEL)
def _gradient(up, mid, down, t):
    """Gradient (dx, dy), y up as OpenCV, at sample t of a row: ``mid`` starts one sample to
    the left of it, ``up`` and ``down`` (the rows above and below) at it."""
    return mid[t + 2] - mid[t], up[t] - down[t]


@nb.njit(inline="always", **_KERNEL)
def _window_centre(x, y, subpixel):
    """The window's centre pixel (nearest to the keypoint) and the keypoint's offset from it,
    or (0, 0) when the window is weighted around the pixel (OpenCV) rather than the keypoint
    (``subpixel``, VLFeat)."""
    px = int(np.rint(x))
    py = int(np.rint(y))
    if subpixel:
        return px, py, x - np.float32(px), y - np.float32(py)
    return px, py, np.float32(0.0), np.float32(0.0)


@nb.njit(cache=True, inline="always")
def _gaussian_table(radius, scale, shift):
    """exp(scale · (t − shift)²) for t in −radius..radius: a 2-D Gaussian window is the
    product of two such tables."""
    table = np.empty(2 * radius + 1, np.float32)
    for t in range(-radius, radius + 1):
        u = np.float32(t) - shift
        table[t + radius] = np.float32(math.exp(u * u * scale))
    return table


@nb.njit(inline="always", **_KERNEL)
def _orientation_row(up, mid, down, wj, wi, weighted, bins, cnt):
    for t in range(cnt):
        dx, dy = _gradient(up, mid, down, t)
        weighted[t] = wi * wj[t] * np.float32(math.sqrt(dx * dx + dy * dy))
        b = np.int32(np.rint(_atan2_degrees(dy, dx) * np.float32(ORI_BINS / 360.0)))
        bins[t] = b - ORI_BINS if b >= ORI_BINS else b


@nb.njit(parallel=True, **_KERNEL)
def _orientation_kernel(gaussians, layer, x, y, scale, subpixel):
    count = layer.shape[0]
    _, h, w = gaussians.shape
    hist = np.zeros((count, ORI_BINS), np.float32)
    for k in nb.prange(count):
        sc = scale[k]
        radius = int(np.rint(np.float32(ORI_RADIUS_FACTOR) * sc))
        sig = np.float32(ORI_SIGMA_FACTOR) * sc
        wscale = np.float32(-1.0) / (np.float32(2.0) * sig * sig)
        c0, r0, fx, fy = _window_centre(x[k], y[k], subpixel)
        window_i = _gaussian_table(radius, wscale, fy)
        window_j = _gaussian_table(radius, wscale, fx)
        # Two passes, as OpenCV: a vectorised pass computes every sample's weighted magnitude
        # and bin, row by row, then a scalar pass adds them into the histogram.
        side = 2 * radius + 1
        weighted = np.empty(side * side, np.float32)
        bins = np.empty(side * side, np.int32)
        img = gaussians[layer[k]]
        j_lo = max(-radius, 1 - c0)
        cnt = min(radius, w - 2 - c0) - j_lo + 1
        x0 = c0 + j_lo
        n = 0
        for i in range(max(-radius, 1 - r0), min(radius, h - 2 - r0) + 1):
            yy = r0 + i
            _orientation_row(
                img[yy - 1, x0 : x0 + cnt],
                img[yy, x0 - 1 : x0 + cnt + 1],
                img[yy + 1, x0 : x0 + cnt],
                window_j[j_lo + radius : j_lo + radius + cnt],
                window_i[i + radius],
                weighted[n : n + cnt],
                bins[n : n + cnt],
                cnt,
            )
            n += max(cnt, 0)
        for s in range(n):
            hist[k, bins[s]] += weighted[s]
    return hist


def raw_orientation_histograms(gaussians, layer, x, y, scale, subpixel=False):
    """Compiled :func:`visiontk._sift.orient.raw_orientation_histograms`."""
    return _orientation_kernel(
        np.ascontiguousarray(gaussians),
        layer.astype(np.int64),
        x.astype(np.float32),
        y.astype(np.float32),
        scale.astype(np.float32),
        bool(subpixel),
    )


@nb.njit(inline="always", **_KERNEL)
def _slab(a, b, half, radius):
    """Integer j range (padded by one) where −half < a·j + b < half, within ±radius."""
    if abs(a) < 1e-12:
        if abs(b) < half + 1e-3:
            return -radius, radius
        return 1, 0
    lo = (-half - b) / a
    hi = (half - b) / a
    if lo > hi:
        lo, hi = hi, lo
    return max(int(math.floor(lo)) - 1, -radius), min(int(math.ceil(hi)) + 1, radius)


@nb.njit(inline="always", **_KERNEL)
def _window_row(up, mid, down, wj, wi, u0, v, us, vs, dxs, dys, ws, cnt):
    """One window row's samples, gathered for :func:`_window_samples`: offset (u, v) from
    the keypoint, gradient and Gaussian weight."""
    for t in range(cnt):
        us[t] = u0 + np.float32(t)
        vs[t] = v
        dx, dy = _gradient(up, mid, down, t)
        dxs[t] = dx
        dys[t] = dy
        ws[t] = wi * wj[t]


@nb.njit(inline="always", **_KERNEL)
def _window_samples(us, vs, dxs, dys, ws, cos_t, sin_t, ori, mags, fr, fc, fo, at, cnt):
    """Every sample of a window in one loop (a row's thirty-odd samples are too few for the
    vector loop): weighted magnitude, lower (row, col, direction) bin as a flat index into the
    padded histogram, and the fractions towards the upper bins. Samples outside the grid get
    weight 0 and index 0 (a guard cell)."""
    d = DESCR_WIDTH
    n = DESCR_BINS
    for t in range(cnt):
        u = us[t]
        v = vs[t]
        rbin = u * sin_t + v * cos_t + np.float32(d // 2 - 0.5)
        cbin = u * cos_t - v * sin_t + np.float32(d // 2 - 0.5)
        inside = (rbin > -1) & (rbin < d) & (cbin > -1) & (cbin < d)
        dx = dxs[t]
        dy = dys[t]
        mag = np.float32(math.sqrt(dx * dx + dy * dy)) * ws[t]
        obin = (_atan2_degrees(dy, dx) - ori) * np.float32(n / 360.0)
        # bins stay float32 (small integers, exact) until one conversion to int32: int64
        # bins (math.floor) held the loop to four lanes
        r0 = np.floor(rbin)
        c0 = np.floor(cbin)
        o0 = np.floor(obin)
        fr[t] = rbin - r0
        fc[t] = cbin - c0
        fo[t] = obin - o0
        o0 = o0 + np.float32(n) if o0 < 0 else o0
        flat = ((r0 + np.float32(1)) * np.float32(d + 2) + c0 + np.float32(1)) * np.float32(
            n + 2
        ) + o0
        at[t] = np.int32(flat) if inside else np.int32(0)
        mags[t] = mag if inside else np.float32(0.0)


@nb.njit(parallel=True, **_KERNEL)
def _descriptor_kernel(gaussians, layer, x, y, direction, scale, subpixel):
    count = layer.shape[0]
    _, h, w = gaussians.shape
    d = DESCR_WIDTH
    n = DESCR_BINS
    out = np.zeros((count, d * d * n), np.float32)
    diag = int(math.sqrt(float(h) * h + float(w) * w))
    half = np.float32((d + 1) * 0.5)
    size = (d + 2) * (d + 2) * (n + 2)
    # unsigned histogram offsets: numba checks signed indices for wrap-around on every access
    one = np.uint64(1)
    col_step = np.uint64(n + 2)
    row_step = np.uint64((d + 2) * (n + 2))
    for k in nb.prange(count):
        hist_width = np.float32(DESCR_SCALE_FACTOR) * scale[k]
        radius = int(np.rint(hist_width * np.float32(_SQRT2 * (d + 1) * 0.5)))
        radius = min(radius, diag)
        theta = direction[k] * np.float32(math.pi / 180.0)
        cos_t = np.float32(math.cos(theta)) / hist_width
        sin_t = np.float32(math.sin(theta)) / hist_width
        # The grid is centred on the nearest pixel of the keypoint (OpenCV) or on the keypoint
        # itself (``subpixel``, VLFeat): samples sit at offsets j − fx, i − fy from it.
        px, py, fx, fy = _window_centre(x[k], y[k], subpixel)
        # |rotated offset|² = |offset|² / hist_width², so the window factorises into i and j.
        wscale = np.float32(-1.0 / (d * d * 0.5)) / (hist_width * hist_width)
        window_i = _gaussian_table(radius, wscale, fy)
        window_j = _gaussian_table(radius, wscale, fx)
        img = gaussians[layer[k]]
        # Pass 1, vectorised row by row (as OpenCV splits it): the samples of the window.
        side = 2 * radius + 1
        mags = np.empty(side * side, np.float32)
        fr = np.empty(side * side, np.float32)
        fc = np.empty(side * side, np.float32)
        fo = np.empty(side * side, np.float32)
        at = np.empty(side * side, np.int32)
        us = np.empty(side * side, np.float32)
        vs = np.empty(side * side, np.float32)
        dxs = np.empty(side * side, np.float32)
        dys = np.empty(side * side, np.float32)
        ws = np.empty(side * side, np.float32)
        m = 0
        for i in range(max(-radius, 1 - py), min(radius, h - 2 - py) + 1):
            yy = py + i
            v = np.float32(i) - fy
            # Only columns whose rotated position can fall inside the grid: about half of the
            # square window. The exact test still decides each sample.
            lo, hi = _slab(sin_t, v * cos_t - fx * sin_t, half, radius)
            lo2, hi2 = _slab(cos_t, -v * sin_t - fx * cos_t, half, radius)
            j_lo = max(lo, lo2, 1 - px)
            cnt = min(hi, hi2, w - 2 - px) - j_lo + 1
            if cnt <= 0:
                continue
            x0 = px + j_lo
            _window_row(
                img[yy - 1, x0 : x0 + cnt],
                img[yy, x0 - 1 : x0 + cnt + 1],
                img[yy + 1, x0 : x0 + cnt],
                window_j[j_lo + radius : j_lo + radius + cnt],
                window_i[i + radius],
                np.float32(j_lo) - fx,
                v,
                us[m : m + cnt],
                vs[m : m + cnt],
                dxs[m : m + cnt],
                dys[m : m + cnt],
                ws[m : m + cnt],
                cnt,
            )
            m += cnt
        _window_samples(us, vs, dxs, dys, ws, cos_t, sin_t, direction[k], mags, fr, fc, fo, at, m)
        # Pass 2: trilinear votes into two padded histograms taken in turn, so that
        # consecutive samples (often the same bins) do not wait on each other's additions.
        hist = np.zeros(2 * size, np.float32)
        for s in range(m):
            mag = mags[s]
            b = np.uint64(at[s]) + np.uint64(s & 1) * np.uint64(size)
            v_r1 = mag * fr[s]
            v_r0 = mag - v_r1
            v_rc11 = v_r1 * fc[s]
            v_rc10 = v_r1 - v_rc11
            v_rc01 = v_r0 * fc[s]
            v_rc00 = v_r0 - v_rc01
            f = fo[s]
            v_rco111 = v_rc11 * f
            v_rco101 = v_rc10 * f
            v_rco011 = v_rc01 * f
            v_rco001 = v_rc00 * f
            hist[b] += v_rc00 - v_rco001
            hist[b + one] += v_rco001
            hist[b + col_step] += v_rc01 - v_rco011
            hist[b + col_step + one] += v_rco011
            hist[b + row_step] += v_rc10 - v_rco101
            hist[b + row_step + one] += v_rco101
            hist[b + row_step + col_step] += v_rc11 - v_rco111
            hist[b + row_step + col_step + one] += v_rco111
        # The two halves summed; direction bins n, n+1 wrap around to 0, 1.
        for r in range(d):
            for c in range(d):
                base = ((r + 1) * (d + 2) + c + 1) * (n + 2)
                for o in range(n):
                    value = hist[base + o] + hist[size + base + o]
                    if o < 2:
                        value += hist[base + n + o] + hist[size + base + n + o]
                    out[k, (r * d + c) * n + o] = value
    return out


def raw_descriptors(gaussians, layer, x, y, direction, scale, subpixel=False):
    """Compiled :func:`visiontk._sift.describe.raw_descriptors`. The keypoints are described
    in image order (layer, row, column), not as given (strongest first): neighbours' windows
    then share rows already in the cache."""
    order = np.lexsort((x, y, layer))
    out = np.empty((len(order), DESCR_WIDTH * DESCR_WIDTH * DESCR_BINS), np.float32)
    out[order] = _descriptor_kernel(
        np.ascontiguousarray(gaussians),
        layer[order].astype(np.int64),
        x[order].astype(np.float32),
        y[order].astype(np.float32),
        direction[order].astype(np.float32),
        scale[order].astype(np.float32),
        bool(subpixel),
    )
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel on a tiny input, so the first real
    image is not charged for it."""
    g = np.zeros((6, 16, 16), np.float32)
    one = np.ones(1, np.int64) * 8
    _extrema(g, np.float32(1.0), IMAGE_BORDER)
    _orientation_kernel(
        g, one // 8, one.astype(np.float32), one.astype(np.float32), np.ones(1, np.float32), False
    )
    _descriptor_kernel(
        g,
        one // 8,
        one.astype(np.float32),
        one.astype(np.float32),
        np.zeros(1, np.float32),
        np.ones(1, np.float32),
        False,
    )
