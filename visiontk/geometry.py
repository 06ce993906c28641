"""Robust two-view geometry: homography and fundamental matrix (OpenCV's USAC MAGSAC++)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike

from .errors import OptionError

MODELS = ("homography", "fundamental")
#: Fewest correspondences each model needs (4 for H; 8 for the 8-point F that USAC refines).
MIN_POINTS = {"homography": 4, "fundamental": 8}
#: Default inlier threshold in pixels (reprojection error for H, Sampson distance for F).
DEFAULT_THRESHOLD = {"homography": 3.0, "fundamental": 1.0}
#: Fewer inliers than this and there is no model: a handful of consistent matches is what
#: chance gives (COLMAP's min_num_inliers is 15 as well).
MIN_INLIERS = 15


@dataclass
class Geometry:
    """A robustly estimated model: ``kind`` ("homography" or "fundamental"), the 3×3 ``model``
    (None when there were too few correspondences or estimation failed) and a boolean
    ``inliers`` mask over the correspondences given."""

    kind: str
    model: np.ndarray | None
    inliers: np.ndarray

    @property
    def n_inliers(self) -> int:
        return int(self.inliers.sum())


def estimate(
    kind: str,
    xy_a: ArrayLike,
    xy_b: ArrayLike,
    *,
    threshold: float | None = None,
    min_inliers: int = MIN_INLIERS,
    confidence: float = 0.9999,
    max_iters: int = 10000,
) -> Geometry:
    """Fit a homography (xy_b ~ H · xy_a) or fundamental matrix (xy_bᵀ F xy_a = 0) with
    USAC MAGSAC++ (a homography is then refit to its inliers: least squares, then a Huber
    loss), returning the model and the inlier mask; a model with fewer than ``min_inliers``
    inliers is no model (``model=None``, no inliers).

    Example
    -------
    >>> xy_a = np.random.default_rng(0).uniform(0, 100, (30, 2))
    >>> g = estimate("homography", xy_a, xy_a + 5)
    >>> g.model.shape, g.inliers.dtype, g.n_inliers
    ((3, 3), dtype('bool'), 30)
    """
    if kind not in MODELS:
        raise OptionError(f"model must be one of {', '.join(MODELS)}, got {kind!r}")
    threshold = DEFAULT_THRESHOLD[kind] if threshold is None else threshold
    if not (isinstance(threshold, (int, float)) and threshold > 0):
        raise OptionError(f"threshold must be a number > 0, got {threshold!r}")
    if not (isinstance(min_inliers, int) and min_inliers >= 0):
        raise OptionError(f"min_inliers must be an integer >= 0, got {min_inliers!r}")
    a, b = _points(xy_a, "xy_a"), _points(xy_b, "xy_b")
    if len(a) != len(b):
        raise OptionError(
            f"xy_a has {len(a)} points but xy_b has {len(b)}: correspondences come in pairs"
        )
    n = len(a)
    none = Geometry(kind, None, np.zeros(n, bool))
    if n < MIN_POINTS[kind]:
        return none
    try:
        if kind == "homography":
            model, mask = cv2.findHomography(
                a, b, cv2.USAC_MAGSAC, threshold, maxIters=max_iters, confidence=confidence
            )
        else:
            model, mask = cv2.findFundamentalMat(
                a, b, cv2.USAC_MAGSAC, threshold, confidence, max_iters
            )
    except cv2.error:
        # USAC asserts (-215 !model.empty()) when no minimal sample of a degenerate point set
        # gives a model (OpenCV 4.10-5.1): that is "no model", as for too few inliers
        return none
    if model is None or mask is None or model.shape != (3, 3):
        return none
    inliers = mask.ravel().astype(bool)
    if kind == "homography":
        model, inliers = _polish_homography(a, b, model, inliers, threshold)
    if inliers.sum() < min_inliers:
        return none
    return Geometry(kind, model.astype(np.float64), inliers)


def _points(xy: ArrayLike, name: str) -> np.ndarray:
    """N×2 float64 from N×2 or OpenCV's N×1×2, finite."""
    try:
        a = np.asarray(xy, np.float64)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be an N×2 array of numbers") from None
    if a.ndim == 3 and a.shape[1:] == (1, 2):
        a = a.reshape(-1, 2)
    if a.ndim != 2 or a.shape[1] != 2:
        raise OptionError(f"{name} must be an N×2 array of points, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise OptionError(f"{name} holds NaN or infinite coordinates")
    return a


def _polish_homography(
    a: np.ndarray, b: np.ndarray, model: np.ndarray, inliers: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Least squares + Levenberg–Marquardt on MAGSAC's inliers, a Huber refit of that, then
    the inliers of the result.

    MAGSAC's own model varies with its random samples; the least-squares refit is a
    deterministic function of the inlier set, and closer to the truth. Inside the inlier
    threshold the errors are not all alike (a coarse keypoint is off by a pixel where a fine
    one is off by a tenth): the Huber refit (:func:`_huber_refit`) stops the worst of them
    from pulling the model, for every extractor (bench/sift_bench.py; docs/benchmarks.md).
    """
    if inliers.sum() < MIN_POINTS["homography"]:
        return model, inliers
    refined, _ = cv2.findHomography(a[inliers], b[inliers], 0)
    if refined is None:
        return model, inliers
    refined = _huber_refit(a[inliers], b[inliers], refined)
    projected = cv2.perspectiveTransform(a.reshape(-1, 1, 2), refined).reshape(-1, 2)
    refit_inliers = np.linalg.norm(projected - b, axis=1) <= threshold
    if refit_inliers.sum() < inliers.sum() * 0.9:
        return model, inliers
    return refined, refit_inliers


#: Fewest inliers for the Huber refit: twice the minimal sample, so the median residual it
#: scales by is not that of an exact fit.
HUBER_MIN_POINTS = 8


def _huber_refit(
    a: np.ndarray, b: np.ndarray, model: np.ndarray, iterations: int = 20
) -> np.ndarray:
    """The homography minimising the Huber loss of the reprojection residuals (x and y), its
    corner at twice the median residual of ``model`` (1.345 × 1.4826 × median: Huber's 95%
    efficiency constant on a robust sigma): iteratively reweighted Gauss–Newton, 8 parameters
    (H₃₃ = 1), analytic Jacobian. ``model`` itself when there are too few points or the fit
    fails.
    """
    if len(a) < HUBER_MIN_POINTS or abs(model[2, 2]) < 1e-12:
        return model
    h = (model / model[2, 2]).ravel()[:8].astype(np.float64)
    x, y = a[:, 0], a[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    start = cv2.perspectiveTransform(a.reshape(-1, 1, 2), model).reshape(-1, 2)
    corner = 1.345 * 1.4826 * float(np.median(np.linalg.norm(start - b, axis=1)))
    if not np.isfinite(corner) or corner <= 1e-9:
        return model
    for _ in range(iterations):
        den = h[6] * x + h[7] * y + 1.0
        if np.any(np.abs(den) < 1e-12):
            return model
        u = (h[0] * x + h[1] * y + h[2]) / den
        v = (h[3] * x + h[4] * y + h[5]) / den
        r = np.concatenate([u - b[:, 0], v - b[:, 1]])
        w = corner / np.maximum(np.abs(r), corner)  # Huber's weights: 1 inside the corner
        jac = (
            np.concatenate(
                [
                    np.stack([x, y, one, zero, zero, zero, -u * x, -u * y], axis=1),
                    np.stack([zero, zero, zero, x, y, one, -v * x, -v * y], axis=1),
                ]
            )
            / np.concatenate([den, den])[:, None]
        )
        weighted = jac * w[:, None]
        try:
            step = np.linalg.solve(weighted.T @ jac, -(weighted.T @ r))
        except np.linalg.LinAlgError:
            return model
        if not np.all(np.isfinite(step)):
            return model
        h = h + step
        if np.abs(step).max() <= 1e-10 * max(1.0, np.abs(h).max()):
            break
    return np.append(h, 1.0).reshape(3, 3)


def estimate_homography(xy_a: ArrayLike, xy_b: ArrayLike, **kwargs: Any) -> Geometry:
    """:func:`estimate` with ``kind="homography"``."""
    return estimate("homography", xy_a, xy_b, **kwargs)


def estimate_fundamental(xy_a: ArrayLike, xy_b: ArrayLike, **kwargs: Any) -> Geometry:
    """:func:`estimate` with ``kind="fundamental"``."""
    return estimate("fundamental", xy_a, xy_b, **kwargs)


def corner_error(
    h_est: np.ndarray, h_true: np.ndarray, width: int, height: int, visible: bool = False
) -> float:
    """Mean distance between the image corners mapped by two homographies (pixels): the
    HPatches homography-accuracy measure.

    With ``visible``, the corners are those of the part of image A that the true homography
    keeps inside B's frame (same size assumed), so a zoom is judged where both images see the
    scene rather than by extrapolating far outside the second image.
    """
    corners: np.ndarray = np.array(
        [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64
    ).reshape(-1, 1, 2)
    if visible:
        back = cv2.perspectiveTransform(corners, np.linalg.inv(h_true)).reshape(-1, 2)
        corners = np.clip(back, 0, [width - 1, height - 1]).reshape(-1, 1, 2)
    a = cv2.perspectiveTransform(corners, h_est).reshape(-1, 2)
    b = cv2.perspectiveTransform(corners, h_true).reshape(-1, 2)
    return float(np.linalg.norm(a - b, axis=1).mean())
