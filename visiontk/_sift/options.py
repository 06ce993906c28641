"""The options of SIFT, validated on construction: the one definition the library, the CLI
flags and the pipeline's ``sift`` stage all use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import OptionError
from . import constants as C


@dataclass(frozen=True)
class SiftOptions:
    """Options of :func:`visiontk.sift`, validated on construction (defaults are OpenCV's).

    Example
    -------
    >>> SiftOptions(max_features=500).n_octave_layers
    3
    """

    max_features: int = 0
    n_octave_layers: int = C.N_OCTAVE_LAYERS
    contrast_threshold: float = C.CONTRAST_THRESHOLD
    edge_threshold: float = C.EDGE_THRESHOLD
    sigma: float = C.SIGMA
    upsample: bool = True
    upright: bool = False
    rootsift: bool = False

    def __post_init__(self):
        checks = [
            ("max_features", isinstance(self.max_features, (int, np.integer))
             and self.max_features >= 0, "an integer >= 0 (0 keeps all)"),
            ("n_octave_layers", isinstance(self.n_octave_layers, (int, np.integer))
             and 1 <= self.n_octave_layers <= 10, "an integer in 1..10"),
            ("contrast_threshold", _number(self.contrast_threshold)
             and self.contrast_threshold >= 0, "a number >= 0"),
            ("edge_threshold", _number(self.edge_threshold) and self.edge_threshold > 0,
             "a number > 0"),
            ("sigma", _number(self.sigma) and 0.1 <= self.sigma <= 10, "a number in 0.1..10"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise OptionError(f"sift option {name} must be {expected}, "
                                  f"got {getattr(self, name)!r}")
        for name in ("upsample", "upright", "rootsift"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise OptionError(f"sift option {name} must be True or False, "
                                  f"got {getattr(self, name)!r}")

    @classmethod
    def from_keywords(cls, options: dict) -> SiftOptions:
        """From ``**options`` of a call; an unknown name is a one-line OptionError."""
        try:
            return cls(**options)
        except TypeError as exc:
            raise OptionError(f"sift: {exc}".replace("SiftOptions.__init__()", "sift()")) \
                from None


def _number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value)


def checked_max_pixels(value) -> int:
    """``max_pixels`` checked to be a positive integer (the image size limit, a load option)."""
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0):
        raise OptionError(f"max_pixels must be an integer > 0, got {value!r}")
    return int(value)
