"""Compiled CPU kernels of the ViT forward pass (numba): GELU, softmax and LayerNorm, float32.

What is not a matrix product (softmax, LayerNorm, bias additions) is a large share of a ViT
pass in numpy (docs/dino.md, "The forward pass"): each numpy call is one more pass over
memory. These kernels make one pass over a row that sits in L1 instead, and are written so that
LLVM vectorises them:

- ``error_model="numpy"``: the default guards every division with a ZeroDivision branch, which
  keeps the loop scalar.
- no libm calls in loops: erf is the rational fit x·P(x²)/Q(x²) on [−4, 4] that Eigen and XLA
  use for float32 (error under 7e-8; outside, erf is ±1 in float32), exp is Cephes' ``expf``
  (range reduction by ln 2 in two parts, a degree-6 polynomial, 2ⁿ put into the exponent bits:
  relative error under 1e-7 on [−87, 0]).
- maxima in 16 lanes: a plain ``if v > m`` reduction stays scalar.
- ``reassoc`` only changes the order of the sums; no approximate functions (``afn``/``arcp``),
  so the vectorised body and its scalar remainder compute the same thing and results do not
  depend on where a buffer starts (tests shift buffers to check).

Serial on purpose: parallel threads fight OpenBLAS's spinning threads between matrix products.
"""

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .._numba_cache import KernelOptions, use_user_cache

use_user_cache()  # before @njit(cache=True): see visiontk/_numba_cache.py

_KERNEL: KernelOptions = {
    "cache": True,
    "fastmath": {"nnan", "ninf", "nsz", "contract", "reassoc"},
    "error_model": "numpy",
}
_LANES = 16

_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))
#: Odd numerator x·P(x²) and even denominator Q(x²) of erf, lowest power first.
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = (
    np.float32(c)
    for c in (
        -1.60960333262415e-02,
        -2.95459980854025e-03,
        -7.34990630326855e-04,
        -5.69250639462346e-05,
        -2.10102402082508e-06,
        2.77068142495902e-08,
        -2.72614225801306e-10,
    )
)
_Q0, _Q1, _Q2, _Q3, _Q4 = (
    np.float32(c)
    for c in (
        -1.42647390514189e-02,
        -7.37332916720468e-03,
        -1.68282697438203e-03,
        -2.13374055278905e-04,
        -1.45660718464996e-05,
    )
)

#: Cephes expf: ln 2 split in a part exact in float32 and the rest; polynomial for e^r − 1 − r.
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)
_E0, _E1, _E2, _E3, _E4, _E5 = (
    np.float32(c)
    for c in (
        1.9875691500e-4,
        1.3981999507e-3,
        8.3334519073e-3,
        4.1665795894e-2,
        1.6666665459e-1,
        5.0000001201e-1,
    )
)
_EXP_LOWEST = np.float32(-87.33654)  # ln(2⁻¹²⁶): the smallest normal float32


@intrinsic
def _float32_from_bits(typingctx, bits):  # pragma: no cover - numba
    """The float32 whose bit pattern is the int32 ``bits`` (a bitcast LLVM can vectorise)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@nb.njit(inline="always", **_KERNEL)
def _exp_nonpositive(x):  # pragma: no cover - numba
    """e^x for x ≤ 0 (a softmax's shifted scores); below ln(2⁻¹²⁶) it returns ~2⁻¹²⁶."""
    x = _EXP_LOWEST if x < _EXP_LOWEST else x
    n = np.floor(x * _LOG2E + np.float32(0.5))
    r = x - n * _LN2_HI - n * _LN2_LO
    p = (
        (((((_E0 * r + _E1) * r + _E2) * r + _E3) * r + _E4) * r + _E5) * r * r
        + r
        + np.float32(1.0)
    )
    # numba's stubs give an @intrinsic its definition's parameters, typingctx included
    return p * _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))  # type: ignore[call-arg]


@nb.njit(inline="always", **_KERNEL)
def _gelu_value(v):  # pragma: no cover - numba
    half, one, top = np.float32(0.5), np.float32(1.0), np.float32(4.0)
    x = v * _INV_SQRT2
    x = top if x > top else x
    x = -top if x < -top else x
    x2 = x * x
    p = (((((_P6 * x2 + _P5) * x2 + _P4) * x2 + _P3) * x2 + _P2) * x2 + _P1) * x2 + _P0
    q = (((_Q4 * x2 + _Q3) * x2 + _Q2) * x2 + _Q1) * x2 + _Q0
    return half * v * (one + x * p / q)  # erf(x) = x·P(x²)/Q(x²)


@nb.njit(**_KERNEL)
def _gelu_bias_rows(x, bias):  # pragma: no cover - numba
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] = _gelu_value(x[i, j] + bias[j])


@nb.njit(**_KERNEL)
def _row_maxima(x, out):  # pragma: no cover - numba
    rows, n = x.shape
    lanes = np.empty(_LANES, np.float32)
    full = n - n % _LANES
    for i in range(rows):
        for k in range(_LANES):
            lanes[k] = x[i, 0]
        for j in range(0, full, _LANES):
            for k in range(_LANES):
                v = x[i, j + k]
                lanes[k] = v if v > lanes[k] else lanes[k]
        m = x[i, 0]
        for k in range(_LANES):
            m = lanes[k] if lanes[k] > m else m
        for j in range(full, n):
            m = x[i, j] if x[i, j] > m else m
        out[i] = m


@nb.njit(**_KERNEL)
def _softmax_rows(x, maxima):  # pragma: no cover - numba
    _row_maxima(x, maxima)
    for i in range(x.shape[0]):
        m, total = maxima[i], np.float32(0.0)
        for j in range(x.shape[1]):
            e = _exp_nonpositive(x[i, j] - m)
            x[i, j] = e
            total += e
        inv = np.float32(1.0) / total
        for j in range(x.shape[1]):
            x[i, j] *= inv


@nb.njit(**_KERNEL)
def _layer_norm_rows(x, weight, bias, eps, out):  # pragma: no cover - numba
    n = x.shape[1]
    for i in range(x.shape[0]):
        total = np.float32(0.0)
        for j in range(n):
            total += x[i, j]
        mean = total / n
        squares = np.float32(0.0)
        for j in range(n):
            d = x[i, j] - mean
            squares += d * d
        inv = np.float32(1.0) / np.sqrt(squares / n + eps)
        for j in range(n):
            out[i, j] = (x[i, j] - mean) * inv * weight[j] + bias[j]


@nb.njit(**_KERNEL)
def _split_heads(qkv, bias, scale, q, k_t, v):  # pragma: no cover - numba
    batch, heads, n, hd = q.shape
    dim = heads * hd
    for b in range(batch):
        for t in range(n):
            for h in range(heads):
                at = h * hd
                for d in range(hd):
                    q[b, h, t, d] = (qkv[b, t, at + d] + bias[at + d]) * scale
                    k_t[b, h, d, t] = qkv[b, t, dim + at + d] + bias[dim + at + d]
                    v[b, h, t, d] = qkv[b, t, 2 * dim + at + d] + bias[2 * dim + at + d]


@nb.njit(**_KERNEL)
def _split_heads_rope(qkv, bias, scale, sin, cos, first, q, k_t, v):  # pragma: no cover - numba
    """:func:`_split_heads` with DINOv3's rotation of the patches' q and k fused in (x·cos +
    rotate_half(x)·sin, rotate_half([x1, x2]) = [−x2, x1]): the same one pass over qkv."""
    batch, heads, n, hd = q.shape
    dim, half = heads * hd, hd // 2
    for b in range(batch):
        for t in range(n):
            for h in range(heads):
                at = h * hd
                for d in range(hd):
                    v[b, h, t, d] = qkv[b, t, 2 * dim + at + d] + bias[2 * dim + at + d]
                if t < first:  # CLS and storage tokens are not rotated
                    for d in range(hd):
                        q[b, h, t, d] = (qkv[b, t, at + d] + bias[at + d]) * scale
                        k_t[b, h, d, t] = qkv[b, t, dim + at + d] + bias[dim + at + d]
                    continue
                p = t - first
                for d in range(half):
                    q1 = (qkv[b, t, at + d] + bias[at + d]) * scale
                    q2 = (qkv[b, t, at + half + d] + bias[at + half + d]) * scale
                    q[b, h, t, d] = q1 * cos[p, d] - q2 * sin[p, d]
                    q[b, h, t, half + d] = q2 * cos[p, half + d] + q1 * sin[p, half + d]
                    k1 = qkv[b, t, dim + at + d] + bias[dim + at + d]
                    k2 = qkv[b, t, dim + at + half + d] + bias[dim + at + half + d]
                    k_t[b, h, d, t] = k1 * cos[p, d] - k2 * sin[p, d]
                    k_t[b, h, half + d, t] = k2 * cos[p, half + d] + k1 * sin[p, half + d]


def split_heads(
    qkv: np.ndarray, bias: np.ndarray, heads: int, scale: float, rope=None, first: int = 0
):
    """(q·scale, kᵀ, v) per head from a (B, N, 3·D) projection without its bias, the patches'
    q and k rotated by ``rope`` (sin, cos) when given; see
    :func:`visiontk.vit.ops.split_heads`."""
    qkv = np.ascontiguousarray(qkv)
    b, n, width = qkv.shape
    hd = width // (3 * heads)
    q, v = np.empty((b, heads, n, hd), np.float32), np.empty((b, heads, n, hd), np.float32)
    k_t = np.empty((b, heads, hd, n), np.float32)
    bias = np.ascontiguousarray(bias, np.float32)
    if rope is None:
        _split_heads(qkv, bias, np.float32(scale), q, k_t, v)
    else:
        sin, cos = (np.ascontiguousarray(t, np.float32) for t in rope)
        _split_heads_rope(qkv, bias, np.float32(scale), sin, cos, first, q, k_t, v)
    return q, k_t, v


def gelu(x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """GELU of a float32 array, of ``x + bias`` (bias along the last axis) when given: a new
    array, or ``x`` itself overwritten when a bias is given and ``x`` is C-contiguous."""
    if bias is None:
        x = np.array(x, np.float32)  # a copy: the input stays as it was
        bias = np.zeros(x.shape[-1], np.float32)
    out = np.ascontiguousarray(x)
    _gelu_bias_rows(out.reshape(-1, out.shape[-1]), np.ascontiguousarray(bias, np.float32))
    return out


def softmax_inplace(x: np.ndarray) -> None:
    """Softmax over the last axis of a C-contiguous float32 array, written into it."""
    rows = x.reshape(-1, x.shape[-1])
    _softmax_rows(rows, np.empty(rows.shape[0], np.float32))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis of a float32 array (a new array)."""
    src = np.ascontiguousarray(x)
    out = np.empty_like(src)
    _layer_norm_rows(
        src.reshape(-1, src.shape[-1]),
        np.ascontiguousarray(weight, np.float32),
        np.ascontiguousarray(bias, np.float32),
        np.float32(eps),
        out.reshape(-1, src.shape[-1]),
    )
    return out
