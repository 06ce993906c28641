"""Compiled CPU GELU (numba): scipy's float64 erf took a third of a ViT-S/8 forward pass at 224²
(bench/vit_bench.py); this float32 ufunc is 1.3x faster end to end. Serial on purpose: a
parallel ufunc's threads fight OpenBLAS's spinning threads and made the pass 1.7x slower.
Same values as :func:`model.gelu_definition` to float32 rounding; tests compare them."""

import math

import numba as nb
import numpy as np

from .._numba_cache import use_user_cache

use_user_cache()  # before @vectorize(cache=True): see visiontk/_numba_cache.py

_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))


@nb.vectorize(["float32(float32)"], target="cpu", cache=True)
def gelu(v):
    return np.float32(0.5) * v * (np.float32(1.0) + np.float32(math.erf(v * _INV_SQRT2)))
