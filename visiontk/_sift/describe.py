"""SIFT descriptors: 4×4 cells × 8 directions, in OpenCV's layout and byte scaling (Lowe 2004, §6).

The xp function :func:`raw_descriptors` is the definition; :mod:`visiontk._sift._cpu_kernels`
holds a compiled CPU version that tests compare against it.
"""

from __future__ import annotations

import math

from .constants import (
    DESCR_BINS,
    DESCR_INT_FACTOR,
    DESCR_MAG_THRESHOLD,
    DESCR_SCALE_FACTOR,
    DESCR_WIDTH,
)
from .orient import gradient_polar, window_centre

#: Keypoints per vectorised chunk (memory ≈ chunk × (2·radius+1)² samples).
CHUNK = 256

#: Histogram with one guard cell on each side and two wrap-around direction bins (OpenCV).
_PADDED = (DESCR_WIDTH + 2, DESCR_WIDTH + 2, DESCR_BINS + 2)


def descriptor_radius(scale, xp):
    """Sampling radius: half the diagonal of the (d+1)-cell window, clipped to the image."""
    hist_width = DESCR_SCALE_FACTOR * scale
    return xp.rint(hist_width * math.sqrt(2.0) * (DESCR_WIDTH + 1) * 0.5).astype(xp.int64)


def raw_descriptors(gaussians, layer, x, y, direction, scale, xp, *, subpixel: bool = False):
    """Unnormalised 128-D gradient histograms around keypoints.

    Parameters
    ----------
    gaussians : (n_layers, h, w) float32 Gaussian images of one octave
    layer : int array, Gaussian layer of each keypoint
    x, y : float arrays, keypoint position in octave pixels (the grid is centred on the
        nearest pixel, as OpenCV, or with ``subpixel`` on the position itself, as VLFeat)
    direction : float array, keypoint direction in degrees, counter-clockwise (360 − cv2 angle)
    scale : float array, keypoint sigma in octave pixels

    Returns
    -------
    (N, 128) float32; entry (row·4 + col)·8 + bin, as cv2.SIFT.
    """
    count = int(layer.shape[0])
    out = xp.zeros((count, DESCR_WIDTH * DESCR_WIDTH * DESCR_BINS), dtype=xp.float32)
    if count == 0:
        return out
    _, h, w = gaussians.shape
    d, n = DESCR_WIDTH, DESCR_BINS
    radius = xp.minimum(descriptor_radius(scale, xp), int(math.hypot(h, w)))
    px, py, fx, fy = window_centre(x, y, subpixel, xp)
    theta = xp.radians(direction.astype(xp.float32))
    hist_width = (DESCR_SCALE_FACTOR * scale).astype(xp.float32)
    cos_t = (xp.cos(theta) / hist_width).astype(xp.float32)
    sin_t = (xp.sin(theta) / hist_width).astype(xp.float32)
    exp_scale = -1.0 / (d * d * 0.5)
    plane = gaussians.reshape(-1, w)
    padded = _PADDED[0] * _PADDED[1] * _PADDED[2]
    for start in range(0, count, CHUNK):
        sl = slice(start, min(start + CHUNK, count))
        k = sl.stop - sl.start
        r_max = int(radius[sl].max())
        offs = xp.arange(-r_max, r_max + 1, dtype=xp.int64)
        di = xp.repeat(offs, offs.shape[0])[None, :]
        dj = xp.tile(offs, offs.shape[0])[None, :]
        fi = di.astype(xp.float32) - fy[sl, None]
        fj = dj.astype(xp.float32) - fx[sl, None]
        c_rot = fj * cos_t[sl, None] - fi * sin_t[sl, None]
        r_rot = fj * sin_t[sl, None] + fi * cos_t[sl, None]
        rbin = r_rot + (d // 2 - 0.5)
        cbin = c_rot + (d // 2 - 0.5)
        ys = py[sl, None] + di
        xs = px[sl, None] + dj
        rad = radius[sl, None]
        valid = (
            (xp.abs(di) <= rad)
            & (xp.abs(dj) <= rad)
            & (rbin > -1)
            & (rbin < d)
            & (cbin > -1)
            & (cbin < d)
            & (ys > 0)
            & (ys < h - 1)
            & (xs > 0)
            & (xs < w - 1)
        )
        kp, sample = xp.nonzero(valid)
        ys, xs = ys[kp, sample], xs[kp, sample]
        rbin, cbin = rbin[kp, sample], cbin[kp, sample]
        weight = xp.exp((c_rot[kp, sample] ** 2 + r_rot[kp, sample] ** 2) * exp_scale)
        magnitude, angle = gradient_polar(plane, layer[sl][kp] * h + ys, xs, xp)
        obin = (angle - direction[sl][kp].astype(xp.float32)) * (n / 360.0)
        mag = (magnitude * weight).astype(xp.float32)
        r0 = xp.floor(rbin)
        c0 = xp.floor(cbin)
        o0 = xp.floor(obin)
        fr, fc, fo = rbin - r0, cbin - c0, obin - o0
        r0 = r0.astype(xp.int64)
        c0 = c0.astype(xp.int64)
        o0 = o0.astype(xp.int64) % n
        hist = xp.zeros(k * padded, dtype=xp.float64)
        base = kp * padded
        for dr, wr in ((0, 1 - fr), (1, fr)):
            for dc, wc in ((0, 1 - fc), (1, fc)):
                for do, wo in ((0, 1 - fo), (1, fo)):
                    idx = base + (((r0 + 1 + dr) * _PADDED[1] + c0 + 1 + dc) * _PADDED[2] + o0 + do)
                    hist += xp.bincount(idx, weights=mag * wr * wc * wo, minlength=k * padded)
        hist = hist.reshape(k, *_PADDED).astype(xp.float32)
        hist[..., 0] += hist[..., n]
        hist[..., 1] += hist[..., n + 1]
        out[sl] = hist[:, 1 : d + 1, 1 : d + 1, :n].reshape(k, d * d * n)
    return out


def quantize_descriptors(raw, xp, *, rootsift: bool = False):
    """Normalise, clip at 0.2 of the norm, renormalise and scale to uint8 as OpenCV (×512,
    saturate). With ``rootsift``, L1-normalise and take square roots instead (Arandjelović &
    Zisserman 2012), scaled by 512 as well so both fit uint8 the same way.

    Example
    -------
    >>> int(quantize_descriptors(np.ones((1, 128), np.float32), np)[0, 0])
    45
    """
    norm = xp.sqrt((raw * raw).sum(axis=1, keepdims=True))
    clipped = xp.minimum(raw, norm * DESCR_MAG_THRESHOLD)
    norm2 = xp.sqrt((clipped * clipped).sum(axis=1, keepdims=True))
    scaled = clipped * (DESCR_INT_FACTOR / xp.maximum(norm2, 1.1920929e-07))
    if rootsift:
        l1 = xp.maximum(scaled.sum(axis=1, keepdims=True), 1.1920929e-07)
        scaled = xp.sqrt(scaled / l1) * DESCR_INT_FACTOR
    return xp.clip(xp.rint(scaled), 0, 255).astype(xp.uint8)
