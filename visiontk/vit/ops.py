"""The element-wise steps of the ViT forward pass: LayerNorm, softmax, GELU.

Each is written once with the array module (numpy or CuPy): the definition. On the CPU, float32
arrays go through the compiled kernels of :mod:`._cpu_kernels` instead (one pass over memory
each, vectorised); ``VISIONTK_KERNELS=xp`` selects the definitions there too, for comparisons.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from .dinov3 import rope_patches

LAYER_NORM_EPS = 1e-6  # official DINO (Hugging Face's config says 1e-12)


@functools.cache
def _kernels():
    try:
        from . import _cpu_kernels
    except ImportError:  # numba missing: the definitions run
        return None
    return _cpu_kernels


def _compiled(x, xp):
    """The compiled kernels when they apply to ``x`` (float32 numpy), else None."""
    if xp is not np or x.dtype != np.float32 or os.environ.get("VISIONTK_KERNELS") == "xp":
        return None
    return _kernels()


def layer_norm(x, weight, bias, xp, eps: float = LAYER_NORM_EPS):
    """LayerNorm over the last axis: a new array."""
    kernels = _compiled(x, xp)
    if kernels is not None:
        return kernels.layer_norm(x, weight, bias, eps)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / xp.sqrt(var + eps) * weight + bias


def softmax(x, xp):
    """Softmax over the last axis: a new array."""
    x = x - x.max(axis=-1, keepdims=True)
    e = xp.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_inplace(x, xp) -> None:
    """:func:`softmax` written into ``x`` (no temporaries the size of x)."""
    kernels = _compiled(x, xp)
    if kernels is not None and x.flags.c_contiguous:
        kernels.softmax_inplace(x)
        return
    x -= x.max(axis=-1, keepdims=True)
    xp.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)


def split_heads(qkv, bias, heads: int, scale: float, xp, rope=None, first: int = 0):
    """The attention inputs from the qkv projection (B, N, 3·D) without its bias: queries
    (B, heads, N, hd) times ``scale``, keys transposed (B, heads, hd, N) and values
    (B, heads, N, hd), each contiguous (batched matrix products on strided views are far
    slower), the official layout of the 3·D axis being (3, heads, hd). ``rope``: DINOv3's
    (sin, cos), each (N − first, hd), rotates the q and k of tokens ``first:`` (the patches)."""
    kernels = _compiled(qkv, xp)
    if kernels is not None:
        return kernels.split_heads(qkv, bias, heads, scale, rope, first)
    b, n, width = qkv.shape
    parts = (qkv + bias).reshape(b, n, 3, heads, width // (3 * heads)).transpose(2, 0, 3, 1, 4)
    q, k = parts[0] * xp.float32(scale), parts[1]
    if rope is not None:
        q, k = rope_patches(q, rope, first, xp), rope_patches(k, rope, first, xp)
    return (
        xp.ascontiguousarray(q),
        xp.ascontiguousarray(k.transpose(0, 1, 3, 2)),
        xp.ascontiguousarray(parts[2]),
    )


def gelu(x, xp, bias=None):
    """Exact GELU, x · Φ(x) with the error function (not the tanh approximation), of ``x`` or
    of ``x + bias``; with a bias, ``x`` may be overwritten with the result."""
    kernels = _compiled(x, xp)
    if kernels is not None:
        return kernels.gelu(x, bias)
    if bias is not None:
        x = x + bias
    return gelu_definition(x, xp)


def gelu_definition(x, xp):
    if xp is np:
        from scipy.special import erf
    else:
        from cupyx.scipy.special import erf
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)).astype(x.dtype))
