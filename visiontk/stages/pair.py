"""Per-pair stages: ``match`` (descriptor matching) and ``verify`` (robust geometry)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..devices import Device
from ..errors import OptionError, shown
from ..geometry import MIN_INLIERS, MODELS
from ..matching import DEFAULT_RATIO
from ..pipeline.stage import Stage

_MOVED = (
    "moved to a pair-selection stage before match: pairs-exhaustive, pairs-sequential "
    "(window = N) or pairs-file (path = FILE)"
)


@dataclass(frozen=True)
class MatchOptions:
    ratio: float = DEFAULT_RATIO
    mutual: bool = True
    symmetric: bool = False  # the ratio test from both sides (COLMAP's cross_check)
    device: Device = "auto"

    def __post_init__(self) -> None:
        if not 0 < self.ratio <= 1:
            raise OptionError(f"stage match: ratio must be in (0, 1], got {self.ratio}")


class MatchStage(Stage):
    """Match the descriptors of each selected image pair (ratio + mutual test)."""

    name = "match"
    kind = "pair"
    inputs = ("features",)
    outputs = ("matches",)
    Options = MatchOptions
    moved: ClassVar[dict] = {"pairs": _MOVED, "window": _MOVED, "pairs_file": _MOVED}

    def run(self, context: dict[str, Any]) -> dict[str, Any]:
        from ..matching import match

        o = self.options
        m = match(
            context["features_a"],
            context["features_b"],
            ratio=o.ratio,
            mutual=o.mutual,
            symmetric=o.symmetric,
            device=o.device,
        )
        return {"matches": m}


@dataclass(frozen=True)
class VerifyOptions:
    model: str = "homography"  # homography | fundamental
    threshold: float | None = None  # pixels; default 3 (H) or 1 (F)
    min_inliers: int = MIN_INLIERS  # fewer inliers than this: no model

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise OptionError(
                f"stage verify: model must be one of {', '.join(MODELS)}, got {shown(self.model)}"
            )
        if self.threshold is not None and self.threshold <= 0:
            raise OptionError(f"stage verify: threshold must be > 0, got {self.threshold}")
        if self.min_inliers < 0:
            raise OptionError(f"stage verify: min_inliers must be >= 0, got {self.min_inliers}")


class VerifyStage(Stage):
    """Robust homography or fundamental matrix on a pair's matches (USAC MAGSAC++)."""

    name = "verify"
    kind = "pair"
    inputs = ("features", "matches")
    outputs = ("geometry",)
    Options = VerifyOptions

    def run(self, context: dict[str, Any]) -> dict[str, Any]:
        from ..geometry import estimate

        fa, fb, m = context["features_a"], context["features_b"], context["matches"]
        g = estimate(
            self.options.model,
            fa.xy[m.pairs[:, 0]],
            fb.xy[m.pairs[:, 1]],
            threshold=self.options.threshold,
            min_inliers=self.options.min_inliers,
        )
        return {"geometry": g}
