"""Array-module selection and the few image operations whose fast form differs per backend.

The SIFT code is written once against an array module ``xp`` (numpy on the CPU, CuPy on NVIDIA
GPUs). Operations that a well-kept library already does fast on a given
backend (Gaussian blur, 3x3 min/max filters) are routed here so the algorithm code stays
backend-neutral.
"""

from __future__ import annotations

import functools
import os
import sys
from types import ModuleType
from typing import Any, Literal, TypeAlias, get_args

import cv2
import numpy as np

from .errors import DeviceError, OptionError, shown

#: Where to compute, as every option and flag spells it: the one definition of the choices.
Device = Literal["auto", "cpu", "cuda"]
DEVICES = get_args(Device)

#: An array of an array module ``xp``: numpy.ndarray, or cupy.ndarray on a GPU (the two share
#: no base class, and CuPy has no type stubs: to a type checker it is any object).
XpArray: TypeAlias = Any

#: What to tell a user who asks for the GPU without CuPy.
CUPY_HINT = (
    "install CuPy for your CUDA version: pip install 'visiontk[cuda12]' (CUDA 12) or "
    "'visiontk[cuda13]' (CUDA 13)"
)


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, str]:
    """(usable, reason): whether CuPy imports and sees an NVIDIA GPU, and why not if it doesn't."""
    try:
        import cupy
    except ImportError:
        return False, f"CuPy is not installed; {CUPY_HINT}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver or runtime missing: CuPy raises its own types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return False, f"no usable NVIDIA GPU ({first})"
    if count == 0:
        return False, "no NVIDIA GPU found"
    return True, ""


#: What an NVIDIA driver leaves on Linux: the kernel module's /proc entry and control device
#: (also mounted into GPU containers), and WSL 2's GPU device.
NVIDIA_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg")


@functools.lru_cache(maxsize=1)
def nvidia_driver_present() -> bool:
    """False only on Linux without any of :data:`NVIDIA_DRIVER_PATHS`: no GPU can be used, so
    ``auto`` need not import CuPy and ask CUDA (a cost every pipeline worker would pay at
    start); True elsewhere (then CuPy is asked)."""
    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(p) for p in NVIDIA_DRIVER_PATHS)


def resolve_device(device: str = "auto") -> str:
    """Turn a user's device request into ``"cpu"`` or ``"cuda"``.

    ``auto`` picks the GPU when CuPy sees one and the CPU otherwise, quietly; ``cuda`` without
    a usable GPU raises :class:`DeviceError` saying what is missing.
    """
    if device not in DEVICES:
        raise OptionError(f"device must be one of {', '.join(DEVICES)}, got {shown(device)}")
    if device == "cpu" or (device == "auto" and not nvidia_driver_present()):
        return "cpu"
    usable, reason = cuda_status()
    if device == "cuda" and not usable:
        raise DeviceError(f"device 'cuda': {reason}")
    return "cuda" if usable else "cpu"


def array_module(device: str = "cpu") -> ModuleType:
    """The array module for a resolved device: numpy for ``cpu``, cupy for ``cuda``."""
    if device == "cpu":
        return np
    if device == "cuda":
        import cupy

        return cupy
    raise DeviceError(f"no array module for device {shown(device)}")


def is_numpy(xp: ModuleType) -> bool:
    return xp is np


def to_host(array: XpArray) -> np.ndarray:
    """Return ``array`` as a numpy array (a no-op for numpy input)."""
    get = getattr(array, "get", None)
    return get() if callable(get) else np.asarray(array)


def _on_gpu(array: XpArray) -> bool:
    return type(array).__module__.startswith("cupy")


def gaussian_blur(image: XpArray, sigma: float, out: XpArray | None = None) -> XpArray:
    """Blur a 2-D float32 image with a Gaussian of ``sigma`` pixels.

    Borders reflect without repeating the edge pixel (OpenCV's BORDER_REFLECT_101), and the
    kernel reaches 4 sigma, as cv2.GaussianBlur chooses for float images. ``out``, if given,
    is a contiguous float32 array of the same shape that receives the result. CuPy arrays go
    through cupyx.scipy.ndimage with the same border and reach.
    """
    if _on_gpu(image):
        from cupyx.scipy import ndimage

        return ndimage.gaussian_filter(image, float(sigma), mode="mirror", truncate=4.0, output=out)
    return cv2.GaussianBlur(
        image,
        (0, 0),
        dst=out,
        sigmaX=float(sigma),
        sigmaY=float(sigma),
        borderType=cv2.BORDER_REFLECT_101,
    )


def upsample_2x(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Double a 2-D float32 image by linear interpolation between pixel centres (into ``out``,
    a contiguous float32 array of twice the size, if given).

    The numpy form of :func:`visiontk._sift.scale_space.upsample_2x` (cv2.resize, several times
    faster than strided numpy writes); both agree to float rounding.
    """
    h, w = image.shape
    return cv2.resize(image, (2 * w, 2 * h), dst=out, interpolation=cv2.INTER_LINEAR)


def max_filter_3x3(image: XpArray) -> XpArray:
    """3x3 grey dilation (maximum of each pixel's 8-neighbourhood and itself)."""
    if _on_gpu(image):
        from cupyx.scipy import ndimage

        return ndimage.maximum_filter(image, size=3, mode="nearest")
    return cv2.dilate(image, _KERNEL_3X3, borderType=cv2.BORDER_REPLICATE)


def min_filter_3x3(image: XpArray) -> XpArray:
    """3x3 grey erosion (minimum of each pixel's 8-neighbourhood and itself)."""
    if _on_gpu(image):
        from cupyx.scipy import ndimage

        return ndimage.minimum_filter(image, size=3, mode="nearest")
    return cv2.erode(image, _KERNEL_3X3, borderType=cv2.BORDER_REPLICATE)


_KERNEL_3X3 = np.ones((3, 3), np.uint8)
