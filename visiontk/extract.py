"""SIFT for code that builds on it: a grey array and :class:`SiftOptions` in,
:class:`~visiontk.Features` out, on a backend resolved once.

The built-in ``sift`` pipeline stage, the CLI and the pipeline's workers use only these names,
so a plugin stage can do whatever they do (``examples/grid_sift`` is one).
:func:`visiontk.sift` is the one-call form for users: a path or any array, options as
keywords.

Example
-------
>>> import numpy as np
>>> from visiontk.extract import SiftOptions, sift_backend, sift_gray
>>> backend = sift_backend("cpu")  # once per process: it holds the compiled kernels
>>> gray = np.zeros((64, 64), np.float32)
>>> sift_gray(gray, SiftOptions(max_features=100), backend).xy.shape
(0, 2)
"""

from __future__ import annotations

import numpy as np

from ._sift.api import sift, sift_gray
from ._sift.backends import SiftBackend, compile_cpu_kernels, own_process
from ._sift.backends import for_device as sift_backend
from ._sift.batch import iter_sift, sift_batch
from ._sift.options import DEFAULT_PRESET, SIFT_PRESETS, SiftOptions
from .features import Features


def in_original_pixels(
    features: Features, scale: tuple[float, float], image_size: tuple[int, int]
) -> Features:
    """``features`` of an image the ``load`` stage resized by 1/``scale`` (per axis: x, y),
    moved into the original image's pixels and labelled with its ``image_size`` (height,
    width), as the pipeline's ``sift`` stage returns them."""
    sx, sy = scale
    if (sx, sy) != (1.0, 1.0):
        # pixel centres map as (x + 0.5)·s − 0.5 when an image is resized by 1/s
        factor = np.array([sx, sy], np.float32)
        features.xy = ((features.xy + 0.5) * factor - 0.5).astype(np.float32)
        features.size = (features.size * np.float32(np.sqrt(sx * sy))).astype(np.float32)
    features.image_size = (int(image_size[0]), int(image_size[1]))
    return features


__all__ = [
    "DEFAULT_PRESET",
    "SIFT_PRESETS",
    "SiftBackend",
    "SiftOptions",
    "compile_cpu_kernels",
    "in_original_pixels",
    "iter_sift",
    "own_process",
    "sift",
    "sift_backend",
    "sift_batch",
    "sift_gray",
]
