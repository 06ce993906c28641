"""How closely two SIFT runs on one image agree (CPU against GPU, visiontk against OpenCV)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def keypoint_agreement(reference, other, max_px: float = 0.05) -> dict:
    """Compare two :class:`~visiontk.Features` of the same image.

    Each reference keypoint is paired with the nearest keypoint of ``other`` in (x, y,
    angle/100, log2 size): one place can carry several orientations, and the angle tells them
    apart; with VLFeat's localisation (which never moves across scales) several scales, and
    the size tells those apart (neighbouring layers differ by 1/3 in log2 size).
    Returns the counts; ``same``, the fraction of reference keypoints paired within
    ``max_px`` pixels; and for those pairs: ``octave_layer_equal`` (all pairs in the same octave
    and layer), ``octave_layer_share`` (the fraction that are), ``angle_within_0.5`` (fraction
    within 0.5°) and ``descriptor_l2_median``.

    Example
    -------
    >>> import visiontk
    >>> cpu = visiontk.sift("sample_images/coffee.png", device="cpu")
    >>> keypoint_agreement(cpu, cpu)["same"]   # on a GPU machine: against device="cuda"
    1.0
    """

    def points(f):
        return np.c_[f.xy, f.angle / 100.0, np.log2(np.maximum(f.size, 1e-6))]

    dist, idx = cKDTree(points(other)).query(points(reference))
    same = dist < max_px
    mate = idx[same]
    angle = np.abs((reference.angle[same] - other.angle[mate] + 180.0) % 360.0 - 180.0)
    descriptor = np.linalg.norm(
        reference.descriptors[same].astype(np.float64) - other.descriptors[mate], axis=1
    )
    equal = (reference.octave_number[same] == other.octave_number[mate]) & (
        reference.layer[same] == other.layer[mate]
    )
    return {
        "reference": len(reference),
        "other": len(other),
        "same": float(same.mean()) if len(reference) else 1.0,
        "octave_layer_equal": bool(equal.all()),
        "octave_layer_share": float(equal.mean()) if same.any() else 0.0,
        "angle_within_0.5": float(np.mean(angle < 0.5)) if same.any() else 0.0,
        "descriptor_l2_median": float(np.median(descriptor)) if same.any() else float("inf"),
    }
