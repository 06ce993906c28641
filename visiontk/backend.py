"""Array-module selection and the few image operations whose fast form differs per backend.

The SIFT code is written once against an array module ``xp`` (numpy on the CPU; CuPy on NVIDIA
GPUs in a later release). Operations that a well-kept library already does fast on a given
backend (Gaussian blur, 3x3 min/max filters) are routed here so the algorithm code stays
backend-neutral.
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import DeviceError, OptionError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> str:
    """Turn a user's device request into ``"cpu"`` or ``"cuda"``.

    ``auto`` picks the CPU in this release: the CuPy backend is not shipped yet, so asking
    for ``cuda`` explicitly raises :class:`DeviceError` with a one-line explanation.
    """
    if device not in DEVICES:
        raise OptionError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda":
        raise DeviceError(
            "device 'cuda': the GPU backend is not available in this release of visiontk yet; "
            "use --device cpu (or auto)"
        )
    return "cpu"


def array_module(device: str = "cpu"):
    """Return the array module (``numpy``) for a resolved device."""
    if device != "cpu":
        raise DeviceError(f"no array module for device {device!r}")
    return np


def to_host(array) -> np.ndarray:
    """Return ``array`` as a numpy array (a no-op for numpy input)."""
    get = getattr(array, "get", None)
    return get() if callable(get) else np.asarray(array)


def gaussian_blur(image, sigma: float, out=None):
    """Blur a 2-D float32 image with a Gaussian of ``sigma`` pixels.

    Borders reflect without repeating the edge pixel (OpenCV's BORDER_REFLECT_101), and the
    kernel reaches 4 sigma, as cv2.GaussianBlur chooses for float images. ``out``, if given,
    is a contiguous float32 array of the same shape that receives the result.
    """
    return cv2.GaussianBlur(image, (0, 0), dst=out, sigmaX=float(sigma), sigmaY=float(sigma),
                            borderType=cv2.BORDER_REFLECT_101)


def upsample_2x(image):
    """Double a 2-D float32 image by linear interpolation between pixel centres.

    The numpy form of :func:`visiontk.sift.scale_space.upsample_2x` (cv2.resize, several times
    faster than strided numpy writes); both agree to float rounding.
    """
    h, w = image.shape
    return cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)


def max_filter_3x3(image):
    """3x3 grey dilation (maximum of each pixel's 8-neighbourhood and itself)."""
    return cv2.dilate(image, _KERNEL_3X3, borderType=cv2.BORDER_REPLICATE)


def min_filter_3x3(image):
    """3x3 grey erosion (minimum of each pixel's 8-neighbourhood and itself)."""
    return cv2.erode(image, _KERNEL_3X3, borderType=cv2.BORDER_REPLICATE)


_KERNEL_3X3 = np.ones((3, 3), np.uint8)
