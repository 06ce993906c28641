"""Comparisons of a compiled kernel's output with its xp definition, shared by the numba
(test_kernels.py) and CUDA (test_cuda_kernels.py) kernel tests."""

import numpy as np

from visiontk._sift.describe import quantize_descriptors
from visiontk._sift.orient import dominant_orientations, smooth_histograms


def assert_orientation_histograms_agree(ours, ref):
    """Compiled kernels use OpenCV's polynomial atan2 (±0.01°): a gradient on a bin edge may
    land in the neighbouring bin, so totals compare tightly, bins loosely, and the dominant
    directions must be the same."""
    np.testing.assert_allclose(ours.sum(axis=1), ref.sum(axis=1), rtol=1e-4)
    assert np.abs(ours - ref).sum() / ref.sum() < 2e-3
    _, a1 = dominant_orientations(smooth_histograms(ours, np), np)
    _, a2 = dominant_orientations(smooth_histograms(ref, np), np)
    assert len(a1) == len(a2)
    assert np.max(np.abs((a1 - a2 + 180) % 360 - 180)) < 0.5


def assert_descriptors_agree(ours, ref):
    """Raw descriptors that quantise to nearly the same bytes."""
    dist = np.linalg.norm(
        quantize_descriptors(ours, np).astype(float) - quantize_descriptors(ref, np).astype(float),
        axis=1,
    )
    assert np.median(dist) < 1.5 and dist.max() < 12
