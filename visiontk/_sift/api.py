"""``visiontk.sift``: SIFT on one image, the call users make."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import io
from ..devices import XpArray
from ..errors import ImageError, OptionError, shown
from ..features import Features
from ..io import ImageSource
from .backends import SiftBackend, for_device, take_compile_time
from .extraction import extract
from .options import SiftOptions, checked_max_pixels


def sift(
    image: ImageSource,
    *,
    device: str | SiftBackend = "auto",
    mask: ArrayLike | None = None,
    max_pixels: int = io.DEFAULT_MAX_PIXELS,
    **options: Any,
) -> Features:
    """Detect SIFT keypoints and compute their descriptors.

    Parameters
    ----------
    image : ndarray or path
        H×W grey or H×W×3 RGB (H×W×4 RGBA and H×W×2 grey+alpha lose their alpha); uint8
        (0..255), uint16 (0..65535) or float (0..1). A path is decoded with
        :func:`visiontk.io.read_image` (turned as its EXIF orientation tag says).
    device : "auto", "cpu" or "cuda", or a backend already resolved
        (:func:`visiontk.extract.sift_backend`: several calls then resolve it once)
    mask : ndarray, optional
        H×W; keypoints are kept only where it is non-zero.
    max_pixels : int
        Refuse larger images (checked from a file's header before decoding).
    **options
        ``preset``: ``"accurate"`` (the default: more correct matches than COLMAP's SIFT,
        COLMAP's cap of 8192 detections, RootSIFT descriptors) or ``"opencv"`` (cv2.SIFT's
        keypoints and descriptors); any option given overrides the preset's value. See
        :class:`~visiontk.SiftOptions`: ``max_features`` (the cap; 0 = all) and ``keep``
        (``"strongest"``: exactly that many keypoints, the strongest; ``"largest"``, the
        accurate preset's: COLMAP's whole detection levels from the coarsest, a few more),
        ``n_octave_layers``, ``contrast_threshold``, ``edge_threshold``, ``sigma``,
        ``upsample`` (double the image first, octave −1), ``upright`` (no orientation,
        angle 0), ``rootsift``, ``refinement`` ("opencv", or "tolerant": VLFeat's),
        ``subpixel_window`` (windows centred on the sub-pixel keypoint),
        ``orientation_smoothing`` ("opencv" or "vlfeat"), ``max_orientations`` (0 = every
        peak within 80% of the highest), ``n_octaves`` (0 = every octave the image allows).

    Returns
    -------
    Features
        Sorted by response, strongest first (ties broken by position), so ``max_features``
        and slicing keep the strongest.

    Example
    -------
    >>> import visiontk
    >>> feats = visiontk.sift("sample_images/astronaut.png", max_features=500, keep="strongest")
    >>> feats.descriptors.shape
    (500, 128)
    """
    opts = SiftOptions.from_keywords(options)
    max_pixels = checked_max_pixels(max_pixels)
    sift_backend = for_device(device)
    t0 = time.perf_counter()
    gray = io.load_gray(image, max_pixels=max_pixels)
    t1 = time.perf_counter()
    # load_gray's image is already a checked, finite 0..255 H×W: no second scan of it
    features = _sift_checked(gray, opts, sift_backend, mask)
    features.timings = {"load": t1 - t0, **features.timings}
    return features


def sift_gray(
    gray: ArrayLike,
    opts: SiftOptions,
    backend: str | SiftBackend = "auto",
    mask: ArrayLike | None = None,
) -> Features:
    """SIFT on a grey H×W image of values 0..255 (any real dtype; :func:`sift` reads files and
    scales other ranges), with options already made, on a backend resolved once
    (:func:`visiontk.extract.sift_backend`) or a device name. ``mask``: H×W (or H×W×C),
    keypoints are kept where it is non-zero. Reports the kernels' first compilation as
    ``timings["compile"]``.

    Example
    -------
    >>> from visiontk.extract import sift_backend
    >>> sift_gray(np.zeros((64, 64), np.float32), SiftOptions(), sift_backend("cpu")).xy.shape
    (0, 2)
    """
    if not isinstance(opts, SiftOptions):
        raise OptionError(f"options must be a visiontk SiftOptions, got {shown(opts)}")
    return _sift_checked(_checked_gray(gray), opts, for_device(backend), mask)


def _checked_gray(gray: ArrayLike) -> XpArray:
    """``gray`` as an array after the checks of :func:`sift_gray`: H×W, at least MIN_SIDE,
    real and finite values, 0..255 rather than 0..1."""
    on_device = hasattr(gray, "__cuda_array_interface__")  # a CuPy array stays where it is
    image: XpArray = gray if on_device else np.asarray(gray)
    shape = tuple(image.shape)
    if len(shape) != 2:
        raise ImageError(f"gray image must be H×W (one channel), got shape {shape}")
    if min(shape) < io.MIN_SIDE:
        raise ImageError(
            f"image is {shape[0]}×{shape[1]} pixels; visiontk needs at least "
            f"{io.MIN_SIDE}×{io.MIN_SIDE}"
        )
    if image.dtype.kind not in "uif":
        raise ImageError(f"gray image must hold real numbers, got dtype {image.dtype}")
    if not on_device:
        peak = float(image.max())
        if not np.isfinite(peak) or not np.isfinite(float(image.min())):
            raise ImageError("gray image holds NaN or infinite values")
        # a 0..1 float image finds no keypoints at all (a dark 0..255 one has whole values)
        if image.dtype.kind == "f" and 0 < peak <= 1 and bool(np.any(image != np.round(image))):
            raise ImageError(
                "gray image values are within 0..1; sift_gray takes 0..255 "
                "(visiontk.sift scales any image)"
            )
    return image


def _sift_checked(
    image: XpArray, opts: SiftOptions, backend: SiftBackend, mask: ArrayLike | None
) -> Features:
    """SIFT on a checked image; ``mask`` H×W (×C) is checked against it."""
    shape = tuple(image.shape)
    keep = None
    if mask is not None:
        given = np.asarray(mask)
        if given.shape[:2] != shape:
            raise ImageError(f"mask has shape {given.shape[:2]} but the image is {shape}")
        keep = np.any(given.reshape(shape[0], shape[1], -1), axis=2)
    xp = backend.xp
    features = extract(
        xp.ascontiguousarray(xp.asarray(image), dtype=xp.float32), opts, backend, mask=keep
    )
    compiled = take_compile_time()
    if compiled:
        features.timings["compile"] = compiled
    return features
