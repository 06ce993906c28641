"""Compiled CPU versions of SIFT's per-pixel and per-keypoint loops (numba).

Each function computes exactly what its xp definition computes (``detect.find_candidates``,
``orient.raw_orientation_histograms``, ``describe.raw_descriptors``); tests compare the two on
the same input. They exist because the vectorised numpy forms spend most of their time
materialising windows and scatter indices: fused loops are several times faster on two cores.
Importing this module raises ImportError when numba is missing; callers then use the xp code.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .._numba_cache import use_user_cache
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


@nb.njit(cache=True, inline="always")
def _dog(g, layer, r, c):
    return g[layer + 1, r, c] - g[layer, r, c]


@nb.njit(cache=True, inline="always")
def _is_extremum(g, layer, r, c, threshold):
    # D is read from the Gaussians (D_l = G_l+1 − G_l) so no DoG stack is ever stored.
    v = _dog(g, layer, r, c)
    if v > threshold:
        for dl in (0, -1, 1):
            for dr in range(-1, 2):
                for dc in range(-1, 2):
                    if _dog(g, layer + dl, r + dr, c + dc) > v:
                        return False
        return True
    if v < -threshold:
        for dl in (0, -1, 1):
            for dr in range(-1, 2):
                for dc in range(-1, 2):
                    if _dog(g, layer + dl, r + dr, c + dc) < v:
                        return False
        return True
    return False


@nb.njit(parallel=True, cache=True)
def _extrema(g, threshold, border):
    # Two passes over rows (count, then write at prefix-sum offsets) give the coordinates
    # directly, in row-major order, without a full-size mask to scan afterwards.
    n_gauss, h, w = g.shape
    rows = (n_gauss - 3) * h
    counts = np.zeros(rows + 1, np.int64)
    for k in nb.prange(rows):
        layer = k // h + 1
        r = k % h
        if r < border or r >= h - border:
            continue
        found = 0
        for c in range(border, w - border):
            if _is_extremum(g, layer, r, c, threshold):
                found += 1
        counts[k + 1] = found
    offsets = np.cumsum(counts)
    total = offsets[rows]
    out_layer = np.empty(total, np.int64)
    out_row = np.empty(total, np.int64)
    out_col = np.empty(total, np.int64)
    for k in nb.prange(rows):
        if counts[k + 1] == 0:
            continue
        layer = k // h + 1
        r = k % h
        at = offsets[k]
        for c in range(border, w - border):
            if _is_extremum(g, layer, r, c, threshold):
                out_layer[at] = layer
                out_row[at] = r
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


@nb.njit(cache=True, inline="always")
def _atan2_degrees(y, x):
    ax = abs(x)
    ay = abs(y)
    eps = np.float32(2.220446e-16)
    if ax >= ay:
        t = ay / (ax + eps)
        t2 = t * t
        a = (((_ATAN_P7 * t2 + _ATAN_P5) * t2 + _ATAN_P3) * t2 + _ATAN_P1) * t
    else:
        t = ax / (ay + eps)
        t2 = t * t
        a = np.float32(90.0) - (((_ATAN_P7 * t2 + _ATAN_P5) * t2 + _ATAN_P3) * t2 + _ATAN_P1) * t
    if x < 0:
        a = np.float32(180.0) - a
    if y < 0:
        a = np.float32(360.0) - a
    return a


@nb.njit(cache=True, inline="always")
def _polar(img, layer, y, x):
    dx = img[layer, y, x + 1] - img[layer, y, x - 1]
    dy = img[layer, y - 1, x] - img[layer, y + 1, x]
    return np.float32(math.sqrt(dx * dx + dy * dy)), _atan2_degrees(dy, dx)


@nb.njit(cache=True, inline="always")
def _gaussian_table(radius, scale, shift):
    """exp(scale · (t − shift)²) for t in −radius..radius: a 2-D Gaussian window is the
    product of two such tables."""
    table = np.empty(2 * radius + 1, np.float32)
    for t in range(-radius, radius + 1):
        u = np.float32(t) - shift
        table[t + radius] = np.float32(math.exp(u * u * scale))
    return table


@nb.njit(parallel=True, cache=True)
def _orientation_kernel(gaussians, layer, row, col, scale):
    count = layer.shape[0]
    _, h, w = gaussians.shape
    hist = np.zeros((count, ORI_BINS), np.float32)
    for k in nb.prange(count):
        sc = scale[k]
        radius = int(np.rint(np.float32(ORI_RADIUS_FACTOR) * sc))
        sig = np.float32(ORI_SIGMA_FACTOR) * sc
        wscale = np.float32(-1.0) / (np.float32(2.0) * sig * sig)
        window = _gaussian_table(radius, wscale, np.float32(0.0))
        for i in range(-radius, radius + 1):
            y = row[k] + i
            if y <= 0 or y >= h - 1:
                continue
            for j in range(-radius, radius + 1):
                x = col[k] + j
                if x <= 0 or x >= w - 1:
                    continue
                mag, ang = _polar(gaussians, layer[k], y, x)
                weight = window[i + radius] * window[j + radius]
                b = int(np.rint(ang * np.float32(ORI_BINS / 360.0))) % ORI_BINS
                hist[k, b] += weight * mag
    return hist


def raw_orientation_histograms(gaussians, layer, row, col, scale):
    """Compiled :func:`visiontk._sift.orient.raw_orientation_histograms`."""
    return _orientation_kernel(np.ascontiguousarray(gaussians), layer.astype(np.int64),
                               row.astype(np.int64), col.astype(np.int64),
                               scale.astype(np.float32))


@nb.njit(cache=True, inline="always")
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


@nb.njit(parallel=True, cache=True, fastmath=True)
def _descriptor_kernel(gaussians, layer, x, y, direction, scale):
    count = layer.shape[0]
    _, h, w = gaussians.shape
    d = DESCR_WIDTH
    n = DESCR_BINS
    out = np.zeros((count, d * d * n), np.float32)
    diag = int(math.sqrt(float(h) * h + float(w) * w))
    for k in nb.prange(count):
        hist = np.zeros((d + 2, d + 2, n + 2), np.float32)
        hist_width = np.float32(DESCR_SCALE_FACTOR) * scale[k]
        radius = int(np.rint(hist_width * np.float32(_SQRT2 * (d + 1) * 0.5)))
        radius = min(radius, diag)
        theta = direction[k] * np.float32(math.pi / 180.0)
        cos_t = np.float32(math.cos(theta)) / hist_width
        sin_t = np.float32(math.sin(theta)) / hist_width
        # As OpenCV, the grid is centred on the nearest pixel of the keypoint. (Centring it on
        # the sub-pixel position was measured in bench/sift_bench.py: MMA +0.002, H@1 mixed;
        # not worth descriptors that no longer match cv2.SIFT's.)
        px = int(np.rint(x[k]))
        py = int(np.rint(y[k]))
        # |rotated offset|² = |offset|² / hist_width², so the window factorises into i and j.
        window = _gaussian_table(radius, np.float32(-1.0 / (d * d * 0.5))
                                 / (hist_width * hist_width), np.float32(0.0))
        lay = layer[k]
        ori = direction[k]
        half = np.float32((d + 1) * 0.5)
        for i in range(-radius, radius + 1):
            yy = py + i
            if yy <= 0 or yy >= h - 1:
                continue
            v = np.float32(i)
            # Only columns whose rotated position can fall inside the grid: about half of the
            # square window. The exact test below still decides each sample.
            lo, hi = _slab(sin_t, v * cos_t, half, radius)
            lo2, hi2 = _slab(cos_t, -v * sin_t, half, radius)
            for j in range(max(lo, lo2), min(hi, hi2) + 1):
                xx = px + j
                if xx <= 0 or xx >= w - 1:
                    continue
                u = np.float32(j)
                c_rot = u * cos_t - v * sin_t
                r_rot = u * sin_t + v * cos_t
                rbin = r_rot + np.float32(d // 2 - 0.5)
                cbin = c_rot + np.float32(d // 2 - 0.5)
                if not (rbin > -1 and rbin < d and cbin > -1 and cbin < d):
                    continue
                mag, ang = _polar(gaussians, lay, yy, xx)
                weight = window[i + radius] * window[j + radius]
                obin = (ang - ori) * np.float32(n / 360.0)
                mag = mag * weight
                r0 = int(math.floor(rbin))
                c0 = int(math.floor(cbin))
                o0 = int(math.floor(obin))
                fr = rbin - r0
                fc = cbin - c0
                fo = obin - o0
                o0 = o0 % n
                for dr in range(2):
                    wr = fr if dr else np.float32(1.0) - fr
                    for dc in range(2):
                        wc = fc if dc else np.float32(1.0) - fc
                        for do in range(2):
                            wo = fo if do else np.float32(1.0) - fo
                            hist[r0 + 1 + dr, c0 + 1 + dc, o0 + do] += mag * wr * wc * wo
        for r in range(d):
            for c in range(d):
                hist[r + 1, c + 1, 0] += hist[r + 1, c + 1, n]
                hist[r + 1, c + 1, 1] += hist[r + 1, c + 1, n + 1]
                for b in range(n):
                    out[k, (r * d + c) * n + b] = hist[r + 1, c + 1, b]
    return out


def raw_descriptors(gaussians, layer, x, y, direction, scale):
    """Compiled :func:`visiontk._sift.describe.raw_descriptors`."""
    return _descriptor_kernel(np.ascontiguousarray(gaussians), layer.astype(np.int64),
                              x.astype(np.float32), y.astype(np.float32),
                              direction.astype(np.float32), scale.astype(np.float32))


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel on a tiny input, so the first real
    image is not charged for it."""
    g = np.zeros((6, 16, 16), np.float32)
    one = np.ones(1, np.int64) * 8
    _extrema(g, np.float32(1.0), IMAGE_BORDER)
    _orientation_kernel(g, one // 8, one, one, np.ones(1, np.float32))
    _descriptor_kernel(g, one // 8, one.astype(np.float32), one.astype(np.float32),
                       np.zeros(1, np.float32), np.ones(1, np.float32))
