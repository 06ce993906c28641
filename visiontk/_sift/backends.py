"""SIFT's backends: who carries out each of SIFT's four steps on which device.

SIFT has four steps, and a backend is an object that does each of them:

* ``scale_space``: Gaussian octaves. XpBackend and NumbaBackend: :func:`.scale_space.scale_space`
  (cv2 blurs on the CPU); CudaBackend: a fused blur + DoG kernel per octave.
* ``detect``: refined extrema. XpBackend: :func:`.detect.find_candidates` then
  :func:`.detect.refine_extrema`; NumbaBackend: a compiled candidate search, the same
  refinement; CudaBackend: one fused detect + refine kernel per octave.
* ``orientations``: raw orientation histograms. XpBackend:
  :func:`.orient.raw_orientation_histograms` octave by octave; NumbaBackend: its compiled form;
  CudaBackend: one launch for the keypoints of all octaves.
* ``describe``: uint8 descriptors. XpBackend: :func:`.describe.raw_descriptors` and
  :func:`.describe.quantize_descriptors`; NumbaBackend: compiled raw descriptors, the same
  quantisation; CudaBackend: one launch that also quantises.

The xp definitions are the reference: the compiled backends are tested against them
(tests/sift/test_kernels.py, tests/sift/test_cuda_kernels.py). :func:`for_device` resolves a user's
device request once into a backend, which carries its array module (``backend.xp``); the data
flow (:mod:`.extraction`) receives the backend and never asks again which device it is on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .. import devices
from ..devices import XpArray
from ..errors import OptionError, shown
from .constants import DESCR_BINS, DESCR_WIDTH, ORI_BINS
from .describe import quantize_descriptors, raw_descriptors
from .detect import Extrema, find_candidates, prethreshold, refine_extrema
from .orient import raw_orientation_histograms
from .scale_space import Octave, StackPool, scale_space, upsample_2x

if TYPE_CHECKING:
    from ._gpu_kernels import CudaSift
    from .options import SiftOptions

#: Set to "xp" to run the definitions instead of the compiled loops (for comparisons).
KERNELS_ENV = "VISIONTK_KERNELS"


class SiftBackend(Protocol):
    """The four steps of SIFT on one device (arrays of ``xp``)."""

    name: str
    #: the array module: numpy, or cupy on a GPU
    xp: ModuleType
    #: the resolved device the arrays live on: "cpu" or "cuda"
    device: str
    #: Whether ``detect`` may be called an octave at a time (keep="largest" then skips the
    #: octaves the cap would drop): each call's extrema its own arrays, and no cost per call.
    detects_octave_by_octave: bool

    def scale_space(self, gray: XpArray, opts: SiftOptions) -> list[Octave]:
        """Gaussian (and DoG) octaves of a grey float32 image (0..255) on the device."""

    def detect(self, octaves: list[Octave], opts: SiftOptions) -> list[Extrema]:
        """Refined, tested extrema of each octave."""

    def orientations(
        self,
        octaves: list[Octave],
        number: XpArray,
        layer: XpArray,
        x: XpArray,
        y: XpArray,
        scale: XpArray,
        *,
        subpixel: bool = False,
    ) -> XpArray:
        """Raw (unsmoothed) orientation histograms, K × ORI_BINS float32, of keypoints of any
        octaves (``number`` says which), the window weighted around each keypoint's nearest
        pixel or, with ``subpixel``, around it."""

    def describe(
        self,
        octaves: list[Octave],
        number: XpArray,
        layer: XpArray,
        x: XpArray,
        y: XpArray,
        direction: XpArray,
        scale: XpArray,
        *,
        rootsift: bool,
        subpixel: bool = False,
    ) -> XpArray:
        """Descriptors, K × 128 uint8 (normalised, clipped, quantised; RootSIFT if asked),
        the window centred on each keypoint's nearest pixel or, with ``subpixel``, on it."""


class XpBackend:
    """SIFT's definitions in plain array code, on numpy or CuPy: the reference the compiled
    backends are checked against. Subclasses replace the loops (``candidates``,
    ``raw_orientations``, ``raw_descriptors``) or whole steps."""

    name = "xp"
    detects_octave_by_octave = True

    def __init__(self, xp: ModuleType = np) -> None:
        self.xp = xp
        self.device = "cpu" if xp is np else "cuda"

    def scale_space(self, gray: XpArray, opts: SiftOptions) -> list[Octave]:
        # On the CPU, cv2.resize doubles the image exactly as the definition does, faster.
        double = (
            devices.upsample_2x if self.xp is np else functools.partial(upsample_2x, xp=self.xp)
        )
        return scale_space(gray, **_octave_options(opts), xp=self.xp, double=double)

    def detect(self, octaves: list[Octave], opts: SiftOptions) -> list[Extrema]:
        threshold = _prethreshold(opts)
        return [
            refine_extrema(o.gaussians, *self.candidates(o, threshold), xp=self.xp, **_tests(opts))
            for o in octaves
        ]

    def candidates(self, octave: Octave, threshold: float) -> tuple[XpArray, XpArray, XpArray]:
        return find_candidates(octave, threshold, self.xp)

    def orientations(
        self,
        octaves: list[Octave],
        number: XpArray,
        layer: XpArray,
        x: XpArray,
        y: XpArray,
        scale: XpArray,
        *,
        subpixel: bool = False,
    ) -> XpArray:
        return self._by_octave(
            functools.partial(self.raw_orientations, subpixel=subpixel),
            octaves,
            number,
            (layer, x, y, scale),
            ORI_BINS,
        )

    def raw_orientations(
        self,
        gaussians: XpArray,
        layer: XpArray,
        x: XpArray,
        y: XpArray,
        scale: XpArray,
        *,
        subpixel: bool = False,
    ) -> XpArray:
        return raw_orientation_histograms(gaussians, layer, x, y, scale, self.xp, subpixel=subpixel)

    def describe(
        self,
        octaves: list[Octave],
        number: XpArray,
        layer: XpArray,
        x: XpArray,
        y: XpArray,
        direction: XpArray,
        scale: XpArray,
        *,
        rootsift: bool,
        subpixel: bool = False,
    ) -> XpArray:
        raw = self._by_octave(
            functools.partial(self.raw_descriptors, subpixel=subpixel),
            octaves,
            number,
            (layer, x, y, direction, scale),
            DESCR_WIDTH * DESCR_WIDTH * DESCR_BINS,
        )
        return quantize_descriptors(raw, self.xp, rootsift=rootsift)

    def raw_descriptors(
        self,
        gaussians: XpArray,
        layer: XpArray,
        x: XpArray,
        y: XpArray,
        direction: XpArray,
        scale: XpArray,
        *,
        subpixel: bool = False,
    ) -> XpArray:
        return raw_descriptors(gaussians, layer, x, y, direction, scale, self.xp, subpixel=subpixel)

    def _by_octave(
        self,
        single: Callable[..., XpArray],
        octaves: list[Octave],
        number: XpArray,
        arrays: tuple[XpArray, ...],
        width: int,
    ) -> XpArray:
        """A per-octave loop over keypoints of several octaves, results in their order."""
        xp = self.xp
        out = xp.zeros((number.shape[0], width), dtype=xp.float32)
        for i, octave in enumerate(octaves):
            sel = xp.nonzero(number == i)[0]
            if sel.shape[0]:
                out[sel] = single(octave.gaussians, *(a[sel] for a in arrays))
        return out


class NumbaBackend(XpBackend):
    """The CPU: numba kernels for the three per-pixel and per-keypoint loops (_cpu_kernels),
    the definitions for the rest."""

    name = "numba"

    def __init__(self, kernels: ModuleType) -> None:
        super().__init__(np)
        self.kernels = kernels

    def scale_space(self, gray: XpArray, opts: SiftOptions) -> list[Octave]:
        octaves = scale_space(
            gray,
            **_octave_options(opts),
            xp=np,
            double=lambda image: devices.upsample_2x(image, _STACKS.take(_doubled(image))),
            allocate=_STACKS.take,
        )
        _STACKS.trim()
        return octaves

    def candidates(self, octave: Octave, threshold: float) -> tuple[XpArray, XpArray, XpArray]:
        return self.kernels.find_candidates(octave, threshold)

    def raw_orientations(
        self,
        gaussians: XpArray,
        layer: XpArray,
        x: XpArray,
        y: XpArray,
        scale: XpArray,
        *,
        subpixel: bool = False,
    ) -> XpArray:
        return self.kernels.raw_orientation_histograms(
            gaussians, layer, x, y, scale, subpixel=subpixel
        )

    def raw_descriptors(
        self,
        gaussians: XpArray,
        layer: XpArray,
        x: XpArray,
        y: XpArray,
        direction: XpArray,
        scale: XpArray,
        *,
        subpixel: bool = False,
    ) -> XpArray:
        return self.kernels.raw_descriptors(
            gaussians, layer, x, y, direction, scale, subpixel=subpixel
        )


class CudaBackend(XpBackend):
    """NVIDIA GPUs: the CUDA kernels of kernels/sift.cu (through :class:`._gpu_kernels.CudaSift`)
    for every step, each launched once per octave or once for all keypoints."""

    name = "cuda"
    # One pass finds every octave's extrema and returns views of buffers the next call reuses;
    # a call per octave would also wait on the device each time.
    detects_octave_by_octave = False

    def __init__(self, cuda: CudaSift) -> None:
        super().__init__(cuda.xp)
        self.cuda = cuda

    def scale_space(self, gray: XpArray, opts: SiftOptions) -> list[Octave]:
        return scale_space(
            gray,
            **_octave_options(opts),
            xp=self.xp,
            double=functools.partial(upsample_2x, xp=self.xp),
            octave_blur=self.cuda.octave_blur,
        )

    def detect(self, octaves: list[Octave], opts: SiftOptions) -> list[Extrema]:
        threshold = _prethreshold(opts)
        return self.cuda.detect_extrema(octaves, threshold=threshold, **_tests(opts))

    def orientations(
        self,
        octaves: list[Octave],
        number: XpArray,
        layer: XpArray,
        x: XpArray,
        y: XpArray,
        scale: XpArray,
        *,
        subpixel: bool = False,
    ) -> XpArray:
        return self.cuda.orientation_histograms(
            octaves, number, layer, x, y, scale, subpixel=subpixel
        )

    def describe(
        self,
        octaves: list[Octave],
        number: XpArray,
        layer: XpArray,
        x: XpArray,
        y: XpArray,
        direction: XpArray,
        scale: XpArray,
        *,
        rootsift: bool,
        subpixel: bool = False,
    ) -> XpArray:
        return self.cuda.descriptors(
            octaves, number, layer, x, y, direction, scale, rootsift=rootsift, subpixel=subpixel
        )[1]


def _octave_options(opts: SiftOptions) -> dict[str, Any]:
    """The options :func:`.scale_space.scale_space` takes (each set: options left to the preset
    have its values)."""
    return {
        "sigma": opts.sigma,
        "n_octave_layers": opts.n_octave_layers,
        "upsample": opts.upsample,
        "n_octaves": opts.n_octaves,
    }


def _prethreshold(opts: SiftOptions) -> float:
    # SiftOptions fills in every option left to None from its preset
    assert opts.contrast_threshold is not None and opts.n_octave_layers is not None
    return prethreshold(opts.contrast_threshold, opts.n_octave_layers)


def _tests(opts: SiftOptions) -> dict[str, Any]:
    return {
        "n_octave_layers": opts.n_octave_layers,
        "contrast_threshold": opts.contrast_threshold,
        "edge_threshold": opts.edge_threshold,
        "refinement": opts.refinement,
    }


# --- the registry: which backend a device gets ------------------------------------------------


def array_module_for(device: str | SiftBackend = "auto") -> ModuleType:
    """The array module of a device request or of an already resolved backend (for steps
    that need the device but not SIFT's kernels: matching)."""
    if isinstance(device, str):
        return devices.array_module(devices.resolve_device(device))
    return for_device(device).xp  # a backend, or the one-line error


def for_device(device: str | SiftBackend = "auto") -> SiftBackend:
    """The backend for a user's device request ("auto", "cpu", "cuda"), resolved once:
    numba kernels on the CPU (the definitions where numba is missing), CUDA kernels on a GPU.
    ``VISIONTK_KERNELS=xp`` selects the definitions on either device. A backend is returned
    as it is: every entry point takes a device request or an already resolved backend."""
    if isinstance(device, XpBackend):  # every backend is one
        return device
    if not isinstance(device, str):
        raise OptionError(
            f"device must be one of {', '.join(devices.DEVICES)} or a backend from "
            f"visiontk.extract.sift_backend, got {shown(device)}"
        )
    resolved = devices.resolve_device(device)
    xp = devices.array_module(resolved)
    if os.environ.get(KERNELS_ENV, "compiled") == "xp":
        return XpBackend(xp)
    if resolved == "cpu":
        kernels = cpu_kernels()
        return XpBackend(np) if kernels is None else NumbaBackend(kernels)
    from . import _gpu_kernels

    return CudaBackend(_gpu_kernels.for_current_device())


#: Each thread's Gaussian stacks of its last image, shared by every CPU backend.
_STACKS = StackPool()


def _doubled(image: XpArray) -> tuple[int, int]:
    return 2 * image.shape[0], 2 * image.shape[1]


def release_buffers() -> None:
    """Free the scale-space buffers this thread keeps for its next image of the same size
    (about 270 MB after a 1080p image with the image doubled)."""
    _STACKS.release()


_PENDING_COMPILE = [0.0]
#: Whether this process is visiontk's own (its CLI, a pipeline worker): see :func:`own_process`.
_OWN_PROCESS = [False]
#: What numba imports to find a BLAS for ``np.dot`` (it imports all of scipy.linalg).
_SCIPY_BLAS = "scipy.linalg.cython_blas"


def own_process() -> None:
    """Say that this process runs only visiontk's code (the CLI and pipeline workers call it
    first): numba may then load the kernels without probing for SciPy's BLAS (see
    :func:`_without_blas_probe`)."""
    _OWN_PROCESS[0] = True


@contextlib.contextmanager
def _without_blas_probe() -> Iterator[None]:
    """numba, loading its first compiled function, imports scipy.linalg to find a BLAS for
    ``np.dot`` (a large share of a fresh process's time to its first keypoints); the kernels
    call no BLAS. In visiontk's own processes the probe is made to fail fast
    (the module is marked absent while numba loads), so numba notes BLAS as missing and
    scipy.linalg stays unimported; numba code compiled later that calls ``np.dot`` on matrices
    still finds BLAS (it imports it then). Never in a user's process, where another thread
    importing scipy.linalg meanwhile would fail."""
    if not _OWN_PROCESS[0] or _SCIPY_BLAS in sys.modules or "numba.np.arraymath" in sys.modules:
        yield
        return
    # None in sys.modules makes an import fail at once (documented; typeshed does not allow it)
    sys.modules[_SCIPY_BLAS] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if _SCIPY_BLAS in sys.modules and sys.modules[_SCIPY_BLAS] is None:
            del sys.modules[_SCIPY_BLAS]


@functools.cache
def cpu_kernels() -> ModuleType | None:
    """The numba kernels, compiled (or loaded from numba's cache) once per process, or None
    when numba is not installed. The time it took is reported once (:func:`take_compile_time`)."""
    t = time.perf_counter()
    with _without_blas_probe():
        try:
            from . import _cpu_kernels
        except ImportError:
            return None
        _cpu_kernels.warm_up()
    _PENDING_COMPILE[0] += time.perf_counter() - t
    return _cpu_kernels


def compile_cpu_kernels() -> bool:
    """Compile (or load from numba's cache) the CPU kernels now, their time not reported by
    the next SIFT; False when numba is not installed."""
    compiled = cpu_kernels() is not None
    take_compile_time()
    return compiled


def take_compile_time() -> float:
    """Seconds spent compiling kernels since the last call (reported once, in timings)."""
    spent, _PENDING_COMPILE[0] = _PENDING_COMPILE[0], 0.0
    return spent
