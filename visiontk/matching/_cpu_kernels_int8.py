"""Dot products of uint8 SIFT descriptors with AVX-512 VNNI: the exact matcher's distance tiles
at several times float32 BLAS's multiply-adds a second (docs/benchmarks.md, "Matching").

``vpdpbusd`` multiplies 64 unsigned bytes by 64 signed bytes and adds them, four at a time,
into 16 int32 lanes. SIFT descriptors are unsigned, so B is stored shifted by −128 (signed)
and ``a · b = a · (b − 128) + 128 · Σa``: the caller folds the correction into ``|a|²``
(:func:`row_terms`). Every product and sum is an integer under 2²⁴, so the float32 tiles this
writes hold the same values as float32 BLAS on the same descriptors, bit for bit, and the
scan that follows (``_cpu_kernels.scan_tile``) picks the same neighbours.

The micro-kernel (4 rows of A × 32 columns of B, eight accumulators in registers, the 128
bytes unrolled) is LLVM IR written here (``_micro``); :func:`available` says whether this CPU
and numba's target have the instruction (Intel Ice Lake and later, AMD Zen 4 and later), and
the matcher uses float32 BLAS otherwise.

Importing this module raises ImportError when numba is missing.
"""

from __future__ import annotations

import functools
import os

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .._numba_cache import use_user_cache

use_user_cache()

#: Descriptor length the kernel is written for (SIFT), rows of A and columns of B per
#: micro-tile, and columns per packed group (one 64-byte vector: 16 columns × 4 bytes).
DIMS, ROWS, COLUMNS, GROUP = 128, 4, 32, 16
_QUADS = DIMS // 4


@functools.cache
def available() -> bool:
    """True when numba compiles for this CPU (no NUMBA_CPU_NAME override) and it has AVX-512
    VNNI, and the kernel compiles and gives exact products on a small case."""
    if os.environ.get("NUMBA_CPU_NAME", "host") != "host":
        return False
    try:
        import llvmlite.binding as llvm

        if not llvm.get_host_cpu_features().get("avx512vnni", False):
            return False
        rng = np.random.default_rng(0)
        a = rng.integers(0, 256, (5, DIMS), dtype=np.uint8)
        b = rng.integers(0, 256, (33, DIMS), dtype=np.uint8)
        tile = np.empty(tile_shape(5, 33), np.float32)
        dot_tile(pad_rows(a), 0, 5, pack_columns(b), 0, 33, tile)
        expected = a.astype(np.int64) @ (b.astype(np.int64) - 128).T
        return bool(np.array_equal(tile[:5, :33], expected))
    except Exception:  # any failure to build or run it means: use BLAS
        return False


def pad_rows(a: np.ndarray) -> np.ndarray:
    """A's rows with three zero rows after them: a micro-tile starting at any row stays inside."""
    out = np.zeros((len(a) + ROWS - 1, DIMS), np.uint8)
    out[: len(a)] = a
    return out


def pack_columns(b: np.ndarray) -> np.ndarray:
    """B − 128 as int8 in the kernel's order: (groups of 16 columns, 32 quads, 16 columns ×
    4 bytes), the columns padded to a multiple of 32.

    Example
    -------
    >>> pack_columns(np.full((1, 128), 130, np.uint8)).shape
    (2, 32, 64)
    """
    n = -(-len(b) // COLUMNS) * COLUMNS
    shifted = np.zeros((n, DIMS), np.int8)
    shifted[: len(b)] = (b.astype(np.int16) - 128).astype(np.int8)
    grouped = shifted.reshape(n // GROUP, GROUP, _QUADS, 4).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(grouped).reshape(n // GROUP, _QUADS, GROUP * 4)


def tile_shape(rows: int, columns: int) -> tuple[int, int]:
    """A tile :func:`dot_tile` can write ``rows`` × ``columns`` into (micro-tile overhang)."""
    return rows + ROWS - 1, -(-columns // COLUMNS) * COLUMNS


def row_terms(a: np.ndarray, a_sq: np.ndarray) -> np.ndarray:
    """``|a|² − 256 Σa`` (float32, exact): with the tile's ``a · (b − 128)``, the scan's
    ``−2 · dot + |a|² + |b|²`` is the true squared distance."""
    return (a_sq - 256.0 * a.sum(axis=1, dtype=np.int64)).astype(np.float32)


@intrinsic
def _micro(typingctx, a, i, packed, group, out, out_row, out_col):
    """out[out_row:+4, out_col:+32] = a[i:i+4] · packed columns of groups group, group+1."""
    sig = types.void(a, i, packed, group, out, out_row, out_col)

    def codegen(context, builder, signature, args):
        a_v, i_v, b_v, g_v, o_v, orow_v, ocol_v = args
        arrays = [
            cgutils.create_struct_proxy(signature.args[k])(context, builder, value=v)
            for k, v in ((0, a_v), (2, b_v), (4, o_v))
        ]
        a_arr, b_arr, o_arr = arrays
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        v16, vf16 = ir.VectorType(i32, 16), ir.VectorType(ir.FloatType(), 16)
        vpdpbusd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v16, [v16, v16, v16]), "llvm.x86.avx512.vpdpbusd.512"
        )
        a_stride = cgutils.unpack_tuple(builder, a_arr.strides, 2)[0]
        o_width = cgutils.unpack_tuple(builder, o_arr.shape, 2)[1]
        a_bytes = builder.bitcast(a_arr.data, i8.as_pointer())
        b_bytes = builder.gep(
            builder.bitcast(b_arr.data, i8.as_pointer()),
            [builder.mul(g_v, ir.Constant(i64, _QUADS * 64))],
        )
        o_floats = builder.bitcast(o_arr.data, ir.FloatType().as_pointer())
        rows = [
            builder.gep(a_bytes, [builder.mul(builder.add(i_v, ir.Constant(i64, r)), a_stride)])
            for r in range(ROWS)
        ]
        undef, lane0 = ir.Constant(v16, ir.Undefined), ir.Constant(i32, 0)
        broadcast = ir.Constant(v16, [0] * 16)
        acc = [[ir.Constant(v16, None)] * 2 for _ in range(ROWS)]
        for q in range(_QUADS):
            columns = [
                builder.load(
                    builder.bitcast(
                        builder.gep(b_bytes, [ir.Constant(i64, (h * _QUADS + q) * 64)]),
                        v16.as_pointer(),
                    ),
                    align=1,
                )
                for h in range(2)
            ]
            for r in range(ROWS):
                quad = builder.load(
                    builder.bitcast(
                        builder.gep(rows[r], [ir.Constant(i64, 4 * q)]), i32.as_pointer()
                    ),
                    align=1,
                )
                spread = builder.shuffle_vector(
                    builder.insert_element(undef, quad, lane0), undef, broadcast
                )
                for h in range(2):
                    acc[r][h] = builder.call(vpdpbusd, [acc[r][h], spread, columns[h]])
        for r in range(ROWS):
            start = builder.add(
                builder.mul(builder.add(orow_v, ir.Constant(i64, r)), o_width), ocol_v
            )
            for h in range(2):
                where = builder.gep(o_floats, [builder.add(start, ir.Constant(i64, GROUP * h))])
                builder.store(
                    builder.sitofp(acc[r][h], vf16),
                    builder.bitcast(where, vf16.as_pointer()),
                    align=4,
                )
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True)
def dot_tile(a, r0, r1, packed, c0, c1, out):  # pragma: no cover - numba
    """out[:r1−r0, :c1−c0] = a[r0:r1] · (b[c0:c1] − 128) as float32, ``a`` from
    :func:`pad_rows`, ``packed`` from :func:`pack_columns`, ``out`` C-contiguous of at least
    :func:`tile_shape`; ``c0`` a multiple of 32."""
    for i in range(r0, r1, ROWS):
        for j in range(c0, c1, COLUMNS):
            # numba's stubs give an @intrinsic the parameters of its definition, typingctx
            # included; jitted code calls it without that one
            _micro(a, i, packed, j // GROUP, out, i - r0, j - c0)  # type: ignore[call-arg]
