"""Dominant gradient orientations of keypoints (Lowe 2004, §5), as OpenCV computes them.

The xp functions here are the definition; :mod:`visiontk._sift._cpu_kernels` holds a compiled
CPU version of :func:`orientation_histograms` that tests compare against it.
"""

from __future__ import annotations

from .constants import (
    ORI_BINS,
    ORI_PEAK_RATIO,
    ORI_RADIUS_FACTOR,
    ORI_SIGMA_FACTOR,
    VLFEAT_ORI_SMOOTHING_PASSES,
)

#: Keypoints per vectorised chunk: bounds memory at about chunk × (2·radius+1)² samples.
CHUNK = 1024


def gradient_polar(img, rows, cols, xp):
    """Gradient magnitude and direction (degrees in [0, 360), y axis up as OpenCV) by central
    differences at integer samples ``rows``, ``cols`` of the 2-D array ``img``."""
    dx = img[rows, cols + 1] - img[rows, cols - 1]
    dy = img[rows - 1, cols] - img[rows + 1, cols]
    magnitude = xp.sqrt(dx * dx + dy * dy)
    angle = xp.degrees(xp.arctan2(dy, dx))
    angle = xp.where(angle < 0, angle + 360.0, angle)
    return magnitude, angle.astype(xp.float32)


def window_centre(x, y, subpixel: bool, xp):
    """Integer centre (col, row) of each keypoint's window, its nearest pixel, and the
    keypoint's float32 offset (fx, fy) from it: zero when the window is weighted around the
    pixel (OpenCV), the sub-pixel remainder when around the keypoint (``subpixel``, VLFeat)."""
    col = xp.rint(x).astype(xp.int64)
    row = xp.rint(y).astype(xp.int64)
    if not subpixel:
        zeros = xp.zeros(col.shape[0], xp.float32)
        return col, row, zeros, zeros
    return col, row, (x - col).astype(xp.float32), (y - row).astype(xp.float32)


def window_radius(scale, factor: float, xp):
    """Integer window radius ``round(factor · scale)`` per keypoint (cvRound: half to even)."""
    return xp.rint(factor * scale).astype(xp.int64)


def raw_orientation_histograms(gaussians, layer, x, y, scale, xp, *, subpixel: bool = False):
    """36-bin histograms of Gaussian-weighted gradient directions around keypoints.

    Parameters
    ----------
    gaussians : (n_layers, h, w) float32 Gaussian images of one octave
    layer : int array, the keypoint's Gaussian layer
    x, y : float arrays, the keypoint's position in octave pixels; the window is centred on
        its nearest pixel
    scale : float array, the keypoint's sigma in octave pixels
    subpixel : the Gaussian weight centred on the keypoint itself (VLFeat), not on that pixel
        (OpenCV)

    Returns
    -------
    (N, 36) float32. Bin k collects directions round(k·10°); the square window of radius
    round(4.5·scale) is weighted by a Gaussian of sigma 1.5·scale, as OpenCV.
    """
    count = int(layer.shape[0])
    hist = xp.zeros((count, ORI_BINS), dtype=xp.float32)
    if count == 0:
        return hist
    _, h, w = gaussians.shape
    col, row, fx, fy = window_centre(x, y, subpixel, xp)
    radius = window_radius(scale, ORI_RADIUS_FACTOR, xp)
    weight_scale = (-1.0 / (2.0 * (ORI_SIGMA_FACTOR * scale) ** 2)).astype(xp.float32)
    for start in range(0, count, CHUNK):
        sl = slice(start, min(start + CHUNK, count))
        r_max = int(radius[sl].max())
        offs = xp.arange(-r_max, r_max + 1)
        di = xp.repeat(offs, offs.shape[0])[None, :]
        dj = xp.tile(offs, offs.shape[0])[None, :]
        rad = radius[sl, None]
        ys = row[sl, None] + di
        xs = col[sl, None] + dj
        valid = (
            (xp.abs(di) <= rad)
            & (xp.abs(dj) <= rad)
            & (ys > 0)
            & (ys < h - 1)
            & (xs > 0)
            & (xs < w - 1)
        )
        ys = xp.clip(ys, 1, h - 2)
        xs = xp.clip(xs, 1, w - 2)
        plane = gaussians.reshape(-1, w)
        base_row = layer[sl, None] * h
        magnitude, angle = gradient_polar(plane, base_row + ys, xs, xp)
        vi = di.astype(xp.float32) - fy[sl, None]
        vj = dj.astype(xp.float32) - fx[sl, None]
        weight = xp.exp((vi * vi + vj * vj) * weight_scale[sl, None])
        bins = xp.rint(angle * (ORI_BINS / 360.0)).astype(xp.int64) % ORI_BINS
        contrib = xp.where(valid, weight * magnitude, 0).astype(xp.float32)
        n = sl.stop - sl.start
        target = (xp.arange(n)[:, None] * ORI_BINS + bins).reshape(-1)
        raw = xp.bincount(target, weights=contrib.reshape(-1), minlength=n * ORI_BINS)
        hist[sl] = raw.reshape(n, ORI_BINS).astype(xp.float32)
    return hist


def smooth_histograms(hist, xp, smoothing: str = "opencv"):
    """Circular smoothing of orientation histograms: [1 4 6 4 1]/16 once (OpenCV's order of
    sums) or, with ``smoothing="vlfeat"``, [1 1 1]/3 six times (VLFeat, what COLMAP runs: a
    wider, nearly Gaussian kernel of sigma 1.4 bins, steadier peaks under noise).

    Example
    -------
    >>> hist = np.zeros((1, 36), np.float32); hist[0, 0] = 1.0
    >>> float(smooth_histograms(hist, np)[0, 0])
    0.375
    >>> round(float(smooth_histograms(hist, np, "vlfeat")[0, 0]), 4)
    0.1934
    """
    if smoothing == "vlfeat":
        out = hist
        for _ in range(VLFEAT_ORI_SMOOTHING_PASSES):
            out = (xp.roll(out, 1, axis=1) + out + xp.roll(out, -1, axis=1)) * (1.0 / 3.0)
        return out.astype(xp.float32)
    m2 = xp.roll(hist, 2, axis=1)
    m1 = xp.roll(hist, 1, axis=1)
    p1 = xp.roll(hist, -1, axis=1)
    p2 = xp.roll(hist, -2, axis=1)
    return ((m2 + p2) * (1.0 / 16.0) + (m1 + p1) * (4.0 / 16.0) + hist * (6.0 / 16.0)).astype(
        xp.float32
    )


def dominant_orientations(hist, xp, max_orientations: int = 0):
    """Peaks of smoothed histograms that reach 0.8 of the highest, refined by a parabola;
    with ``max_orientations`` > 0, only that many of each keypoint's highest peaks (COLMAP
    keeps 2).

    Returns (keypoint index, angle) arrays, one entry per peak, ordered by keypoint then bin;
    the angle follows cv2.KeyPoint (degrees, 360 − direction, since image y points down).

    Example
    -------
    >>> hist = np.zeros((1, 36), np.float32)
    >>> hist[0, 8:11] = [0.5, 1.0, 0.5]   # gradients pointing at 90° (bin 9), y down
    >>> dominant_orientations(hist, np)
    (array([0]), array([270.], dtype=float32))
    """
    left = xp.roll(hist, 1, axis=1)
    right = xp.roll(hist, -1, axis=1)
    threshold = hist.max(axis=1, keepdims=True) * ORI_PEAK_RATIO
    peaks = (hist > left) & (hist > right) & (hist >= threshold)
    if max_orientations:
        peaks = _highest_peaks(hist, peaks, max_orientations, xp)
    which, k = xp.nonzero(peaks)
    lo, mid, hi = left[which, k], hist[which, k], right[which, k]
    bin_ = k + 0.5 * (lo - hi) / (lo - 2 * mid + hi)
    bin_ = xp.where(bin_ < 0, bin_ + ORI_BINS, xp.where(bin_ >= ORI_BINS, bin_ - ORI_BINS, bin_))
    angle = (360.0 - (360.0 / ORI_BINS) * bin_).astype(xp.float32)
    angle = xp.where(xp.abs(angle - 360.0) < 1.2e-7 * 360.0, 0.0, angle).astype(xp.float32)
    return which, angle


def _highest_peaks(hist, peaks, count: int, xp):
    """``peaks`` with only the ``count`` highest of each keypoint kept (ties: lower bin first).
    Only the few keypoints with more peaks than that are ranked."""
    many = xp.nonzero(peaks.sum(axis=1) > count)[0]
    if many.shape[0] == 0:
        return peaks
    height = xp.where(peaks[many], hist[many], -1.0)
    bins = xp.arange(hist.shape[1])
    higher = (height[:, None, :] > height[:, :, None]) | (
        (height[:, None, :] == height[:, :, None]) & (bins[None, :] < bins[:, None])
    )
    rank = higher.sum(axis=2)  # peaks of the keypoint above each bin
    peaks = peaks.copy()
    peaks[many] &= rank < count
    return peaks


def orientation_scale(sigma: float, n_octave_layers: int, layer, offset_layer, xp):
    """Keypoint sigma in octave pixels: sigma · 2^((layer + offset) / n_octave_layers)."""
    return (sigma * xp.exp2((layer + offset_layer) / float(n_octave_layers))).astype(xp.float32)
