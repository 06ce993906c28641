"""``visiontk.sift``: SIFT on one image, the call users make."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import io
from ..errors import ImageError
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
    keep: np.ndarray | None = None  # the mask, H×W bool
    if mask is not None:
        given = np.asarray(mask)
        if given.shape[:2] != gray.shape:
            raise ImageError(f"mask has shape {given.shape[:2]} but the image is {gray.shape}")
        keep = np.any(given.reshape(gray.shape[0], gray.shape[1], -1), axis=2)
    t1 = time.perf_counter()
    features = sift_gray(gray, opts, sift_backend, mask=keep)
    features.timings = {"load": t1 - t0, **features.timings}
    return features


def sift_gray(
    gray: np.ndarray, opts: SiftOptions, sift_backend: SiftBackend, mask: np.ndarray | None = None
) -> Features:
    """SIFT on a grey float32 (0..255) host array with validated options, on the backend's
    device. Reports the kernels' first compilation as ``timings["compile"]``.

    Example
    -------
    >>> from visiontk.extract import sift_backend
    >>> sift_gray(np.zeros((64, 64), np.float32), SiftOptions(), sift_backend("cpu")).xy.shape
    (0, 2)
    """
    features = extract(sift_backend.xp.asarray(gray), opts, sift_backend, mask=mask)
    compiled = take_compile_time()
    if compiled:
        features.timings["compile"] = compiled
    return features
