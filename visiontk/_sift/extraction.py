"""SIFT's data flow on one image, on any array module: scale space, extrema, orientations,
descriptors, and the packing into :class:`~visiontk.Features`.

After detection, the keypoints of all octaves travel together in one list (each knows its
octave), so a GPU runs each per-keypoint step once per image rather than once per octave: on
CuPy every step is a kernel launch and every data-dependent size a host round-trip.
"""

from __future__ import annotations

import time
from dataclasses import fields

import numpy as np

from .. import devices
from ..features import Features
from .detect import Extrema
from .orient import dominant_orientations, orientation_scale, smooth_histograms
from .scale_space import UPSAMPLE_SHIFT


def extract(gray, opts, sift_backend, mask=None) -> Features:
    """Run SIFT on a grey float32 (0..255) array already on the backend's device.

    ``opts`` is a validated :class:`~visiontk.SiftOptions`; ``sift_backend`` does the steps
    (a :class:`.backends.SiftBackend`: the definitions, the numba kernels or the CUDA kernels);
    ``mask`` an optional H×W boolean host array.
    """
    xp = sift_backend.xp
    height, width = gray.shape
    t0 = time.perf_counter()
    octaves = sift_backend.scale_space(gray, opts)
    t1 = time.perf_counter()
    kp = _distinct_extrema(octaves, _detect(octaves, opts, sift_backend, mask), xp)
    if mask is not None:
        factor = xp.asarray([o.scale for o in octaves], dtype=xp.float32)[kp["number"]]
        shift = UPSAMPLE_SHIFT if opts.upsample else 0.0
        inside = _inside_mask(mask, kp["x"] * factor + shift, kp["y"] * factor + shift, xp)
        kp = {k: v[inside] for k, v in kp.items()}
    if kp["x"].shape[0] == 0:
        return Features.empty((height, width))
    kp["scale"] = orientation_scale(
        opts.sigma, opts.n_octave_layers, kp["layer"], kp["offset_layer"], xp
    )
    if opts.keep == "largest" and opts.max_features and kp["x"].shape[0] > opts.max_features:
        # COLMAP's rule: whole detection levels, coarsest first, each detection with its
        # orientations
        kp = {k: v[_coarsest_levels(kp, opts.max_features, xp)] for k, v in kp.items()}
        which, angle = _orientations(kp, opts, octaves, sift_backend)
    elif opts.max_features and kp["x"].shape[0] > opts.max_features:
        kp, which, angle = _strongest_detections(kp, opts, octaves, sift_backend)
    else:
        which, angle = _orientations(kp, opts, octaves, sift_backend)
    cat = {k: kp[k][which] for k in ("number", "layer", "x", "y", "scale", "response")}
    cat["angle"] = angle
    # OpenCV's sub-layer byte; VLFeat's localisation allows offsets past ±0.5: saturated
    cat["sub"] = xp.clip(xp.rint((kp["offset_layer"][which] + 0.5) * 255), 0, 255).astype(xp.int64)
    t2 = time.perf_counter()
    order = _strongest_first(cat, xp)
    if opts.max_features and opts.keep == "strongest":  # keypoints, as OpenCV's nfeatures
        order = order[: opts.max_features]
    cat = {k: v[order] for k, v in cat.items()}

    direction = xp.where(cat["angle"] == 0, 0.0, 360.0 - cat["angle"]).astype(xp.float32)
    described = sift_backend.describe(
        octaves,
        cat["number"],
        cat["layer"],
        cat["x"],
        cat["y"],
        direction,
        cat["scale"],
        rootsift=opts.rootsift,
        subpixel=opts.subpixel_window,
    )
    t3 = time.perf_counter()

    factor = xp.asarray([o.scale for o in octaves], dtype=xp.float32)[cat["number"]]
    shift = UPSAMPLE_SHIFT if opts.upsample else 0.0
    index = xp.asarray([o.index for o in octaves], dtype=xp.int64)[cat["number"]]
    packed = (index & 255) | (cat["layer"] << 8) | ((cat["sub"] & 255) << 16)
    # One float block, one int block, the descriptors: three copies to the host.
    floats = devices.to_host(
        xp.stack(
            [
                cat["x"] * factor + shift,
                cat["y"] * factor + shift,
                cat["scale"] * 2 * factor,
                cat["angle"],
                cat["response"],
            ],
            axis=1,
        ).astype(xp.float32)
    )
    feats = Features(
        xy=np.ascontiguousarray(floats[:, :2]),
        size=np.ascontiguousarray(floats[:, 2]),
        angle=np.ascontiguousarray(floats[:, 3]),
        response=np.ascontiguousarray(floats[:, 4]),
        octave=devices.to_host(packed).astype(np.int32),
        descriptors=devices.to_host(described),
        image_size=(height, width),
    )
    feats.timings = {"scale_space": t1 - t0, "detect_orient": t2 - t1, "describe": t3 - t2}
    return feats


def _detect(octaves, opts, sift_backend, mask):
    """Every octave's extrema, or under COLMAP's cap (``keep="largest"``) only as many octaves
    as it can keep: from the coarsest down, the finer octaves are skipped once those detected
    hold more than ``max_features`` distinct extrema, since the cap would drop every level of
    them (the same keypoints, without searching the doubled octave of a dense image, most of
    its detection time: docs/benchmarks.md, "SIFT speed")."""
    if not (
        opts.keep == "largest"
        and opts.max_features
        and sift_backend.detects_octave_by_octave
        and mask is None
    ):
        return sift_backend.detect(octaves, opts)
    found: list[Extrema | None] = [None] * len(octaves)
    total = 0
    for i in range(len(octaves) - 1, -1, -1):
        if total > opts.max_features:
            found[i] = Extrema(*(getattr(found[-1], f.name)[:0] for f in fields(Extrema)))
            continue
        found[i] = sift_backend.detect([octaves[i]], opts)[0]
        total += _distinct_count(found[i], octaves[i], sift_backend.xp)
    return found


def _distinct_count(extrema, octave, xp) -> int:
    """How many of one octave's extrema :func:`_distinct_extrema` keeps."""
    _, h, w = octave.gaussians.shape
    return int(xp.unique(_sample_key(extrema.layer, extrema.row, extrema.col, h, w)).shape[0])


def _sample_key(layer, row, col, h, w):
    """One integer per sample (layer, row, col) of an octave of h × w pixels."""
    return (layer * h + row) * w + col


def _orientations(kp, opts, octaves, sift_backend):
    """(index into kp, angle) of each keypoint to describe: one per dominant orientation."""
    xp = sift_backend.xp
    if opts.upright:
        return xp.arange(kp["x"].shape[0]), xp.zeros(kp["x"].shape[0], dtype=xp.float32)
    hist = sift_backend.orientations(
        octaves,
        kp["number"],
        kp["layer"],
        kp["x"],
        kp["y"],
        kp["scale"],
        subpixel=opts.subpixel_window,
    )
    return dominant_orientations(
        smooth_histograms(hist, xp, opts.orientation_smoothing), xp, opts.max_orientations
    )


def _strongest_detections(kp, opts, octaves, sift_backend):
    """The detections whose orientations make the ``max_features`` strongest keypoints, and
    those orientations (as :func:`_orientations` for them).

    Every orientation of a detection shares its response and position, so those keypoints
    come from the strongest detections, taken in order until they give ``max_features``
    orientations: the same result as orienting every detection and cutting afterwards,
    without the orientation histograms of the detections that would be cut (most of them,
    on a dense image).
    """
    xp = sift_backend.xp
    keys = {**kp, "angle": xp.zeros(kp["x"].shape[0], dtype=xp.float32)}
    ranked = _strongest_first(keys, xp)
    whiches, angles, found, start = [], [], 0, 0
    while found < opts.max_features and start < ranked.shape[0]:
        chunk = ranked[start : start + opts.max_features - found]
        which, angle = _orientations(
            {k: v[chunk] for k, v in kp.items()}, opts, octaves, sift_backend
        )
        whiches.append(which + start)
        angles.append(angle)
        start += int(chunk.shape[0])
        found += int(which.shape[0])
    chosen = ranked[:start]
    return ({k: v[chosen] for k, v in kp.items()}, xp.concatenate(whiches), xp.concatenate(angles))


def _distinct_extrema(octaves, extrema, xp) -> dict:
    """The extrema of all octaves in one list, ordered by (octave, layer, row, col), with
    those that converged on the same sample kept once (OpenCV removes these duplicates too)."""
    kp = {f.name: xp.concatenate([getattr(e, f.name) for e in extrema]) for f in fields(Extrema)}
    kp["number"] = xp.concatenate(
        [xp.full(len(e), i, dtype=xp.int64) for i, e in enumerate(extrema)]
    )
    shapes = np.array([o.gaussians.shape for o in octaves], np.int64)  # (n_gauss, h, w)
    start = np.concatenate([[0], np.cumsum(np.prod(shapes, axis=1))])[:-1]
    h = xp.asarray(shapes[:, 1])[kp["number"]]
    w = xp.asarray(shapes[:, 2])[kp["number"]]
    key = xp.asarray(start)[kp["number"]] + _sample_key(kp["layer"], kp["row"], kp["col"], h, w)
    _, first = xp.unique(key, return_index=True)
    kp = {k: v[first] for k, v in kp.items()}
    kp["x"] = kp["col"] + kp.pop("offset_col")
    kp["y"] = kp["row"] + kp.pop("offset_row")
    return kp


def _inside_mask(mask, x, y, xp):
    m = xp.asarray(mask)
    h, w = m.shape
    xi = xp.clip(xp.floor(x + 0.5).astype(xp.int64), 0, w - 1)
    yi = xp.clip(xp.floor(y + 0.5).astype(xp.int64), 0, h - 1)
    return m[yi, xi]


def _coarsest_levels(kp, max_features: int, xp):
    """COLMAP's ``max_num_features`` for its CPU SIFT: detection levels (octave, layer) from
    the coarsest down, whole, up to and including the level that takes the count past
    ``max_features`` (so up to one level more than asked); indices in detection order.

    Example
    -------
    >>> kp = {"number": np.array([0, 0, 1, 1, 1, 2]), "layer": np.array([1, 2, 1, 1, 3, 2])}
    >>> _coarsest_levels(kp, 3, np).tolist()
    [2, 3, 4, 5]
    """
    level = kp["number"].astype(xp.int64) * 1000 + kp["layer"].astype(xp.int64)
    levels, counts = xp.unique(level, return_counts=True)
    from_coarsest = xp.cumsum(counts[::-1])
    passed = xp.nonzero(from_coarsest > max_features)[0]
    if passed.shape[0] == 0:
        return xp.arange(level.shape[0])
    finest_kept = levels[::-1][int(passed[0])]
    return xp.nonzero(level >= finest_kept)[0]


def _strongest_first(cat, xp):
    """Order by response (descending), then octave, layer, y, x, angle: deterministic."""
    keys = [cat["angle"], cat["x"], cat["y"], cat["layer"], cat["number"], -cat["response"]]
    return xp.lexsort(xp.stack([k.astype(xp.float64) for k in keys]))
