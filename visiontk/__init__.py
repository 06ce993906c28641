"""visiontk: SIFT features, matching and robust two-view geometry.

>>> import visiontk
>>> result = visiontk.match_images("sample_images/coffee.png", "sample_images/coffee_warped.png")
>>> result.geometry.n_inliers > 200
True
"""

from typing import Any

__version__ = "0.1.0"

# visiontk.sift is the function users call; visiontk.extract the names code that builds on
# it uses; the implementation is the private package visiontk._sift (one module per step).
from .errors import VisiontkError
from .extract import SiftOptions, iter_sift, sift, sift_batch
from .features import Features, Matches
from .geometry import Geometry, estimate_fundamental, estimate_homography
from .matching import match
from .two_view import TwoViewResult, match_images
from .viz import draw_matches

__all__ = [
    "Features",
    "Geometry",
    "Matches",
    "SiftOptions",
    "TwoViewResult",
    "VisiontkError",
    "__version__",
    "dino_attention",
    "draw_matches",
    "estimate_fundamental",
    "estimate_homography",
    "iter_sift",
    "match",
    "match_images",
    "sift",
    "sift_batch",
]


def __getattr__(name: str) -> Any:
    # the DINO code (and its checkpoint readers) loads on first use: most runs never call it,
    # and every `import visiontk` (each pipeline worker's included) would pay for it
    if name == "dino_attention":
        from .vit.attention import dino_attention

        return dino_attention
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"dino_attention"})
