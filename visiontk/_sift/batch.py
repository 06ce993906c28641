"""SIFT on many images, keeping the device busy: the scheduler behind
:func:`visiontk.iter_sift` and :func:`visiontk.sift_batch`."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

from .. import devices, io
from ..errors import ImageError, OptionError, VisiontkError, out_of_memory
from ..features import Features
from ..io import ImageSource
from .backends import SiftBackend, for_device
from .extraction import extract
from .options import SiftOptions, checked_max_pixels

#: Host threads feeding one GPU in :func:`iter_sift` (each with its own CUDA stream).
GPU_WORKERS = 2

#: An image given to :func:`iter_sift`, yielded back beside its result.
ImageT = TypeVar("ImageT", bound=ImageSource)


def sift_batch(
    images: Iterable[ImageSource],
    *,
    device: str | SiftBackend = "auto",
    max_pixels: int = io.DEFAULT_MAX_PIXELS,
    **options: Any,
) -> list[Features]:
    """:func:`visiontk.sift` on many images, keeping the device busy (see :func:`iter_sift`).

    Returns one :class:`~visiontk.Features` per image, in order; a bad image raises its
    :class:`~visiontk.errors.ImageError`.

    Example
    -------
    >>> feats = sift_batch(["sample_images/coffee.png", "sample_images/astronaut.png"])
    >>> [len(f) > 0 for f in feats]
    [True, True]
    """
    results: list[Features] = []
    for _, found in iter_sift(images, device=device, max_pixels=max_pixels, **options):
        if isinstance(found, VisiontkError):
            raise found
        results.append(found)
    return results


def iter_sift(
    images: Iterable[ImageT],
    *,
    device: str | SiftBackend = "auto",
    max_pixels: int = io.DEFAULT_MAX_PIXELS,
    **options: Any,
) -> Iterator[tuple[ImageT, Features | VisiontkError]]:
    """Yield ``(image, Features)`` for each of ``images`` in order, or ``(image, ImageError)``
    for one that cannot be read, so a bad file does not stop the rest.

    Keeps the device busy: on the CPU, image k+1 is decoded on a host thread while image k is
    processed (the kernels already use every core); on a GPU, two host threads each decode,
    upload (CuPy stages it through pinned memory) and extract on their own CUDA stream, so one
    image's transfers, kernels and host round-trips overlap the other's. Options and device
    are checked at the call.

    Example
    -------
    >>> for path, feats in iter_sift(["sample_images/coffee.png"], max_features=100,
    ...                              keep="strongest"):
    ...     print(path, len(feats))
    sample_images/coffee.png 100
    """
    # A plain function returning a generator, so bad options or device fail at the call.
    if isinstance(images, (str, bytes, os.PathLike, np.ndarray)):
        # a string would be iterated character by character, an array row by row
        what = "an array" if isinstance(images, np.ndarray) else f"the path {str(images)!r}"
        raise OptionError(
            f"iter_sift takes a list of images, got {what}; give [it], or "
            "for a folder sorted(Path(folder).glob('*.jpg'))"
        )
    opts = SiftOptions.from_keywords(options)
    max_pixels = checked_max_pixels(max_pixels)
    sift_backend = for_device(device)
    if devices.is_numpy(sift_backend.xp):
        return _decoded_ahead(list(images), opts, sift_backend, max_pixels)
    return _concurrent(list(images), opts, sift_backend, max_pixels, workers=GPU_WORKERS)


def _decoded_ahead(
    images: list[ImageT], opts: SiftOptions, sift_backend: SiftBackend, max_pixels: int
) -> Iterator[tuple[ImageT, Features | VisiontkError]]:
    from concurrent.futures import ThreadPoolExecutor

    if not images:
        return
    xp = sift_backend.xp
    with ThreadPoolExecutor(max_workers=1) as pool:

        def decode(k: int) -> Future[np.ndarray]:
            return pool.submit(io.load_gray, images[k], max_pixels=max_pixels)

        pending = decode(0)
        for k, image in enumerate(images):
            gray: np.ndarray | VisiontkError
            found: Features | VisiontkError
            try:
                gray = pending.result()
            except Exception as exc:
                gray = _as_error(image, exc, "decode")
            if k + 1 < len(images):
                pending = decode(k + 1)
            if isinstance(gray, VisiontkError):
                yield image, gray
                continue
            try:
                found = extract(xp.asarray(gray), opts, sift_backend)
            except Exception as exc:
                found = _as_error(image, exc, "extract features of")
            del gray  # an image too large for memory must not hold the next one's
            yield image, found


def _as_error(image: ImageSource, exc: Exception, doing: str) -> VisiontkError:
    """An image that could not be read, or that took more memory than there is, as the
    ImageError of that image alone: the batch goes on with the next. Anything else is
    raised: an internal error is not the image's."""
    if isinstance(exc, VisiontkError):
        return exc
    if not out_of_memory(exc):
        raise exc
    return ImageError(
        f"{image}: out of memory to {doing} this image (try a smaller "
        "--max-pixels, or --max-features)"
    )


def _concurrent(
    images: list[ImageT],
    opts: SiftOptions,
    sift_backend: SiftBackend,
    max_pixels: int,
    workers: int,
) -> Iterator[tuple[ImageT, Features | VisiontkError]]:
    """Decode and extract on ``workers`` threads, each on its own stream (CuPy), results in
    order, at most ``workers + 1`` images in memory."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    xp = sift_backend.xp

    def one(image: ImageT) -> Features | VisiontkError:
        try:
            gray = io.load_gray(image, max_pixels=max_pixels)
        except Exception as exc:
            return _as_error(image, exc, "decode")
        try:
            with _own_stream(xp):
                return extract(xp.asarray(gray), opts, sift_backend)
        except Exception as exc:  # CuPy's OutOfMemoryError is a MemoryError too
            return _as_error(image, exc, "extract features of")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        in_flight: deque[tuple[ImageT, Future[Features | VisiontkError]]] = deque()
        for image in images:
            in_flight.append((image, pool.submit(one, image)))
            if len(in_flight) > workers:
                done, future = in_flight.popleft()
                yield done, future.result()
        while in_flight:
            done, future = in_flight.popleft()
            yield done, future.result()


_STREAMS = threading.local()


def _own_stream(xp: ModuleType) -> AbstractContextManager[Any]:
    """This thread's own non-blocking CUDA stream, to use as the current one (CuPy); nothing
    on numpy (and on the CPU emulation of the CUDA kernels)."""
    cuda = getattr(xp, "cuda", None)
    if cuda is None or not hasattr(cuda, "Stream"):
        return nullcontext()
    stream = getattr(_STREAMS, "stream", None)
    if stream is None:
        stream = _STREAMS.stream = cuda.Stream(non_blocking=True)
    return stream
