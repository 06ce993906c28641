"""Turning image files and arrays into the grey float32 images SIFT works on.

This is the one place where files become arrays, so every problem with an input (missing,
not an image, truncated, empty, too large, wrong shape or range) is turned here into an
:class:`~visiontk.errors.ImageError` whose message names the input and the problem in one line.

Value ranges accepted:

* ``uint8``: 0..255 (used as is);
* ``uint16``: 0..65535 (scaled by 255/65535, so 16-bit PNG/TIFF match their 8-bit versions);
* ``float32``/``float64``: 0..1 (scikit-image's convention, scaled by 255); a float image with
  values outside [0, 1] is refused rather than guessed at;
* ``bool``: False/True as 0/255.

Arrays of shape H×W×3 are RGB, H×W×4 RGBA (alpha dropped), H×W×2 grey+alpha (alpha dropped).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import TypeAlias

import cv2
import numpy as np

from ..errors import ImageError

#: Largest image accepted by default (pixels). SIFT doubles the image first, so a 40 MP photo
#: needs about 7 GB for its scale space; pass ``max_pixels`` to go beyond.
DEFAULT_MAX_PIXELS = 40_000_000

#: Smallest side accepted: below this no keypoint survives SIFT's 5-pixel border.
MIN_SIDE = 16
_EXIF_ORIENTATION = 0x0112
#: An image as visiontk's functions take it: a file's path, or an array (the ranges above).
ImageSource: TypeAlias = str | os.PathLike[str] | np.ndarray
#: What a folder of images yields (:func:`.inputs.resolve_images`): image files.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".pgm", ".ppm"}
)


def read_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    exif_transpose: bool = True,
    min_side: int = MIN_SIDE,
) -> np.ndarray:
    """Decode an image file into an array, refusing anything that is not a whole, sane image.

    Parameters
    ----------
    path : str or os.PathLike
        Any format Pillow reads (PNG, JPEG, TIFF, BMP, WebP, ...), 8 or 16 bits.
    max_pixels : int
        Refuse images with more pixels than this, checked from the header before decoding.
        This is the only size limit: Pillow's own decompression-bomb limit is not applied.
    min_side : int
        Refuse images whose shorter side is below this (default: what SIFT needs, and what
        every command takes).
    exif_transpose : bool
        Turn the pixels as the file's EXIF orientation tag says (default: as photo viewers
        show it; every entry point of visiontk uses this default).

    Returns
    -------
    ndarray
        H×W (grey) or H×W×3 (RGB), dtype uint8, uint16 or float32.

    Example
    -------
    >>> rgb = read_image("sample_images/astronaut.png")
    >>> rgb.shape
    (512, 512, 3)
    """
    from PIL import Image, UnidentifiedImageError

    name = str(path)
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{name}: no such file")
    if p.is_dir():
        raise ImageError(f"{name}: is a directory, not an image")
    if not p.is_file():
        raise ImageError(f"{name}: not a regular file (a pipe or a device?), so not an image")
    if not os.access(p, os.R_OK):
        raise ImageError(f"{name}: permission denied")
    try:
        with _own_size_limit():  # the header only: decoding below runs unlocked
            opened = Image.open(p)
        with opened as im:
            width, height = im.size
            _check_size(name, height, width, max_pixels, min_side)
            im.load()
            # exif_transpose copies the image even when there is nothing to turn: ask first
            if exif_transpose and im.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                from PIL import ImageOps

                array = _pil_to_array(ImageOps.exif_transpose(im))
            else:
                array = _pil_to_array(im)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (unknown or unsupported format)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image is too large to decode safely") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{name}: corrupt or truncated image ({reason})") from None
    return array


def _pil_to_array(im) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im.convert("I;16"), dtype=np.uint16)
    if mode == "I":
        data = np.asarray(im, dtype=np.int64)
        return np.clip(data, 0, 65535).astype(np.uint16)
    if mode == "F":
        return np.asarray(im, dtype=np.float32)
    if mode in ("L", "LA", "1"):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if mode == "P":
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


_PILLOW_LIMIT = threading.Lock()


@contextlib.contextmanager
def _own_size_limit():
    """Pillow refuses images over its own MAX_IMAGE_PIXELS (about 179 MP) with a message that
    gives no size; visiontk applies ``max_pixels`` from the header instead, so Pillow's check
    (made in ``Image.open``) is off while visiontk opens a file, under a lock since the setting
    is Pillow's global; hold it for ``Image.open`` only, not while decoding."""
    from PIL import Image

    with _PILLOW_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_size(
    name: str, height: int, width: int, max_pixels: int, min_side: int = MIN_SIDE
) -> None:
    if height == 0 or width == 0:
        raise ImageError(f"{name}: image is empty ({width}×{height} pixels)")
    if min(height, width) < min_side:
        raise ImageError(
            f"{name}: image is {width}×{height} pixels; visiontk needs at least "
            f"{min_side}×{min_side}"
        )
    if height * width > max_pixels:
        raise ImageError(
            f"{name}: image is {width}×{height} = {height * width:,} pixels, over the limit of "
            f"{max_pixels:,} (raise it with max_pixels / --max-pixels)"
        )


def to_gray(
    image: np.ndarray, *, name: str = "<array>", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Convert an image array to grey float32 on the 0..255 scale that SIFT's thresholds assume.

    Parameters
    ----------
    image : ndarray
        H×W, H×W×1, H×W×2 (grey+alpha), H×W×3 (RGB) or H×W×4 (RGBA); uint8, uint16, bool or
        float in [0, 1].
    name : str
        What to call the input in error messages.

    Returns
    -------
    ndarray
        H×W float32, 0..255.

    Example
    -------
    >>> to_gray(np.zeros((32, 48, 3), np.uint8)).shape
    (32, 48)
    """
    pixels = _to_255(image, name, max_pixels)
    if pixels.ndim == 3:
        # ITU-R BT.601 weights, as cv2.cvtColor uses: keypoints agree with cv2.SIFT on colour.
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _to_255(image: object, name: str, max_pixels: int, min_side: int = MIN_SIDE) -> np.ndarray:
    """Check an image array (type, shape, size, range), drop alpha, scale to 0..255 float32:
    H×W or H×W×3."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array or a path, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ImageError(
            f"{name}: expected an H×W or H×W×3 image, got an array of shape {image.shape}"
        )
    _check_size(name, image.shape[0], image.shape[1], max_pixels, min_side)
    return _scale_to_255(image, name)


def _scale_to_255(image: np.ndarray, name: str) -> np.ndarray:
    dtype = image.dtype
    if dtype == np.uint8:
        return image.astype(np.float32)
    if dtype == np.uint16:
        return image.astype(np.float32) * np.float32(255.0 / 65535.0)
    if dtype == np.bool_:
        return image.astype(np.float32) * np.float32(255.0)
    if np.issubdtype(dtype, np.floating):
        data = image.astype(np.float32)
        if not np.isfinite(data).all():
            raise ImageError(f"{name}: image contains NaN or infinite values")
        low, high = float(data.min()), float(data.max())
        if low < -1e-6 or high > 1.0 + 1e-6:
            raise ImageError(
                f"{name}: float image has values in [{low:.4g}, {high:.4g}]; visiontk expects "
                "floats in [0, 1] (divide 0..255 data by 255)"
            )
        return data * np.float32(255.0)
    raise ImageError(
        f"{name}: unsupported pixel type {dtype} (use uint8, uint16 or float in [0, 1])"
    )


def load_gray(
    source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, exif_transpose: bool = True
) -> np.ndarray:
    """Read a path or take an array, and return grey float32 on the 0..255 scale.

    Example
    -------
    >>> load_gray("sample_images/astronaut.png").dtype
    dtype('float32')
    """
    if isinstance(source, (str, os.PathLike)):
        return to_gray(
            read_image(source, max_pixels=max_pixels, exif_transpose=exif_transpose),
            name=str(source),
            max_pixels=max_pixels,
        )
    return to_gray(source, max_pixels=max_pixels)


def load_rgb(
    source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE
) -> np.ndarray:
    """Read a path or take an array and return uint8 RGB H×W×3, for drawing pictures.

    Example
    -------
    >>> load_rgb("sample_images/coffee.png").shape
    (400, 600, 3)
    """
    if isinstance(source, (str, os.PathLike)):
        name, image = str(source), read_image(source, max_pixels=max_pixels, min_side=min_side)
    else:
        name, image = "<array>", source
    pixels = _to_255(image, name, max_pixels, min_side)  # the same checks as for SIFT
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
