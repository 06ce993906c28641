"""Pictures of matches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import ArrayLike

from ._files import atomic_write
from .errors import OptionError, one_line

if TYPE_CHECKING:
    from PIL.ImageFont import FreeTypeFont

#: Lines drawn at most, so a picture of 20k matches stays readable (a random, seeded subset).
MAX_LINES = 200
#: Opacity of the lines: the images must stay visible under them.
LINE_ALPHA = 0.7
_OUTLIER = (230, 50, 40)


def draw_matches(
    image_a: np.ndarray,
    image_b: np.ndarray,
    xy_a: ArrayLike,
    xy_b: ArrayLike,
    inliers: ArrayLike | None = None,
    *,
    max_lines: int = MAX_LINES,
    title: str | None = None,
    max_side: int = 1600,
) -> np.ndarray:
    """Side-by-side RGB picture of two images with a line per correspondence.

    Parameters
    ----------
    image_a, image_b : H×W×3 uint8 RGB
    xy_a, xy_b : (M, 2) matched positions (OpenCV convention)
    inliers : (M,) bool, optional. Inliers are green; outliers, if any are given, thin red.
    max_side : the wider side of the output is scaled down to this many pixels.

    Returns
    -------
    H×W×3 uint8 RGB

    Example
    -------
    >>> rgb_a, rgb_b = np.zeros((40, 60, 3), np.uint8), np.zeros((50, 30, 3), np.uint8)
    >>> xy = np.array([[10.0, 12.0], [20.0, 30.0]])
    >>> pic = draw_matches(rgb_a, rgb_b, xy, xy)
    >>> pic.shape[0] >= max(rgb_a.shape[0], rgb_b.shape[0]), pic.dtype
    (True, dtype('uint8'))
    """
    ha, wa = image_a.shape[:2]
    hb, wb = image_b.shape[:2]
    canvas = np.full((max(ha, hb), wa + wb, 3), 255, np.uint8)
    canvas[:ha, :wa] = image_a
    canvas[:hb, wa:] = image_b
    scale = min(1.0, max_side / canvas.shape[1])
    if scale < 1.0:
        canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    xy_a = np.asarray(xy_a, np.float64).reshape(-1, 2)
    xy_b = np.asarray(xy_b, np.float64).reshape(-1, 2)
    inl = np.ones(len(xy_a), bool) if inliers is None else np.asarray(inliers, bool)
    rng = np.random.default_rng(0)
    thick = max(1, int(round(canvas.shape[1] / 1200)))
    overlay = canvas.copy()
    for is_inlier in (False, True):
        idx = np.nonzero(inl == is_inlier)[0]
        if len(idx) > max_lines:
            idx = np.sort(rng.choice(idx, max_lines, replace=False))
        for i in idx:
            # Inliers get a hue each, so crossing lines can be told apart; outliers are red.
            colour = _hue(rng.random()) if is_inlier else _OUTLIER
            p = _pt(xy_a[i], 0, scale)
            q = _pt(xy_b[i], wa, scale)
            cv2.line(overlay, p, q, colour, thick if is_inlier else 1, cv2.LINE_AA)
            cv2.circle(overlay, p, 2 * thick + 1, colour, thick, cv2.LINE_AA)
            cv2.circle(overlay, q, 2 * thick + 1, colour, thick, cv2.LINE_AA)
    canvas = cv2.addWeighted(overlay, LINE_ALPHA, canvas, 1 - LINE_ALPHA, 0)
    if title:
        _banner(canvas, title)
    return canvas


def _hue(h: float) -> tuple[int, ...]:
    hsv = np.array([[[int(h * 179), 220, 255]]], np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _pt(xy: np.ndarray, offset: float, scale: float) -> tuple[int, int]:
    return (int(round((xy[0] + offset) * scale)), int(round(xy[1] * scale)))


def _banner(canvas: np.ndarray, text: str) -> None:
    """``text`` in white on black at the top left. OpenCV's Hershey fonts draw only ASCII (a
    file named "café.png" came out "caf??.png"), so the text is drawn by Pillow with the
    DejaVu Sans that matplotlib ships, which covers Latin, Greek, Cyrillic and more."""
    from PIL import Image, ImageDraw

    text = one_line(text)  # a control character is shown escaped, never laid out (raqm fails)
    font = _banner_font(max(12, round(canvas.shape[1] / 90)))
    if font is None:  # no TrueType font found: OpenCV's, with what it cannot draw as "?"
        size = max(0.5, canvas.shape[1] / 2000)
        ascii_text = text.encode("ascii", "replace").decode()
        (tw, th), base = cv2.getTextSize(ascii_text, cv2.FONT_HERSHEY_SIMPLEX, size, 1)
        cv2.rectangle(canvas, (0, 0), (tw + 16, th + base + 12), (0, 0, 0), -1)
        cv2.putText(
            canvas,
            ascii_text,
            (8, th + 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            size,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
        return
    _, _, right, bottom = font.getbbox(text)
    height = min(canvas.shape[0], bottom + 12)
    width = min(canvas.shape[1], right + 16)
    strip = Image.new("RGB", (width, height), (0, 0, 0))
    ImageDraw.Draw(strip).text((8, 6), text, font=font, fill=(255, 255, 255))
    canvas[:height, :width] = np.asarray(strip)


def _banner_font(size: int) -> FreeTypeFont | None:
    """DejaVu Sans at ``size`` pixels from matplotlib's data folder (found without importing
    matplotlib), or None."""
    import importlib.util

    from PIL import ImageFont

    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            try:
                # the basic layout: the same pixels whether Pillow has libraqm or not
                return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)
            except OSError:
                return None
    return None


def save_image(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image (format from the suffix: .png, .jpg, ...) atomically."""
    path = Path(path)
    data = encode_image(rgb, path)
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return path


def encode_image(rgb: np.ndarray, path: str | os.PathLike[str]) -> bytes:
    """The bytes of an RGB uint8 image in the format of ``path``'s suffix (default PNG)."""
    path = Path(path)
    try:
        ok, data = cv2.imencode(path.suffix or ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    except cv2.error:
        ok = False
    if not ok:
        raise OptionError(f"{path}: cannot write this image format (use .png or .jpg)")
    return data.tobytes()


def thumbnail(path: str | os.PathLike[str], width: int = 240) -> np.ndarray | None:
    """A small RGB copy of an image file (EXIF-turned, as the features saw it), ``width``
    pixels wide at most; None when the file cannot be read."""
    from .io import load_rgb

    try:
        rgb = load_rgb(path)
    except Exception:  # a picture of the run must not fail the run
        return None
    return shrink(rgb, width)


def shrink(rgb: np.ndarray, width: int) -> np.ndarray:
    """``rgb`` scaled down to ``width`` pixels wide (area averaging), or itself if narrower."""
    h, w = rgb.shape[:2]
    if w <= width:
        return rgb
    return cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
