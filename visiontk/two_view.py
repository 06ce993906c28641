"""Extraction, matching and verification of an image pair in one call."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import OptionError
from .extract import sift, sift_backend
from .features import Features, Matches
from .geometry import MIN_INLIERS, MODELS, Geometry, estimate
from .io import DEFAULT_MAX_PIXELS, ImageSource
from .matching import DEFAULT_RATIO, match

_MODEL_CHOICES = (*MODELS, "none")


@dataclass
class TwoViewResult:
    """What :func:`match_images` found: both feature sets, the matches, the geometry (model
    and an inlier mask over the matches) and seconds spent per stage."""

    features_a: Features
    features_b: Features
    matches: Matches
    geometry: Geometry | None
    timings: dict[str, float] = field(default_factory=dict)
    names: tuple[str, ...] = ("A", "B")

    @property
    def inlier_matches(self) -> Matches:
        """Matches the model keeps (none without a model; all when not verified)."""
        if self.geometry is None:
            return self.matches
        return self.matches.subset(self.geometry.inliers)  # all false when model is None

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: keypoints, matches, inliers, model and timings."""
        g = self.geometry
        return {
            "images": list(self.names),
            "keypoints": [len(self.features_a), len(self.features_b)],
            "image_sizes": [list(self.features_a.image_size), list(self.features_b.image_size)],
            "matches": len(self.matches),
            "model": None if g is None else g.kind,
            "inliers": None if g is None else g.n_inliers,
            "matrix": None if g is None or g.model is None else g.model.tolist(),
            "seconds": {k: round(v, 4) for k, v in self.timings.items()},
        }


def match_images(
    image_a: ImageSource,
    image_b: ImageSource,
    *,
    model: str = "homography",
    ratio: float = DEFAULT_RATIO,
    mutual: bool = True,
    symmetric: bool = False,
    threshold: float | None = None,
    min_inliers: int = MIN_INLIERS,
    device: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    **sift_options: Any,
) -> TwoViewResult:
    """SIFT on both images, ratio + mutual matching, and a robust homography or fundamental
    matrix (``model="none"`` skips verification).

    Parameters
    ----------
    image_a, image_b : paths or arrays (see :func:`visiontk.sift`)
    model : "homography", "fundamental" or "none"
    ratio, mutual, symmetric : see :func:`visiontk.match`
    threshold : inlier threshold in pixels (default 3 for H, 1 for F)
    min_inliers : fewer inliers than this: no model (as the pipeline's verify stage)
    max_pixels : refuse larger images
    **sift_options : passed to :func:`visiontk.sift` (e.g. ``max_features``)

    Example
    -------
    >>> r = match_images("sample_images/coffee.png", "sample_images/coffee_warped.png")
    >>> r.geometry.n_inliers > 100
    True
    """
    if model not in _MODEL_CHOICES:
        raise OptionError(f"model must be one of {', '.join(_MODEL_CHOICES)}, got {model!r}")
    t = time.perf_counter()  # from here: making the backend may compile the kernels
    backend = sift_backend(device)  # once: both images and the matching use it
    timings: dict[str, float] = {}
    feats: list[Features] = []
    for key, image in (("sift_a", image_a), ("sift_b", image_b)):
        if feats:
            t = time.perf_counter()
        feats.append(sift(image, device=backend, max_pixels=max_pixels, **sift_options))
        spent = time.perf_counter() - t
        # A first call compiles the CPU kernels; report that apart from the image's time.
        compiled = feats[-1].timings.get("compile", 0.0)
        if compiled:
            timings["compile_kernels"] = compiled
        timings[key] = spent - compiled
    t = time.perf_counter()
    matches = match(
        feats[0], feats[1], ratio=ratio, mutual=mutual, symmetric=symmetric, device=backend
    )
    timings["match"] = time.perf_counter() - t
    geometry: Geometry | None = None
    if model != "none":
        t = time.perf_counter()
        geometry = estimate(
            model,
            feats[0].xy[matches.pairs[:, 0]],
            feats[1].xy[matches.pairs[:, 1]],
            threshold=threshold,
            min_inliers=min_inliers,
        )
        timings["verify"] = time.perf_counter() - t
    names = tuple(
        str(x) if isinstance(x, (str, os.PathLike)) else "<array>" for x in (image_a, image_b)
    )
    return TwoViewResult(feats[0], feats[1], matches, geometry, timings, names)
