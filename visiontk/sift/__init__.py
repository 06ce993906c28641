"""SIFT written for visiontk: scale space, extrema, orientations and descriptors.

The public entry point is :func:`sift` (re-exported as ``visiontk.sift``).
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from .. import backend, io
from ..errors import ImageError, OptionError, VisiontkError
from ..features import Features
from . import constants as C
from . import extraction
from .describe import raw_descriptors
from .detect import find_candidates
from .orient import raw_orientation_histograms


@dataclass(frozen=True)
class SiftOptions:
    """Options of :func:`sift`, validated on construction (defaults are OpenCV's)."""

    max_features: int = 0
    n_octave_layers: int = C.N_OCTAVE_LAYERS
    contrast_threshold: float = C.CONTRAST_THRESHOLD
    edge_threshold: float = C.EDGE_THRESHOLD
    sigma: float = C.SIGMA
    upsample: bool = True
    upright: bool = False
    rootsift: bool = False

    def __post_init__(self):
        checks = [
            ("max_features", isinstance(self.max_features, (int, np.integer))
             and self.max_features >= 0, "an integer >= 0 (0 keeps all)"),
            ("n_octave_layers", isinstance(self.n_octave_layers, (int, np.integer))
             and 1 <= self.n_octave_layers <= 10, "an integer in 1..10"),
            ("contrast_threshold", _number(self.contrast_threshold)
             and self.contrast_threshold >= 0, "a number >= 0"),
            ("edge_threshold", _number(self.edge_threshold) and self.edge_threshold > 0,
             "a number > 0"),
            ("sigma", _number(self.sigma) and 0.1 <= self.sigma <= 10, "a number in 0.1..10"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise OptionError(f"sift option {name} must be {expected}, "
                                  f"got {getattr(self, name)!r}")
        for name in ("upsample", "upright", "rootsift"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise OptionError(f"sift option {name} must be True or False, "
                                  f"got {getattr(self, name)!r}")


def _number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value)


def sift(image, *, device: str = "auto", mask=None, max_pixels: int = io.DEFAULT_MAX_PIXELS,
         **options) -> Features:
    """Detect SIFT keypoints and compute their descriptors.

    Parameters
    ----------
    image : ndarray or path
        H×W grey or H×W×3 RGB (H×W×4 RGBA and H×W×2 grey+alpha lose their alpha); uint8
        (0..255), uint16 (0..65535) or float (0..1). A path is decoded with
        :func:`visiontk.io.read_image`.
    device : "auto", "cpu" or "cuda"
    mask : ndarray, optional
        H×W; keypoints are kept only where it is non-zero.
    max_pixels : int
        Refuse larger images (checked from a file's header before decoding).
    **options
        See :class:`SiftOptions`: ``max_features`` (keep the strongest by response; 0 = all),
        ``n_octave_layers`` (3), ``contrast_threshold`` (0.04), ``edge_threshold`` (10),
        ``sigma`` (1.6), ``upsample`` (True: double the image first, octave −1),
        ``upright`` (True: no orientation, angle 0), ``rootsift`` (True: RootSIFT descriptors).

    Returns
    -------
    Features
        Sorted by response, strongest first (ties broken by position), so ``max_features``
        and slicing keep the strongest.

    Example
    -------
    >>> feats = visiontk.sift("sample_images/astronaut.png", max_features=500)
    >>> feats.descriptors.shape
    (500, 128)
    """
    opts = _options(options)
    max_pixels = _max_pixels(max_pixels)
    resolved = backend.resolve_device(device)
    xp = backend.array_module(resolved)
    t0 = time.perf_counter()
    gray = io.load_gray(image, max_pixels=max_pixels)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape[:2] != gray.shape:
            raise ImageError(f"mask has shape {mask.shape[:2]} but the image is {gray.shape}")
        mask = mask.reshape(gray.shape[0], gray.shape[1], -1).any(axis=2)
    t1 = time.perf_counter()
    features = sift_gray(gray, opts, xp, mask=mask)
    features.timings = {"load": t1 - t0, **features.timings}
    return features


def _max_pixels(value) -> int:
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0):
        raise OptionError(f"max_pixels must be an integer > 0, got {value!r}")
    return int(value)


def _options(options: dict) -> SiftOptions:
    """Validated options; an unknown name is a one-line OptionError, not a TypeError."""
    try:
        return SiftOptions(**options)
    except TypeError as exc:
        raise OptionError(f"sift: {exc}".replace("SiftOptions.__init__()", "sift()")) from None


def sift_gray(gray, opts: SiftOptions, xp, mask=None) -> Features:
    """SIFT on a grey float32 (0..255) host array with validated options, on ``xp``'s device.
    Reports a first call's kernel compilation as ``timings["compile"]``."""
    t0 = time.perf_counter()
    _kernels(xp)
    t1 = time.perf_counter()
    features = extract(xp.asarray(gray), opts, xp, mask=mask)
    if _take_compile_time():
        features.timings["compile"] = t1 - t0
    return features


def sift_batch(images, *, device: str = "auto", max_pixels: int = io.DEFAULT_MAX_PIXELS,
               **options) -> list:
    """:func:`sift` on many images, keeping the device busy (see :func:`iter_sift`).

    Returns one :class:`Features` per image, in order; a bad image raises its
    :class:`~visiontk.errors.ImageError`.

    Example
    -------
    >>> feats = sift_batch(["a.png", "b.png"], device="cuda")
    """
    results = []
    for _, found in iter_sift(images, device=device, max_pixels=max_pixels, **options):
        if isinstance(found, VisiontkError):
            raise found
        results.append(found)
    return results


def iter_sift(images, *, device: str = "auto", max_pixels: int = io.DEFAULT_MAX_PIXELS,
              **options):
    """Yield ``(image, Features)`` for each of ``images`` in order, or ``(image, ImageError)``
    for one that cannot be read, so a bad file does not stop the rest.

    Keeps the device busy: on the CPU, image k+1 is decoded on a host thread while image k is
    processed (the kernels already use every core); on a GPU, two host threads each decode,
    upload (CuPy stages it through pinned memory) and extract on their own CUDA stream, so one
    image's transfers, kernels and host round-trips overlap the other's. Options and device
    are checked at the call.

    Example
    -------
    >>> for path, feats in iter_sift(paths, device="cuda", max_features=4000):
    ...     feats.save(f"{path}.npz")
    """
    # A plain function returning a generator, so bad options or device fail at the call.
    opts = _options(options)
    max_pixels = _max_pixels(max_pixels)
    xp = backend.array_module(backend.resolve_device(device))
    kernels = _kernels(xp)
    if backend.is_numpy(xp):
        return _decoded_ahead(list(images), opts, xp, kernels, max_pixels)
    return _concurrent(list(images), opts, xp, kernels, max_pixels, workers=GPU_WORKERS)


#: Host threads feeding one GPU in :func:`iter_sift` (each with its own CUDA stream).
GPU_WORKERS = 2


def _decoded_ahead(images, opts, xp, kernels, max_pixels):
    from concurrent.futures import ThreadPoolExecutor

    if not images:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        def decode(k):
            return pool.submit(io.load_gray, images[k], max_pixels=max_pixels)

        pending = decode(0)
        for k, image in enumerate(images):
            try:
                gray = pending.result()
            except VisiontkError as exc:
                gray = exc
            if k + 1 < len(images):
                pending = decode(k + 1)
            if isinstance(gray, VisiontkError):
                yield image, gray
            else:
                yield image, extract(xp.asarray(gray), opts, xp, kernels=kernels)


def _concurrent(images, opts, xp, kernels, max_pixels, workers: int):
    """Decode and extract on ``workers`` threads, each on its own stream (CuPy), results in
    order, at most ``workers + 1`` images in memory."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def one(image):
        try:
            gray = io.load_gray(image, max_pixels=max_pixels)
        except VisiontkError as exc:
            return exc
        with _own_stream(xp):
            return extract(xp.asarray(gray), opts, xp, kernels=kernels)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        in_flight = deque()
        for image in images:
            in_flight.append((image, pool.submit(one, image)))
            if len(in_flight) > workers:
                done, future = in_flight.popleft()
                yield done, future.result()
        while in_flight:
            done, future = in_flight.popleft()
            yield done, future.result()


_STREAMS = threading.local()


def _own_stream(xp):
    """This thread's own non-blocking CUDA stream, to use as the current one (CuPy); nothing
    on numpy."""
    if backend.is_numpy(xp):
        return nullcontext()
    stream = getattr(_STREAMS, "stream", None)
    if stream is None:
        stream = _STREAMS.stream = xp.cuda.Stream(non_blocking=True)
    return stream


def extract(gray, opts: SiftOptions, xp, mask=None, kernels=None) -> Features:
    """Run SIFT on a grey float32 (0..255) array already on the device of ``xp``, with the
    loops of ``kernels`` (default: the compiled ones for ``xp``, see :func:`_kernels`)."""
    return extraction.extract(gray, opts, xp, kernels or _kernels(xp), mask=mask)


class XpKernels:
    """The xp definitions of SIFT's three heavy loops (any array module)."""

    find_candidates = staticmethod(find_candidates)
    raw_orientation_histograms = staticmethod(raw_orientation_histograms)
    raw_descriptors = staticmethod(raw_descriptors)


_COMPILED = {}


def cpu_kernels():
    """The compiled CPU kernels (compiled or loaded from cache on first use), or None when
    numba is not installed."""
    if "module" not in _COMPILED:
        t = time.perf_counter()
        try:
            from . import _cpu_kernels
        except ImportError:
            _COMPILED["module"] = None
            return None
        _cpu_kernels.warm_up()
        _COMPILED["module"] = _cpu_kernels
        _COMPILED["pending_seconds"] = time.perf_counter() - t
    return _COMPILED["module"]


def _take_compile_time() -> float:
    """Seconds spent compiling kernels since the last call (reported once, in timings)."""
    return _COMPILED.pop("pending_seconds", 0.0)


def gpu_kernels():
    """The CUDA kernels for CuPy's current device (needs CuPy), or None."""
    try:
        from . import _gpu_kernels

        return _gpu_kernels.for_current_device()
    except ImportError:
        return None


def _kernels(xp):
    """Compiled loops for ``xp`` (numba on the CPU, CUDA on the GPU) when available, otherwise
    the xp definitions. VISIONTK_KERNELS=xp forces the definitions (for comparisons)."""
    if os.environ.get("VISIONTK_KERNELS", "compiled") == "xp":
        return XpKernels
    compiled = cpu_kernels() if backend.is_numpy(xp) else gpu_kernels()
    return XpKernels if compiled is None else compiled
