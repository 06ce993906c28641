"""SIFT for code that builds on it: a grey array and :class:`SiftOptions` in,
:class:`~visiontk.Features` out, on a backend resolved once.

The built-in ``sift`` pipeline stage, the CLI and the pipeline's workers use only these names,
so a plugin stage can do whatever they do (``examples/grid_sift`` is one).
:func:`visiontk.sift` is the one-call form for users: a path or any array, options as
keywords.

On the CPU each thread keeps the scale-space buffers of its last image for the next image of
the same size (a folder of photos from one camera skips hundreds of MB of fresh pages per
image); :func:`release_buffers` frees them.

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

import dataclasses

import numpy as np

from ._sift.api import sift, sift_gray
from ._sift.backends import (
    SiftBackend,
    array_module_for,
    compile_cpu_kernels,
    own_process,
    release_buffers,
)
from ._sift.backends import for_device as sift_backend
from ._sift.batch import iter_sift, sift_batch
from ._sift.options import DEFAULT_PRESET, SIFT_PRESETS, SiftOptions
from .errors import OptionError, shown
from .features import Features


def in_original_pixels(
    features: Features, scale: tuple[float, float], image_size: tuple[int, int]
) -> Features:
    """New features: ``features`` of an image the ``load`` stage resized by 1/``scale`` (per
    axis: x, y), moved into the original image's pixels and labelled with its ``image_size``
    (height, width), as the pipeline's ``sift`` stage returns them. ``features`` is unchanged.

    Example
    -------
    >>> import cv2
    >>> f = Features.from_keypoints([cv2.KeyPoint(10.0, 20.0, 4.0)], np.zeros((1, 128), np.uint8))
    >>> g = in_original_pixels(f, (2.0, 2.0), (100, 80))
    >>> g.xy.tolist(), g.size.tolist(), g.image_size, f.xy.tolist()
    ([[20.5, 40.5]], [8.0], (100, 80), [[10.0, 20.0]])
    """
    if not isinstance(features, Features):
        raise OptionError(f"features must be visiontk Features, got {shown(features)}")
    try:
        sx, sy = (float(v) for v in scale)
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise OptionError(
            f"scale must be (x, y) and image_size (height, width), got {shown(scale)} and "
            f"{shown(image_size)}"
        ) from None
    if not (np.isfinite([sx, sy]).all() and sx > 0 and sy > 0) or height < 1 or width < 1:
        raise OptionError(
            f"scale must be two numbers > 0 and image_size two sizes >= 1, got {shown(scale)} "
            f"and {shown(image_size)}"
        )
    if (sx, sy) == (1.0, 1.0):  # not resized: the same coordinates, bit for bit
        return dataclasses.replace(features, image_size=(height, width))
    # pixel centres map as (x + 0.5)·s − 0.5 when an image is resized by 1/s
    factor = np.array([sx, sy], np.float32)
    return dataclasses.replace(
        features,
        xy=((features.xy + 0.5) * factor - 0.5).astype(np.float32),
        size=(features.size * np.float32(np.sqrt(sx * sy))).astype(np.float32),
        image_size=(height, width),
    )


__all__ = [
    "DEFAULT_PRESET",
    "SIFT_PRESETS",
    "SiftBackend",
    "SiftOptions",
    "array_module_for",
    "compile_cpu_kernels",
    "in_original_pixels",
    "iter_sift",
    "own_process",
    "release_buffers",
    "sift",
    "sift_backend",
    "sift_batch",
    "sift_gray",
]
