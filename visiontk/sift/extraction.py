"""SIFT's data flow on one image, on any array module: scale space, extrema, orientations,
descriptors, and the packing into :class:`~visiontk.Features`.

After detection, the keypoints of all octaves travel together in one list (each knows its
octave), so a GPU runs each per-keypoint step once per image rather than once per octave: on
CuPy every step is a kernel launch and every data-dependent size a host round-trip.
"""

from __future__ import annotations

import time

import numpy as np

from .. import backend
from ..features import Features
from .constants import DESCR_BINS, DESCR_WIDTH, ORI_BINS
from .describe import quantize_descriptors
from .detect import prethreshold, refine_extrema
from .orient import dominant_orientations, orientation_scale, smooth_histograms
from .scale_space import UPSAMPLE_SHIFT, scale_space


def extract(gray, opts, xp, kernels, mask=None) -> Features:
    """Run SIFT on a grey float32 (0..255) array already on the device of ``xp``.

    ``opts`` is a validated :class:`~visiontk.sift.SiftOptions`; ``kernels`` the loops to use
    (the xp definitions, the numba kernels or the CUDA kernels); ``mask`` an optional H×W
    boolean host array.
    """
    height, width = gray.shape
    t0 = time.perf_counter()
    octaves = scale_space(gray, sigma=opts.sigma, n_octave_layers=opts.n_octave_layers,
                          upsample=opts.upsample, xp=xp,
                          octave_blur=getattr(kernels, "octave_blur", None))
    t1 = time.perf_counter()
    kp = _distinct_extrema(octaves, _detect(kernels, octaves, opts, xp), xp)
    if mask is not None:
        factor = xp.asarray([o.scale for o in octaves], dtype=xp.float32)[kp["number"]]
        shift = UPSAMPLE_SHIFT if opts.upsample else 0.0
        inside = _inside_mask(mask, kp["x"] * factor + shift, kp["y"] * factor + shift, xp)
        kp = {k: v[inside] for k, v in kp.items()}
    if kp["x"].shape[0] == 0:
        return Features.empty((height, width))
    kp["scale"] = orientation_scale(opts.sigma, opts.n_octave_layers, kp["layer"],
                                    kp["offset_layer"], xp)
    if opts.upright:
        which = xp.arange(kp["x"].shape[0])
        angle = xp.zeros(kp["x"].shape[0], dtype=xp.float32)
    else:
        hist = orientation_histograms(kernels, octaves, kp["number"], kp["layer"], kp["row"],
                                      kp["col"], kp["scale"], xp)
        which, angle = dominant_orientations(smooth_histograms(hist, xp), xp)
    cat = {k: kp[k][which] for k in ("number", "layer", "x", "y", "scale", "response")}
    cat["angle"] = angle
    cat["sub"] = xp.rint((kp["offset_layer"][which] + 0.5) * 255).astype(xp.int64)
    t2 = time.perf_counter()
    order = _strongest_first(cat, xp)
    if opts.max_features:
        order = order[: opts.max_features]
    cat = {k: v[order] for k, v in cat.items()}

    direction = xp.where(cat["angle"] == 0, 0.0, 360.0 - cat["angle"]).astype(xp.float32)
    where = (octaves, cat["number"], cat["layer"], cat["x"], cat["y"], direction, cat["scale"])
    fused = getattr(kernels, "quantized_descriptors_all", None)
    if fused is not None:  # the GPU's kernel makes the bytes itself
        described = fused(*where, rootsift=opts.rootsift)
    else:
        described = quantize_descriptors(descriptors(kernels, *where, xp), xp,
                                         rootsift=opts.rootsift)
    t3 = time.perf_counter()

    factor = xp.asarray([o.scale for o in octaves], dtype=xp.float32)[cat["number"]]
    shift = UPSAMPLE_SHIFT if opts.upsample else 0.0
    index = xp.asarray([o.index for o in octaves], dtype=xp.int64)[cat["number"]]
    packed = (index & 255) | (cat["layer"] << 8) | ((cat["sub"] & 255) << 16)
    # One float block, one int block, the descriptors: three copies to the host.
    floats = backend.to_host(xp.stack([cat["x"] * factor + shift, cat["y"] * factor + shift,
                                       cat["scale"] * 2 * factor, cat["angle"],
                                       cat["response"]], axis=1).astype(xp.float32))
    feats = Features(
        xy=np.ascontiguousarray(floats[:, :2]),
        size=np.ascontiguousarray(floats[:, 2]),
        angle=np.ascontiguousarray(floats[:, 3]),
        response=np.ascontiguousarray(floats[:, 4]),
        octave=backend.to_host(packed).astype(np.int32),
        descriptors=backend.to_host(described),
        image_size=(height, width),
    )
    feats.timings = {"scale_space": t1 - t0, "detect_orient": t2 - t1, "describe": t3 - t2}
    return feats


def _detect(kernels, octaves, opts, xp) -> list:
    """Refined extrema of every octave: the kernels' fused detection where they have one (the
    GPU's), otherwise their candidate search followed by the xp refinement."""
    threshold = prethreshold(opts.contrast_threshold, opts.n_octave_layers)
    tests = {"n_octave_layers": opts.n_octave_layers,
             "contrast_threshold": opts.contrast_threshold,
             "edge_threshold": opts.edge_threshold}
    fused = getattr(kernels, "detect_extrema", None)
    if fused is not None:
        return fused(octaves, threshold=threshold, **tests)
    return [refine_extrema(o.gaussians, *kernels.find_candidates(o, threshold, xp), xp=xp,
                           **tests) for o in octaves]


def _distinct_extrema(octaves, extrema, xp) -> dict:
    """The extrema of all octaves in one list, ordered by (octave, layer, row, col), with
    those that converged on the same sample kept once (OpenCV removes these duplicates too)."""
    fields = ("layer", "row", "col", "offset_layer", "offset_row", "offset_col", "response")
    kp = {f: xp.concatenate([getattr(e, f) for e in extrema]) for f in fields}
    kp["number"] = xp.concatenate([xp.full(len(e), i, dtype=xp.int64)
                                   for i, e in enumerate(extrema)])
    shapes = np.array([o.gaussians.shape for o in octaves], np.int64)  # (n_gauss, h, w)
    start = np.concatenate([[0], np.cumsum(np.prod(shapes, axis=1))])[:-1]
    h = xp.asarray(shapes[:, 1])[kp["number"]]
    w = xp.asarray(shapes[:, 2])[kp["number"]]
    key = xp.asarray(start)[kp["number"]] + (kp["layer"] * h + kp["row"]) * w + kp["col"]
    _, first = xp.unique(key, return_index=True)
    kp = {k: v[first] for k, v in kp.items()}
    kp["x"] = kp["col"] + kp.pop("offset_col")
    kp["y"] = kp["row"] + kp.pop("offset_row")
    return kp


def orientation_histograms(kernels, octaves, number, layer, row, col, scale, xp):
    """Raw 36-bin histograms of keypoints from several octaves (``number`` says which): one
    launch where the kernels take all octaves at once (CUDA), else octave by octave."""
    every = getattr(kernels, "orientation_histograms_all", None)
    if every is not None:
        return every(octaves, number, layer, row, col, scale)
    return _by_octave(kernels.raw_orientation_histograms, octaves, number,
                      (layer, row, col, scale), ORI_BINS, xp)


def descriptors(kernels, octaves, number, layer, x, y, direction, scale, xp):
    """Raw 128-D descriptors of keypoints from several octaves, octave by octave (kernels that
    take all octaves at once also quantise: ``quantized_descriptors_all``)."""
    return _by_octave(kernels.raw_descriptors, octaves, number, (layer, x, y, direction, scale),
                      DESCR_WIDTH * DESCR_WIDTH * DESCR_BINS, xp)


def _by_octave(single, octaves, number, arrays, width, xp):
    out = xp.zeros((number.shape[0], width), dtype=xp.float32)
    for i, octave in enumerate(octaves):
        sel = xp.nonzero(number == i)[0]
        if sel.shape[0]:
            out[sel] = single(octave.gaussians, *(a[sel] for a in arrays), xp)
    return out


def _inside_mask(mask, x, y, xp):
    m = xp.asarray(mask)
    h, w = m.shape
    xi = xp.clip(xp.floor(x + 0.5).astype(xp.int64), 0, w - 1)
    yi = xp.clip(xp.floor(y + 0.5).astype(xp.int64), 0, h - 1)
    return m[yi, xi]


def _strongest_first(cat, xp):
    """Order by response (descending), then octave, layer, y, x, angle: deterministic."""
    keys = [cat["angle"], cat["x"], cat["y"], cat["layer"], cat["number"], -cat["response"]]
    return xp.lexsort(xp.stack([k.astype(xp.float64) for k in keys]))
