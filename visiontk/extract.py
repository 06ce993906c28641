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

from ._sift.api import sift, sift_gray
from ._sift.backends import SiftBackend, compile_cpu_kernels, own_process
from ._sift.backends import for_device as sift_backend
from ._sift.batch import iter_sift, sift_batch
from ._sift.options import DEFAULT_PRESET, SIFT_PRESETS, SiftOptions

__all__ = [
    "DEFAULT_PRESET",
    "SIFT_PRESETS",
    "SiftBackend",
    "SiftOptions",
    "compile_cpu_kernels",
    "iter_sift",
    "own_process",
    "sift",
    "sift_backend",
    "sift_batch",
    "sift_gray",
]
