"""Exact integer dot products of uint8 SIFT descriptors: the exact matcher's distance tiles,
one micro-kernel per SIMD level (:mod:`visiontk.simd`), each faster than float32 BLAS there
(docs/benchmarks.md, "Matching").

- ``avx512vnni`` / ``avxvnni``: ``vpdpbusd`` multiplies unsigned bytes by signed bytes and adds
  them, four at a time, into int32 lanes (16 lanes on 512-bit registers, 8 on 256-bit). SIFT
  descriptors are unsigned, so B is stored shifted by −128 and ``a · b = a · (b − 128) +
  128 · Σa``: the caller folds the correction into ``|a|²`` (:func:`row_terms`).
- ``avx2``: ``vpmaddwd`` multiplies 16-bit pairs and adds each pair into an int32 lane (8
  lanes), then one add into the accumulator: both sides stored as int16, no shift.

Every product and sum is an integer under 2²⁴, so the float32 tiles written here hold the same
values as float32 BLAS on the same descriptors, bit for bit, and the scan that follows
(``_cpu_kernels.scan_tile``) picks the same neighbours on every path.

The micro-kernel (4 rows of A × 2 vectors of columns of B, eight accumulators in registers, the
128 dimensions unrolled) is LLVM IR written here (``_micro``). Each 32-bit lane reads 4 bytes of
a row per step: four uint8 dimensions, or two int16. :func:`available` says whether a level's
kernel compiles and gives exact products on this machine; the matcher uses float32 BLAS
otherwise (``generic``: aarch64 among others, where no kernel of ours is written yet).

Importing this module raises ImportError when numba is missing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import simd
from .._numba_cache import use_user_cache

use_user_cache()

#: Descriptor length the kernels are written for (SIFT); rows of A per micro-tile.
DIMS, ROWS = 128, 4


@dataclass(frozen=True)
class Path:
    """One micro-kernel: its SIMD level, int32 lanes per vector, how A and B are stored
    (element type, B's shift) and the LLVM intrinsic that multiplies and adds."""

    level: str
    code: int  # the kernel's number inside jitted code
    lanes: int
    element: type
    shift: int
    intrinsic: str
    accumulates: bool  # the instruction adds into its accumulator (else: one more add)

    @property
    def marker(self) -> tuple[int, ...]:
        """The kernel's number as the length of a tuple: a type, so each path compiles apart
        and calls dispatch at full speed (a literal int argument re-dispatches every call)."""
        return (0,) * (self.code + 1)

    @property
    def columns(self) -> int:
        """Columns of B per micro-tile: two vectors."""
        return 2 * self.lanes

    @property
    def steps(self) -> int:
        """4-byte units of one descriptor."""
        return DIMS * np.dtype(self.element).itemsize // 4


PATHS = {
    p.level: p
    for p in (
        Path("avx512vnni", 0, 16, np.uint8, 128, "llvm.x86.avx512.vpdpbusd.512", True),
        Path("avxvnni", 1, 8, np.uint8, 128, "llvm.x86.avx512.vpdpbusd.256", True),
        Path("avx2", 2, 8, np.int16, 0, "llvm.x86.avx2.pmadd.wd", False),
    )
}
_BY_CODE = {p.code: p for p in PATHS.values()}


def chosen() -> Path | None:
    """The kernel for the level :func:`visiontk.simd.level` allows, if it works here."""
    best = simd.level()
    if best == "generic":
        return None
    path = PATHS[best]
    return path if available(path.level) else None


@functools.cache
def available(level: str) -> bool:
    """Whether ``level``'s kernel runs here: the CPU and numba's target have its instructions,
    and it compiles and gives exact products on a small case."""
    if simd.LEVELS.index(simd.numba_level()) < simd.LEVELS.index(level):
        return False  # LLVM cannot emit it for this target: never try
    path = PATHS[level]
    try:
        rng = np.random.default_rng(0)
        a = rng.integers(0, 256, (5, DIMS), dtype=np.uint8)
        b = rng.integers(0, 256, (33, DIMS), dtype=np.uint8)
        a[0], b[0] = 255, 0  # the extremes
        tile = np.empty(tile_shape(path, 5, 33), np.float32)
        dot_tile(path, pad_rows(path, a), 0, 5, pack_columns(path, b), 0, 33, tile)
        expected = a.astype(np.int64) @ (b.astype(np.int64) - path.shift).T
        return bool(np.array_equal(tile[:5, :33], expected))
    except Exception:  # any failure to build or run it means: use BLAS
        return False


def pad_rows(path: Path, a: np.ndarray) -> np.ndarray:
    """A's rows in the kernel's element type, with three zero rows after them: a micro-tile
    starting at any row stays inside."""
    out: np.ndarray = np.zeros((len(a) + ROWS - 1, DIMS), path.element)
    out[: len(a)] = a
    return out


def pack_columns(path: Path, b: np.ndarray) -> np.ndarray:
    """B − shift in the kernel's element type and order: (groups of ``lanes`` columns, steps,
    ``lanes`` × 4 bytes), the columns padded to a micro-tile.

    Example
    -------
    >>> pack_columns(PATHS["avx512vnni"], np.full((1, 128), 130, np.uint8)).shape
    (2, 32, 64)
    """
    n = -(-len(b) // path.columns) * path.columns
    stored = np.int8 if path.element == np.uint8 else path.element
    shifted: np.ndarray = np.zeros((n, DIMS), stored)
    shifted[: len(b)] = (b.astype(np.int16) - path.shift).astype(stored)
    per = 4 // np.dtype(stored).itemsize
    grouped = shifted.reshape(n // path.lanes, path.lanes, path.steps, per).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(grouped).reshape(n // path.lanes, path.steps, path.lanes * per)


def tile_shape(path: Path, rows: int, columns: int) -> tuple[int, int]:
    """A tile :func:`dot_tile` can write ``rows`` × ``columns`` into (micro-tile overhang)."""
    return rows + ROWS - 1, -(-columns // path.columns) * path.columns


def row_terms(path: Path, a: np.ndarray, a_sq: np.ndarray) -> np.ndarray:
    """``|a|² − 2 · shift · Σa`` (float32, exact): with the tile's ``a · (b − shift)``, the
    scan's ``−2 · dot + |a|² + |b|²`` is the true squared distance."""
    if not path.shift:
        return a_sq
    return (a_sq - 2.0 * path.shift * a.sum(axis=1, dtype=np.int64)).astype(np.float32)


def dot_tile(path, a, r0, r1, packed, c0, c1, out) -> None:
    """out[:r1−r0, :c1−c0] = a[r0:r1] · (b[c0:c1] − shift) as float32, ``a`` from
    :func:`pad_rows`, ``packed`` from :func:`pack_columns`, ``out`` C-contiguous of at least
    :func:`tile_shape`; ``c0`` a multiple of ``path.columns``."""
    _dot_tile(a, r0, r1, packed, c0, c1, out, path.marker, path.columns)


@intrinsic
def _micro(typingctx, a, i, packed, group, out, out_row, out_col, marker):
    """out[out_row:+4, out_col:+2·lanes] = a[i:i+4] · packed columns of groups group, group+1,
    with the kernel of :attr:`Path.marker` ``marker``."""
    if not isinstance(marker, types.UniTuple):
        return None
    path = _BY_CODE[marker.count - 1]
    sig = types.void(a, i, packed, group, out, out_row, out_col, marker)

    def codegen(context, builder, signature, args):
        a_v, i_v, b_v, g_v, o_v, orow_v, ocol_v, _ = args
        a_arr, b_arr, o_arr = (
            cgutils.create_struct_proxy(signature.args[k])(context, builder, value=v)
            for k, v in ((0, a_v), (2, b_v), (4, o_v))
        )
        i8, i16, i32, i64 = (ir.IntType(n) for n in (8, 16, 32, 64))
        lanes = path.lanes
        vacc, vf = ir.VectorType(i32, lanes), ir.VectorType(ir.FloatType(), lanes)
        # the multiplied operands: bytes for vpdpbusd (as int32 lanes), int16 for vpmaddwd
        vop = vacc if path.accumulates else ir.VectorType(i16, 2 * lanes)
        operands = [vacc, vop, vop] if path.accumulates else [vop, vop]
        multiply = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vacc, operands), path.intrinsic
        )
        width = lanes * 4
        a_stride = cgutils.unpack_tuple(builder, a_arr.strides, 2)[0]
        o_width = cgutils.unpack_tuple(builder, o_arr.shape, 2)[1]
        a_bytes = builder.bitcast(a_arr.data, i8.as_pointer())
        b_bytes = builder.gep(
            builder.bitcast(b_arr.data, i8.as_pointer()),
            [builder.mul(g_v, ir.Constant(i64, path.steps * width))],
        )
        o_floats = builder.bitcast(o_arr.data, ir.FloatType().as_pointer())
        rows = [
            builder.gep(a_bytes, [builder.mul(builder.add(i_v, ir.Constant(i64, r)), a_stride)])
            for r in range(ROWS)
        ]
        undef, lane0 = ir.Constant(vacc, ir.Undefined), ir.Constant(i32, 0)
        broadcast = ir.Constant(vacc, [0] * lanes)
        acc = [[ir.Constant(vacc, None)] * 2 for _ in range(ROWS)]
        for q in range(path.steps):
            columns = [
                builder.load(
                    builder.bitcast(
                        builder.gep(b_bytes, [ir.Constant(i64, (h * path.steps + q) * width)]),
                        vop.as_pointer(),
                    ),
                    align=1,
                )
                for h in range(2)
            ]
            for r in range(ROWS):
                unit = builder.load(
                    builder.bitcast(
                        builder.gep(rows[r], [ir.Constant(i64, 4 * q)]), i32.as_pointer()
                    ),
                    align=1,
                )
                spread = builder.shuffle_vector(
                    builder.insert_element(undef, unit, lane0), undef, broadcast
                )
                if not path.accumulates:
                    spread = builder.bitcast(spread, vop)
                for h in range(2):
                    if path.accumulates:
                        acc[r][h] = builder.call(multiply, [acc[r][h], spread, columns[h]])
                    else:
                        acc[r][h] = builder.add(
                            acc[r][h], builder.call(multiply, [spread, columns[h]])
                        )
        for r in range(ROWS):
            start = builder.add(
                builder.mul(builder.add(orow_v, ir.Constant(i64, r)), o_width), ocol_v
            )
            for h in range(2):
                where = builder.gep(o_floats, [builder.add(start, ir.Constant(i64, lanes * h))])
                builder.store(
                    builder.sitofp(acc[r][h], vf),
                    builder.bitcast(where, vf.as_pointer()),
                    align=4,
                )
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True)
def _dot_tile(a, r0, r1, packed, c0, c1, out, marker, columns):  # pragma: no cover - numba
    for i in range(r0, r1, ROWS):
        for j in range(c0, c1, columns):
            # numba's stubs give an @intrinsic the parameters of its definition, typingctx
            # included; jitted code calls it without that one
            _micro(a, i, packed, j // (columns // 2), out, i - r0, j - c0, marker)  # type: ignore[call-arg]
