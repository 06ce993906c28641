"""Host side of SIFT's CUDA kernels (kernels/sift.cu): launches, reused device buffers and the
compaction of detected extrema.

:class:`CudaSift` takes a compiled module (``cupy.RawModule``, or the CPU emulator of the test
suite) and an array module, so its logic also runs in CI on numpy. Each kernel computes what
an xp definition in visiontk/_sift/ computes; tests compare them. :func:`for_current_device`
builds the CuPy instance and raises ImportError without CuPy.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from .. import devices
from . import constants as C
from .constants import DESCR_BINS, DESCR_WIDTH, IMAGE_BORDER, MAX_REFINE_STEPS, ORI_BINS
from .detect import Extrema
from .scale_space import layer_taps

SOURCE = Path(__file__).with_name("kernels") / "sift.cu"
#: Threads per block of the per-keypoint kernels (one block per keypoint) and of the extrema
#: kernel.
BLOCK = 128
#: The fused blur: output tile per block (w, h), threads per block, widest kernel radius it
#: holds in shared memory; each thread keeps the outputs it writes in registers, enough for
#: blocks of BLUR_MIN_THREADS threads.
BLUR_TILE = (32, 32)
BLUR_BLOCK = (32, 8)
BLUR_MAX_RADIUS = 20
BLUR_MIN_THREADS = 64
BLUR_MAX_PER_THREAD = BLUR_TILE[0] * BLUR_TILE[1] // BLUR_MIN_THREADS
#: Grid-stride kernels never launch more blocks than this (enough to fill any current GPU).
MAX_BLOCKS = 65535


def defines() -> dict:
    """Every constant sift.cu uses, from constants.py and the launch geometry above: passed as
    -D options, so the kernels hold no copies (floats as C float literals)."""
    floats = {
        name: getattr(C, name)
        for name in (
            "ORI_SIGMA_FACTOR",
            "ORI_RADIUS_FACTOR",
            "DESCR_SCALE_FACTOR",
            "DESCR_MAG_THRESHOLD",
            "DESCR_INT_FACTOR",
            "VLFEAT_MOVE_OFFSET",
            "VLFEAT_MAX_OFFSET",
            "ATAN_P1",
            "ATAN_P3",
            "ATAN_P5",
            "ATAN_P7",
        )
    }
    ints = {
        "ORI_BINS": C.ORI_BINS,
        "DESCR_WIDTH": C.DESCR_WIDTH,
        "DESCR_BINS": C.DESCR_BINS,
        "BLUR_TILE_W": BLUR_TILE[0],
        "BLUR_TILE_H": BLUR_TILE[1],
        "BLUR_MAX_RADIUS": BLUR_MAX_RADIUS,
        "BLUR_MAX_PER_THREAD": BLUR_MAX_PER_THREAD,
    }
    return {
        **{k: str(int(v)) for k, v in ints.items()},
        **{k: f"{float(v)!r}f" for k, v in floats.items()},
    }


def compile_options() -> tuple:
    """The options sift.cu is compiled with, by NVRTC here and by nvcc and the CPU emulator in
    the tests: the language standard and :func:`defines`."""
    return ("--std=c++14", *(f"-D{k}={v}" for k, v in defines().items()))


#: NVRTC options of the module (tests compile the source with exactly these).
NVRTC_OPTIONS = compile_options()


class CudaSift:
    """SIFT's scale space, detection, orientation and descriptor loops as CUDA kernels.

    Buffers (Gaussian and DoG stacks, extrema lists) are allocated once per image size and
    reused, per thread: a batch of same-sized images allocates nothing after the first.
    Detection launches every octave's kernel and then reads all the counts at once, the one
    host round-trip of detection.
    """

    def __init__(self, module, xp, block: int = BLOCK, initial_capacity: int | None = None):
        self.xp = xp
        self.block = block
        self.initial_capacity = initial_capacity
        self._module = module
        self._local = threading.local()

    def _kernel(self, name):
        return self._module.get_function(name)

    def _buffer(self, key, shape, dtype):
        buffers = self._local.__dict__.setdefault("buffers", {})
        found = buffers.get(key)
        if found is None or found.shape != tuple(shape) or found.dtype != dtype:
            found = buffers[key] = self.xp.empty(shape, dtype=dtype)
        return found

    # -- scale space ---------------------------------------------------------------------------
    def octave_blur(self, base, sigma: float, n_octave_layers: int, level: int):
        """All Gaussian layers of an octave and its DoG from the octave's ``base``, blurred
        directly from it (:func:`~visiontk._sift.scale_space.layer_taps`). Returns (gaussians,
        dogs), or None when a layer's kernel is wider than the tile's halo (large ``sigma``):
        the caller then blurs layer by layer."""
        xp = self.xp
        found = self._taps(sigma, n_octave_layers)
        if found is None:
            return None
        table, radii, radius_max = found
        base = xp.ascontiguousarray(base, dtype=xp.float32)
        h, w = base.shape
        n_gauss = int(radii.shape[0])
        gauss = self._buffer(("gauss", level), (n_gauss, h, w), np.float32)
        dogs = self._buffer(("dogs", level), (n_gauss - 1, h, w), np.float32)
        grid = ((w + BLUR_TILE[0] - 1) // BLUR_TILE[0], (h + BLUR_TILE[1] - 1) // BLUR_TILE[1])
        self._kernel("octave_blur_dog")(
            grid,
            BLUR_BLOCK,
            (
                base,
                np.int32(h),
                np.int32(w),
                np.int32(n_gauss),
                table,
                radii,
                np.int32(radius_max),
                gauss,
                dogs,
            ),
        )
        return gauss, dogs

    def _taps(self, sigma: float, n_octave_layers: int):
        """(taps table, radii) on the device for these options, uploaded once per thread; None
        when the widest kernel does not fit the blur tile's halo."""
        cache = self._local.__dict__.setdefault("taps", {})
        key = (float(sigma), int(n_octave_layers))
        if key not in cache:
            taps = layer_taps(sigma, n_octave_layers)
            radius_max = max(len(t) // 2 for t in taps)
            if radius_max > BLUR_MAX_RADIUS:
                cache[key] = None
            else:
                table = np.zeros((len(taps), 2 * BLUR_MAX_RADIUS + 1), np.float32)
                for row, t in zip(table, taps, strict=True):
                    r = len(t) // 2
                    row[BLUR_MAX_RADIUS - r : BLUR_MAX_RADIUS + r + 1] = t
                radii = np.array([len(t) // 2 for t in taps], np.int32)
                cache[key] = (self.xp.asarray(table), self.xp.asarray(radii), radius_max)
        return cache[key]

    # -- detection -----------------------------------------------------------------------------
    def detect_extrema(
        self,
        octaves,
        *,
        threshold: float,
        n_octave_layers: int,
        contrast_threshold: float,
        edge_threshold: float,
        refinement: str = "opencv",
    ) -> list[Extrema]:
        """Extrema of every octave, refined and tested (what
        :func:`visiontk._sift.detect.refine_extrema` keeps from
        :func:`~visiontk._sift.detect.find_candidates`), in the order the GPU found them: the
        caller sorts (extraction does, when it removes duplicates)."""
        xp = self.xp
        counts = self._buffer("counts", (len(octaves),), np.uint64)
        counts.fill(0)
        capacities = self._local.__dict__.setdefault("capacity", {})
        lists = []
        params = (
            np.float32(threshold),
            np.float32(contrast_threshold),
            np.float32(edge_threshold),
            np.int32(IMAGE_BORDER),
            np.int32(MAX_REFINE_STEPS),
            np.int32(refinement == "tolerant"),
        )

        def launch(k, octave, capacity):
            dogs = xp.ascontiguousarray(octave.dogs, dtype=xp.float32)
            n_dog, h, w = dogs.shape
            out = (
                self._buffer(("layer", k), (capacity,), np.int64),
                self._buffer(("row", k), (capacity,), np.int64),
                self._buffer(("col", k), (capacity,), np.int64),
                self._buffer(("offset", k), (capacity, 3), np.float32),
                self._buffer(("response", k), (capacity,), np.float32),
            )
            inner = (n_dog - 2) * h * w
            blocks = max(1, min((inner + self.block - 1) // self.block, MAX_BLOCKS))
            self._kernel("detect_extrema")(
                (blocks,),
                (self.block,),
                (
                    dogs,
                    np.int32(n_dog - 2),
                    np.int32(h),
                    np.int32(w),
                    *params,
                    np.uint64(capacity),
                    counts[k : k + 1],
                    *out,
                ),
            )
            return out

        for k, octave in enumerate(octaves):
            shape = octave.gaussians.shape[1:]
            capacity = capacities.get(
                shape, self.initial_capacity or max(4096, shape[0] * shape[1] // 64)
            )
            lists.append((launch(k, octave, capacity), capacity))
        found = devices.to_host(counts).astype(np.int64)
        result = []
        for k, octave in enumerate(octaves):
            out, capacity = lists[k]
            n = int(found[k])
            if n > capacity:  # more extrema than room: grow this size's lists and rerun
                capacities[octave.gaussians.shape[1:]] = n
                counts[k : k + 1].fill(0)
                out = launch(k, octave, n)
            layer, row, col, offset, response = (a[:n] for a in out)
            result.append(
                Extrema(layer, row, col, offset[:, 0], offset[:, 1], offset[:, 2], response)
            )
        return result

    # -- orientation and descriptors: keypoints of all octaves in one launch -------------------
    def orientation_histograms(self, octaves, number, layer, x, y, scale, subpixel: bool = False):
        """Raw orientation histograms of keypoints of any octaves (``number``: which), in one
        launch; per keypoint what :func:`visiontk._sift.orient.raw_orientation_histograms`
        computes."""
        xp = self.xp
        count = int(layer.shape[0])
        hist = xp.zeros((count, ORI_BINS), xp.float32)
        if count:
            self._kernel("orientation_histograms")(
                (count,),
                (self.block,),
                (
                    *self._octave_table(octaves),
                    *self._int64(number, layer),
                    *self._float32(x, y, scale),
                    np.int32(count),
                    np.int32(subpixel),
                    hist,
                ),
            )
        return hist

    def descriptors(
        self,
        octaves,
        number,
        layer,
        x,
        y,
        direction,
        scale,
        rootsift: bool = False,
        subpixel: bool = False,
    ):
        """Descriptors of keypoints of any octaves in one launch: (raw, uint8). Per keypoint,
        raw is what :func:`visiontk._sift.describe.raw_descriptors` computes and uint8 what
        :func:`visiontk._sift.describe.quantize_descriptors` makes of it (the kernel
        normalises and quantises in the same launch)."""
        xp = self.xp
        count = int(layer.shape[0])
        size = DESCR_WIDTH * DESCR_WIDTH * DESCR_BINS
        raw = xp.zeros((count, size), xp.float32)
        described = xp.zeros((count, size), xp.uint8)
        if count:
            self._kernel("descriptors")(
                (count,),
                (self.block,),
                (
                    *self._octave_table(octaves),
                    *self._int64(number, layer),
                    *self._float32(x, y, direction, scale),
                    np.int32(count),
                    np.int32(rootsift),
                    np.int32(subpixel),
                    raw,
                    described,
                ),
            )
        return raw, described

    def _octave_table(self, octaves):
        """(addresses, heights, widths) of the octaves' Gaussian stacks, as device arrays."""
        stacks = [self.xp.ascontiguousarray(o.gaussians, dtype=self.xp.float32) for o in octaves]
        self._local.stacks = stacks  # keep converted copies alive until the next launch
        return (
            self.xp.asarray(np.array([_address(g) for g in stacks], np.uint64)),
            self.xp.asarray(np.array([g.shape[1] for g in stacks], np.int32)),
            self.xp.asarray(np.array([g.shape[2] for g in stacks], np.int32)),
        )

    def _int64(self, *arrays):
        return [self.xp.ascontiguousarray(a, dtype=self.xp.int64) for a in arrays]

    def _float32(self, *arrays):
        return [self.xp.ascontiguousarray(a, dtype=self.xp.float32) for a in arrays]


def _address(array) -> int:
    """Device address of a CuPy array, or host address of a numpy one (CPU emulation)."""
    pointer = getattr(array.data, "ptr", None)
    return int(pointer) if pointer is not None else int(array.ctypes.data)


@functools.cache
def _module(device_id: int):
    import cupy as cp

    return cp.RawModule(code=SOURCE.read_text(), options=NVRTC_OPTIONS)


def cupy_module():
    """kernels/sift.cu as a ``cupy.RawModule`` for CuPy's current device (compiled by NVRTC
    on the first launch)."""
    import cupy as cp

    return _module(cp.cuda.Device().id)


@functools.cache
def _for_device(device_id: int) -> CudaSift:
    import cupy as cp

    return CudaSift(_module(device_id), cp)


def for_current_device() -> CudaSift:
    """The CuPy-backed kernels for CuPy's current device."""
    import cupy as cp

    return _for_device(cp.cuda.Device().id)
