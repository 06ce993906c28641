"""The options of SIFT, validated on construction: the one definition the library, the CLI
flags and the pipeline's ``sift`` stage all use."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

import numpy as np

from ..errors import OptionError, shown
from . import constants as C

#: Named sets of option values. ``opencv``: cv2.SIFT_create()'s defaults and its keypoints and
#: descriptors. ``accurate``: COLMAP's choices, measured on bench/sift_bench.py
#: (docs/benchmarks.md): a contrast threshold of 0.017 (0.85 of COLMAP's peak threshold 0.02/3: the
#: faint extrema it adds are surface texture, the best localised matches of a stereo pair;
#: docs/benchmarks.md, "SIFT accuracy"), VLFeat's tolerances in localisation
#: (detect.refine_extrema_tolerant) and its orientation smoothing, orientation and descriptor
#: windows centred on the sub-pixel keypoint (VLFeat), at most 2 orientations, RootSIFT, COLMAP's
#: cap (max_num_features 8192, kept as its whole detection levels from the coarsest down: on images
#: where the cap binds, more correct matches and more repeatable than the 8192 strongest; only the
#: kept ones are oriented and described), 4 octaves from the doubled image (COLMAP's num_octaves:
#: coarser keypoints are the worst localised).
SIFT_PRESETS: dict[str, dict[str, Any]] = {
    "opencv": {
        "max_features": 0,
        "n_octave_layers": C.N_OCTAVE_LAYERS,
        "contrast_threshold": C.CONTRAST_THRESHOLD,
        "edge_threshold": C.EDGE_THRESHOLD,
        "sigma": C.SIGMA,
        "upsample": True,
        "upright": False,
        "rootsift": False,
        "refinement": "opencv",
        "subpixel_window": False,
        "orientation_smoothing": "opencv",
        "max_orientations": 0,
        "keep": "strongest",
        "n_octaves": 0,
    },
}
SIFT_PRESETS["accurate"] = {
    **SIFT_PRESETS["opencv"],
    "max_features": 8192,
    "contrast_threshold": 0.017,
    "rootsift": True,
    "refinement": "tolerant",
    "subpixel_window": True,
    "orientation_smoothing": "vlfeat",
    "max_orientations": 2,
    "n_octaves": 4,
    "keep": "largest",
}
Preset = Literal["accurate", "opencv"]
#: The preset of visiontk.sift, `visiontk match` and the pipeline's sift stage.
DEFAULT_PRESET: Preset = "accurate"
Refinement = Literal["opencv", "tolerant"]
Smoothing = Literal["opencv", "vlfeat"]
Keep = Literal["strongest", "largest"]


@dataclass(frozen=True)
class SiftOptions:
    """Options of :func:`visiontk.sift`, validated on construction.

    ``preset`` names a set of values (:data:`SIFT_PRESETS`); an option given explicitly overrides
    the preset's value, and one left at None takes it.

    Example
    -------
    >>> SiftOptions(max_features=500).n_octave_layers
    3
    >>> SiftOptions(preset="opencv", rootsift=True).contrast_threshold
    0.04
    """

    preset: Preset = DEFAULT_PRESET
    max_features: int | None = None
    n_octave_layers: int | None = None
    contrast_threshold: float | None = None
    edge_threshold: float | None = None
    sigma: float | None = None
    upsample: bool | None = None
    upright: bool | None = None
    rootsift: bool | None = None
    refinement: Refinement | None = None
    subpixel_window: bool | None = None
    orientation_smoothing: Smoothing | None = None
    max_orientations: int | None = None
    keep: Keep | None = None
    n_octaves: int | None = None

    def __post_init__(self) -> None:
        if self.preset not in SIFT_PRESETS:
            raise OptionError(
                f"sift option preset must be one of {', '.join(SIFT_PRESETS)}, "
                f"got {shown(self.preset)}"
            )
        for name, value in SIFT_PRESETS[self.preset].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        checks = [
            (
                "max_features",
                isinstance(self.max_features, (int, np.integer))
                and not isinstance(self.max_features, bool)
                and self.max_features >= 0,
                "an integer >= 0 (0 keeps all)",
            ),
            (
                "n_octave_layers",
                isinstance(self.n_octave_layers, (int, np.integer))
                and not isinstance(self.n_octave_layers, bool)
                and 1 <= self.n_octave_layers <= 10,
                "an integer in 1..10",
            ),
            (
                "contrast_threshold",
                _number(self.contrast_threshold) and self.contrast_threshold >= 0,
                "a number >= 0",
            ),
            (
                "edge_threshold",
                _number(self.edge_threshold) and self.edge_threshold > 0,
                "a number > 0",
            ),
            ("sigma", _number(self.sigma) and 0.1 <= self.sigma <= 10, "a number in 0.1..10"),
            (
                "refinement",
                self.refinement in typing.get_args(Refinement),
                "one of " + ", ".join(typing.get_args(Refinement)),
            ),
            (
                "orientation_smoothing",
                self.orientation_smoothing in typing.get_args(Smoothing),
                "one of " + ", ".join(typing.get_args(Smoothing)),
            ),
            (
                "keep",
                self.keep in typing.get_args(Keep),
                "one of " + ", ".join(typing.get_args(Keep)),
            ),
            (
                "n_octaves",
                isinstance(self.n_octaves, (int, np.integer))
                and not isinstance(self.n_octaves, bool)
                and self.n_octaves >= 0,
                "an integer >= 0 (0 builds every octave the image allows)",
            ),
            (
                "max_orientations",
                isinstance(self.max_orientations, (int, np.integer))
                and not isinstance(self.max_orientations, bool)
                and self.max_orientations >= 0,
                "an integer >= 0 (0 keeps every peak)",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise OptionError(
                    f"sift option {name} must be {expected}, got {shown(getattr(self, name))}"
                )
        for name in ("upsample", "upright", "rootsift", "subpixel_window"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise OptionError(
                    f"sift option {name} must be True or False, got {shown(getattr(self, name))}"
                )

    @classmethod
    def from_keywords(cls, options: dict[str, Any]) -> SiftOptions:
        """From ``**options`` of a call; an unknown name is a one-line OptionError."""
        try:
            return cls(**options)
        except TypeError as exc:
            raise OptionError(f"sift: {exc}".replace("SiftOptions.__init__()", "sift()")) from None


def _number(value: object) -> TypeGuard[float | np.number[Any]]:
    return isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value)


def checked_max_pixels(value: object) -> int:
    """``max_pixels`` checked to be a positive integer (the image size limit, a load option)."""
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0):
        raise OptionError(f"max_pixels must be an integer > 0, got {shown(value)}")
    return int(value)
