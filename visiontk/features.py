"""Keypoints with descriptors (:class:`Features`) and correspondences (:class:`Matches`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .errors import FeaturesError, FeaturesFileError

if TYPE_CHECKING:
    import cv2

#: What selects features or matches: a boolean mask, integer indices, or a slice.
Index: TypeAlias = np.ndarray | Sequence[int] | slice

#: Written into saved files so readers know the convention without guessing.
CONVENTION = "opencv: x right, y down, centre of the top-left pixel is (0, 0); size = diameter"
_FORMAT_VERSION = 1


@dataclass
class Features:
    """SIFT keypoints and descriptors of one image, in OpenCV's conventions.

    Attributes
    ----------
    xy : (N, 2) float32, x then y; the centre of the top-left pixel is (0, 0)
    size : (N,) float32, diameter of the keypoint's neighbourhood in pixels (cv2.KeyPoint.size)
    angle : (N,) float32, degrees in [0, 360) as cv2.KeyPoint.angle (clockwise, y down)
    response : (N,) float32, |DoG| at the refined extremum (0..1 scale)
    octave : (N,) int32, OpenCV's packed octave | layer << 8 | sub-layer << 16
    descriptors : (N, 128) uint8, OpenCV's (row·4 + col)·8 + bin layout
    image_size : (height, width) of the image they were extracted from
    """

    xy: np.ndarray
    size: np.ndarray
    angle: np.ndarray
    response: np.ndarray
    octave: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int] = (0, 0)
    timings: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Refuse arrays that do not describe one set of keypoints (a FeaturesError):
        matching would otherwise return indices past ``xy``, or descriptors wrap around."""
        self.xy = _checked(self.xy, "xy", (None, 2), "f", np.float32)
        n = self.xy.shape[0]
        self.size = _checked(self.size, "size", (n,), "f", np.float32)
        self.angle = _checked(self.angle, "angle", (n,), "f", np.float32)
        self.response = _checked(self.response, "response", (n,), "f", np.float32)
        self.octave = _checked(self.octave, "octave", (n,), "iu", np.int32)
        self.descriptors = _checked(
            self.descriptors, "descriptors", (n, DESCRIPTOR_SIZE), "u", np.uint8
        )
        size = tuple(np.asarray(self.image_size).reshape(-1).tolist())
        if len(size) != 2 or not all(isinstance(v, int) and v >= 0 for v in size):
            raise FeaturesError(f"image_size must be (height, width), got {size}")
        self.image_size = (size[0], size[1])

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def __repr__(self) -> str:
        h, w = self.image_size
        return f"Features({len(self)} keypoints, image {w}×{h})"

    @classmethod
    def empty(cls, image_size: tuple[int, int] = (0, 0)) -> Features:
        return cls(
            np.zeros((0, 2), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int32),
            np.zeros((0, 128), np.uint8),
            image_size,  # checked and made a tuple by __post_init__
        )

    def subset(self, index: Index) -> Features:
        """Features at ``index`` (a boolean mask or integer array), in that order."""
        return Features(
            self.xy[index],
            self.size[index],
            self.angle[index],
            self.response[index],
            self.octave[index],
            self.descriptors[index],
            self.image_size,
        )

    @property
    def octave_number(self) -> np.ndarray:
        """Signed octave (−1 for the doubled image), unpacked from :attr:`octave`."""
        o = (self.octave & 255).astype(np.int32)
        return np.where(o >= 128, o - 256, o)

    @property
    def layer(self) -> np.ndarray:
        """Scale layer within the octave (1..n_octave_layers), unpacked from :attr:`octave`."""
        return ((self.octave >> 8) & 255).astype(np.int32)

    def to_keypoints(self) -> list[cv2.KeyPoint]:
        """A list of ``cv2.KeyPoint``, for use with OpenCV's matchers and drawing functions."""
        import cv2

        return [
            cv2.KeyPoint(float(x), float(y), float(s), float(a), float(r), int(o))
            for (x, y), s, a, r, o in zip(
                self.xy, self.size, self.angle, self.response, self.octave, strict=True
            )
        ]

    @classmethod
    def from_keypoints(
        cls,
        keypoints: Sequence[cv2.KeyPoint],
        descriptors: ArrayLike | None,
        image_size: tuple[int, int] = (0, 0),
    ) -> Features:
        """Build from ``cv2.KeyPoint`` objects and an (N, 128) descriptor array (uint8, or
        float32 as cv2.SIFT returns, rounded and saturated)."""
        n = len(keypoints)
        desc = np.zeros((0, 128), np.uint8) if descriptors is None else np.asarray(descriptors)
        if desc.shape != (n, DESCRIPTOR_SIZE):
            raise FeaturesError(f"expected {n}×{DESCRIPTOR_SIZE} descriptors, got {desc.shape}")
        if desc.dtype != np.uint8:
            desc = np.clip(np.rint(desc), 0, 255).astype(np.uint8)
        return cls(
            np.array([k.pt for k in keypoints], np.float32).reshape(n, 2),
            np.array([k.size for k in keypoints], np.float32),
            np.array([k.angle for k in keypoints], np.float32),
            np.array([k.response for k in keypoints], np.float32),
            np.array([k.octave for k in keypoints], np.int32),
            desc,
            image_size,  # checked and made a tuple by __post_init__
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to ``path`` (.npz), atomically: a reader never sees a half-written file. The
        folder must exist (VisiontkError otherwise: a typo does not make a new folder)."""
        from ._files import atomic_write, writable_file

        path = writable_file(path)  # not a folder, a device, or in a folder that is missing
        with atomic_write(path, make_folders=False) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                xy=self.xy,
                size=self.size,
                angle=self.angle,
                response=self.response,
                octave=self.octave,
                descriptors=self.descriptors,
                image_size=np.asarray(self.image_size, np.int64),
                convention=np.asarray(CONVENTION),
                version=np.asarray(_FORMAT_VERSION),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Features:
        """Read a file written by :meth:`save`, refusing (FeaturesFileError, naming the file)
        anything that is not one: other archives, truncated or corrupt files, and arrays of the
        wrong shape, type or length. Read with the bounds of :mod:`visiontk.tensorfiles`."""
        from .tensorfiles import read_npz

        data = read_npz(path, FeaturesFileError, kinds="biufU")
        missing = [k for k in _SAVED if k not in data]
        if missing:
            raise FeaturesFileError(
                f"{path}: not a visiontk features file (no {', '.join(missing)})"
            )
        try:
            return cls(*(data[k] for k in _SAVED))
        except FeaturesError as exc:
            raise FeaturesFileError(f"{path}: {exc}") from None


#: Arrays of a saved file, in the order Features takes them.
_SAVED = ("xy", "size", "angle", "response", "octave", "descriptors", "image_size")
DESCRIPTOR_SIZE = 128


def _checked(
    array: ArrayLike, name: str, shape: tuple[int | None, ...], kinds: str, dtype: DTypeLike
) -> np.ndarray:
    """``array`` as ``dtype`` after checking its shape (None: any length), that its values are
    of one of the numpy ``kinds`` and fit ``dtype`` (no wrap-around), and are finite."""
    a = np.asarray(array)
    if a.ndim != len(shape) or any(
        s is not None and s != d for s, d in zip(shape, a.shape, strict=True)
    ):
        want = "×".join("N" if s is None else str(s) for s in shape)
        raise FeaturesError(f"{name} has shape {a.shape}, expected {want}")
    if a.dtype.kind not in kinds:
        raise FeaturesError(f"{name} holds {a.dtype} values, expected {np.dtype(dtype)}")
    if a.dtype.kind in "iu" and a.dtype != dtype and a.size:  # a cast could wrap around
        info = np.iinfo(dtype)
        if a.min() < info.min or a.max() > info.max:
            raise FeaturesError(f"{name} has values outside {info.min}..{info.max}")
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        raise FeaturesError(f"{name} holds NaN or infinite values")
    return np.ascontiguousarray(a, dtype=dtype)


@dataclass
class Matches:
    """Correspondences between two sets of features.

    Attributes
    ----------
    pairs : (M, 2) int64, index into features A then into features B
    distances : (M,) float32, Euclidean descriptor distance (uint8 units)
    """

    pairs: np.ndarray
    distances: np.ndarray

    def __len__(self) -> int:
        return int(self.pairs.shape[0])

    def __repr__(self) -> str:
        return f"Matches({len(self)})"

    def subset(self, index: Index) -> Matches:
        return Matches(self.pairs[index], self.distances[index])

    def to_dmatches(self) -> list[cv2.DMatch]:
        """A list of ``cv2.DMatch`` (queryIdx into A, trainIdx into B)."""
        import cv2

        return [
            cv2.DMatch(int(a), int(b), float(d))
            for (a, b), d in zip(self.pairs, self.distances, strict=True)
        ]
