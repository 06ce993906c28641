"""Camera intrinsics for mapping: from EXIF, from a file of known intrinsics, or COLMAP's guess.

A camera is (model, width, height, params, prior) in COLMAP's terms: ``params`` in the order
COLMAP's camera model takes them, pixel centres at +0.5 (COLMAP's convention), ``prior`` True
when the focal length is known (EXIF or a file) rather than guessed, which tells the mapper to
trust it as a starting point.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OptionError, shown

#: COLMAP's camera model ids and parameter names (COLMAP's src/colmap/sensor/models.h).
MODELS = {
    "SIMPLE_PINHOLE": (0, ("f", "cx", "cy")),
    "PINHOLE": (1, ("fx", "fy", "cx", "cy")),
    "SIMPLE_RADIAL": (2, ("f", "cx", "cy", "k")),
    "RADIAL": (3, ("f", "cx", "cy", "k1", "k2")),
    "OPENCV": (4, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
}
#: COLMAP's focal length guess without EXIF: 1.2 × the longer side.
DEFAULT_FOCAL_FACTOR = 1.2
_EXIF_IFD = 0x8769
_MAKE, _MODEL = 0x010F, 0x0110
_FOCAL_LENGTH, _FOCAL_35MM = 0x920A, 0xA405
_PLANE_X_RESOLUTION, _PLANE_UNIT, _PIXEL_X = 0xA20E, 0xA210, 0xA002
#: FocalPlaneResolutionUnit: 2 inch, 3 centimetre, 4 millimetre, 5 micrometre (in mm).
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}


@dataclass(frozen=True)
class Camera:
    model: str
    width: int
    height: int
    params: tuple
    prior: bool  # focal length known (EXIF, file), not guessed
    source: str  # "exif 35mm", "exif focal plane", "file", "guess"

    @property
    def model_id(self) -> int:
        return MODELS[self.model][0]


def camera_for(
    model: str, width: int, height: int, focal: float | None, source: str = "guess"
) -> Camera:
    """A camera of ``model`` with principal point at the centre and no distortion; ``focal``
    in pixels, COLMAP's 1.2 × longer side when None."""
    if model not in MODELS:
        raise OptionError(f"camera model must be one of {', '.join(MODELS)}, got {shown(model)}")
    prior = focal is not None
    f = focal if focal is not None else DEFAULT_FOCAL_FACTOR * max(width, height)
    values = {"f": f, "fx": f, "fy": f, "cx": width / 2, "cy": height / 2}
    params = tuple(float(values.get(name, 0.0)) for name in MODELS[model][1])
    return Camera(model, width, height, params, prior, source if prior else "guess")


@dataclass(frozen=True)
class ExifFacts:
    """What EXIF says about an image's camera: its focal length in pixels with where it came
    from (None: not known), and COLMAP's camera key (make, model and focal length tag, None
    when one is missing): images with the same key and size share one camera."""

    focal: tuple[float, str] | None = None
    camera: str | None = None


def exif_focal(path, width: int, height: int) -> tuple[float, str] | None:
    """Focal length in pixels of an image shown ``width`` × ``height`` (after EXIF turning; a
    size other than the file's scales it), or None: see :func:`read_exif`."""
    return read_exif(path, width, height).focal


def read_exif(path, width: int, height: int) -> ExifFacts:
    """The focal length of an image shown ``width`` × ``height``: from the 35 mm equivalent as
    COLMAP reads it (f35 / 35 × longer side), else from the focal length in mm and the
    focal-plane resolution, scaled from the resolution it was recorded at to this one; and
    COLMAP's camera key (its ``Bitmap::ExifCameraModel``: make, model, the 35 mm or else the mm
    focal length).

    Any unreadable or implausible tag gives no focal length (the guess), never an error: EXIF
    is a hint.
    """
    try:
        from PIL import Image

        with Image.open(path) as im:
            exif = _exif(im, path)
            tags = dict(exif.get_ifd(_EXIF_IFD))
            make, model = exif.get(_MAKE), exif.get(_MODEL)
            stored_width, stored_longer = im.width, max(im.size)
    except Exception:  # no EXIF, or a broken one: not this function's problem
        return ExifFacts()
    longer = max(width, height)
    f35 = _number(tags.get(_FOCAL_35MM))
    f_mm = _number(tags.get(_FOCAL_LENGTH))
    lens = f35 or f_mm
    camera = f"{make}-{model}-{lens:.6f}" if make and model and lens else None
    if f35 and 1 <= f35 <= 5000:
        return ExifFacts((f35 / 35.0 * longer, "exif 35mm"), camera)
    per_unit = _number(tags.get(_PLANE_X_RESOLUTION))
    unit = _UNIT_MM.get(int(_number(tags.get(_PLANE_UNIT)) or 2))
    if f_mm and per_unit and unit and f_mm > 0 and per_unit > 0:
        # the focal-plane resolution counts sensor pixels at PixelXDimension pixels across;
        # the file may since have been resized to stored_width, and be shown at another size
        # still (the pipeline's features are in the file's pixels: the same size there)
        recorded = _number(tags.get(_PIXEL_X)) or stored_width
        focal = f_mm * per_unit / unit * stored_width / recorded * longer / stored_longer
        if 0.1 * longer <= focal <= 10 * longer:
            return ExifFacts((focal, "exif focal plane"), camera)
    return ExifFacts(None, camera)


def _exif(im, path):
    """The image's EXIF without decoding its pixels: Pillow decodes a whole PNG to look for an
    eXIf chunk after the image data (the PNG spec allows it there), a whole decode per image
    for a few bytes; here a PNG's chunk headers are walked instead."""
    from PIL import Image

    if im.format != "PNG" or "exif" in im.info:
        return im.getexif()
    exif = Image.Exif()
    raw = _png_chunk(path, b"eXIf")
    if raw:
        exif.load(raw)
    return exif


def _png_chunk(path, kind: bytes) -> bytes | None:
    """The data of the first chunk of ``kind`` in a PNG file, or None."""
    with open(path, "rb") as fh:
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while len(head := fh.read(8)) == 8:
            length, found = struct.unpack(">I4s", head)
            if found == kind:
                return fh.read(length)
            if found == b"IEND":
                return None
            fh.seek(length + 4, 1)  # the data and its CRC
    return None


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def read_intrinsics(path) -> dict[str, Camera]:
    """Known intrinsics from a text file in COLMAP's cameras.txt style, one camera per line,
    keyed by image name instead of camera id::

        # name MODEL width height params...
        view_00.png PINHOLE 640 480 520 520 320 240
        * SIMPLE_RADIAL 4000 3000 3100 2000 1500 0.01     (every image not named)

    Principal points in COLMAP's convention (the top-left pixel's centre at 0.5, 0.5)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(
            f"{path}: cannot read intrinsics file ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    cameras = {}
    for number, raw in enumerate(lines, 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        where = f"{path}:{number}"
        if len(parts) < 4 or parts[1] not in MODELS:
            raise OptionError(
                f"{where}: expected 'name MODEL width height params...' with MODEL "
                f"one of {', '.join(MODELS)}"
            )
        name, model = parts[0], parts[1]
        try:
            width, height = int(parts[2]), int(parts[3])
            params = tuple(float(p) for p in parts[4:])
        except ValueError:
            raise OptionError(f"{where}: width, height and params must be numbers") from None
        expected = len(MODELS[model][1])
        if (
            len(params) != expected
            or width < 1
            or height < 1
            or not np.all(np.isfinite(params))
            or params[0] <= 0
        ):
            raise OptionError(
                f"{where}: {model} takes {expected} params "
                f"({' '.join(MODELS[model][1])}) and a positive focal length"
            )
        cameras[name] = Camera(model, width, height, params, True, "file")
    if not cameras:
        raise OptionError(f"{path}: no cameras in the intrinsics file")
    return cameras


class CameraChooser:
    """The camera of each image, chosen when its size is known: the intrinsics file's line for
    its name (or '*'), else EXIF's focal length (``exif``), else COLMAP's guess. Which images
    share one camera: all of them with ``single_camera``; otherwise, as COLMAP's extractor
    decides by default, the images of the same size whose EXIF names the same make, model and
    focal length (one phone at one zoom), and every other image its own.

    ``paths``: image name -> file (for EXIF)."""

    def __init__(
        self,
        paths: dict,
        *,
        model: str = "SIMPLE_RADIAL",
        single_camera: bool = False,
        intrinsics: str = "",
        exif: bool = True,
    ):
        if model not in MODELS:
            raise OptionError(
                f"camera model must be one of {', '.join(MODELS)}, got {shown(model)}"
            )
        self.paths, self.model, self.exif = paths, model, exif
        self.single_camera, self.intrinsics = single_camera, intrinsics
        self.known = read_intrinsics(intrinsics) if intrinsics else {}
        self.shared: Camera | None = None
        self.by_exif: dict = {}  # (EXIF camera key, width, height) -> its Camera
        self.chosen: dict[str, Camera] = {}  # name -> its camera (shared ones are one object)

    def __call__(self, name: str, image_size) -> Camera:
        h, w = (int(v) for v in image_size)
        if self.single_camera and self.shared is not None:
            if (self.shared.width, self.shared.height) != (w, h):
                raise OptionError(
                    f"single_camera: {name} is {w}×{h}, the first image "
                    f"{self.shared.width}×{self.shared.height}"
                )
            camera = self.shared
        else:
            camera = self._choose(name, w, h)
            if self.single_camera:
                self.shared = camera
        self.chosen[name] = camera
        return camera

    @property
    def sources(self) -> dict[str, str]:
        """Image name -> where its camera's focal length came from."""
        return {name: camera.source for name, camera in self.chosen.items()}

    def _choose(self, name: str, w: int, h: int) -> Camera:
        given = self.known.get(name, self.known.get("*"))
        if given is not None:
            if (given.width, given.height) != (w, h):
                raise OptionError(
                    f"{self.intrinsics}: the camera for {name} is {given.width}×"
                    f"{given.height}, the image {w}×{h}"
                )
            return given
        if not (self.exif and name in self.paths):
            return camera_for(self.model, w, h, None)
        facts = read_exif(self.paths[name], w, h)
        key = (facts.camera, w, h)
        if facts.camera is not None and key in self.by_exif:
            return self.by_exif[key]
        camera = camera_for(self.model, w, h, *(facts.focal or (None,)))
        if facts.camera is not None:
            self.by_exif[key] = camera
        return camera
