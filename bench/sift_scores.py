"""What bench/sift_bench.py measures: the warped pairs, the stereo pair, the extractors under
test and how a pair is scored. One matcher and one robust estimator for every extractor, so
the scores compare detectors and descriptors, nothing else.

Scores of one pair (``score_pair``):
  mma1      share of mutual nearest-neighbour matches within 1 px of the true position;
  correct3  matches (mutual + ratio 0.8) within 3 px: how many useful matches a user gets;
  rep       repeatability: keypoints re-detected within 3 px, over those visible in both;
  h1, h3    the homography from those matches (visiontk.estimate_homography) has mean
            corner error under 1 / 3 px, over the part of the image both views see;
  kp        keypoints per image.
Stereo (``score_stereo``): matches (mutual + ratio 0.8) on a rectified pair, correct when they
land within 1 px of where the ground-truth disparity puts them.
"""

from __future__ import annotations

import cv2
import numpy as np
import skimage.data
from scipy.spatial import cKDTree

import visiontk
from visiontk.geometry import corner_error, estimate_homography

PHOTOS = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "brick",
    "gravel",
    "moon",
    "coins",
    "immunohistochemistry",
]
RATIO = 0.8


def similarity(w, h, angle, scale):
    return np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale), [0, 0, 1]])


def viewpoint(w, h, amount):
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32(
        [[amount * w, amount * h], [w * (1 - amount / 2), 0], [w, h], [0, h * (1 - amount)]]
    )
    return cv2.getPerspectiveTransform(src, dst)


def jpeg(img, quality):
    _, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def gamma(value):
    return lambda g: np.clip(255 * (g / 255.0) ** value, 0, 255).astype(np.uint8)


def dark_noisy(value, noise, seed):
    """Gamma ``value`` (a dark exposure) plus Gaussian sensor noise of ``noise`` grey levels."""

    def change(g):
        rng = np.random.default_rng(seed)
        dark = 255 * (g / 255.0) ** value + rng.normal(0, noise, g.shape)
        return np.clip(np.rint(dark), 0, 255).astype(np.uint8)

    return change


def _identity(w, h):
    return np.eye(3)


# category -> list of (name, homography maker, photometric change or None)
WARPS = {
    "rotation": [
        (f"rot {a}°", lambda w, h, a=a: similarity(w, h, a, 1.0), None) for a in (15, 45, 90, 160)
    ],
    "scale": [
        (f"scale {s}", lambda w, h, s=s: similarity(w, h, 5, s), None) for s in (0.5, 0.7, 1.4, 2.0)
    ],
    "viewpoint": [
        (f"view {v}", lambda w, h, v=v: viewpoint(w, h, v), None) for v in (0.1, 0.2, 0.3)
    ],
    "illumination": [
        ("gamma 2", _identity, gamma(2.0)),
        ("gain 0.4", _identity, lambda g: (g * 0.4).astype(np.uint8)),
        ("gamma 0.5 + rot", lambda w, h: similarity(w, h, 20, 0.9), gamma(0.5)),
    ],
    "blur+jpeg": [
        (
            "blur 2",
            lambda w, h: similarity(w, h, 10, 0.9),
            lambda g: cv2.GaussianBlur(g, (0, 0), 2.0),
        ),
        ("jpeg 20", lambda w, h: similarity(w, h, 10, 0.9), lambda g: jpeg(g, 20)),
        (
            "blur 1.5 + jpeg 40",
            lambda w, h: viewpoint(w, h, 0.15),
            lambda g: jpeg(cv2.GaussianBlur(g, (0, 0), 1.5), 40),
        ),
    ],
    # the hard cases: where detectors differ most
    "hard scale": [
        (f"scale {s}", lambda w, h, s=s: similarity(w, h, 10, s), None) for s in (0.33, 2.8)
    ],
    "hard viewpoint": [
        ("view 0.33", lambda w, h: viewpoint(w, h, 0.33), None),
        (
            "view 0.25 + rot 30",
            lambda w, h: viewpoint(w, h, 0.25) @ similarity(w, h, 30, 0.9),
            None,
        ),
    ],
    "dark": [
        ("gamma 2.5 + noise 2", lambda w, h: similarity(w, h, 5, 0.95), dark_noisy(2.5, 2.0, 1)),
        (
            "gain 0.2 + noise 1",
            _identity,
            lambda g: np.clip(
                g * 0.2 + np.random.default_rng(2).normal(0, 1.0, g.shape), 0, 255
            ).astype(np.uint8),
        ),
    ],
}


def gray_photo(name):
    img = getattr(skimage.data, name)()
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img


# ---- extractors: uint8 grey image -> visiontk.Features -------------------------------------

OPENCV_SIFT = cv2.SIFT_create()


def extract_opencv(gray):
    kps, desc = OPENCV_SIFT.detectAndCompute(gray, None)
    return visiontk.Features.from_keypoints(kps, desc, gray.shape)


def visiontk_extractor(**options):
    return lambda gray: visiontk.sift(gray, device="cpu", **options)


def pycolmap_extractor():
    """COLMAP's SIFT with its defaults; keypoints moved to OpenCV's pixel-centre origin and
    descriptors quantised as COLMAP stores them (×512, saturated to uint8)."""
    import pycolmap

    extractor = pycolmap.Sift()

    def extract(gray):
        kp, desc = extractor.extract(np.ascontiguousarray(gray, np.float32) / 255.0)
        n = len(kp)
        return visiontk.Features(
            xy=(kp[:, :2] - 0.5).astype(np.float32),
            size=kp[:, 2].astype(np.float32) * 2,
            angle=np.degrees(kp[:, 3]).astype(np.float32) % 360,
            response=np.zeros(n, np.float32),
            octave=np.zeros(n, np.int32),
            descriptors=np.clip(np.rint(desc * 512), 0, 255).astype(np.uint8),
            image_size=gray.shape,
        )

    return extract


# ---- scores ----------------------------------------------------------------------------------


def project(H, xy):
    if len(xy) == 0:
        return np.zeros((0, 2))
    return cv2.perspectiveTransform(xy.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2)


def inside(xy, w, h):
    return (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)


def repeatability(fa, fb, H, size_a, size_b, eps=3.0):
    (ha, wa), (hb, wb) = size_a, size_b
    a = np.unique(fa.xy, axis=0)
    b = np.unique(fb.xy, axis=0)
    pa = project(H, a)
    a_vis = inside(pa, wb, hb)
    b_vis = inside(project(np.linalg.inv(H), b), wa, ha)
    denom = min(a_vis.sum(), b_vis.sum())
    if denom == 0:
        return 0.0
    d, _ = cKDTree(b[b_vis]).query(pa[a_vis])
    return float(min((d <= eps).sum(), denom) / denom)


def score_pair(fa, fb, H, size_a, size_b):
    h, w = size_b
    nn = visiontk.match(fa, fb, ratio=1.0, mutual=True, device="cpu")
    mma1 = 0.0
    if len(nn):
        err = np.linalg.norm(project(H, fa.xy[nn.pairs[:, 0]]) - fb.xy[nn.pairs[:, 1]], axis=1)
        mma1 = float(np.mean(err <= 1))
    m = visiontk.match(fa, fb, ratio=RATIO, mutual=True, device="cpu")
    a, b = fa.xy[m.pairs[:, 0]], fb.xy[m.pairs[:, 1]]
    correct3 = int((np.linalg.norm(project(H, a) - b, axis=1) <= 3).sum()) if len(m) else 0
    # every model counts, however few its inliers: the bench scores detectors, not a policy
    g = estimate_homography(a, b, min_inliers=0)
    cerr = np.inf if g.model is None else corner_error(g.model, H, w, h, visible=True)
    return {
        "mma1": mma1,
        "correct3": correct3,
        "rep": repeatability(fa, fb, H, size_a, size_b),
        "h1": float(cerr <= 1),
        "h3": float(cerr <= 3),
        "kp": (len(fa) + len(fb)) / 2,
    }


def mosaic(k, photos=PHOTOS, side=512):
    """A large sharp image: nine of the photos (from the ``3k``-th on) at side × side, 3 × 3.
    At 1536 × 1536 it holds more extrema than the 8192 both COLMAP and visiontk keep, as a
    photograph of a few megapixels does: how the cap chooses then shows."""
    tiles = [
        cv2.resize(
            gray_photo(photos[(3 * k + i) % len(photos)]),
            (side, side),
            interpolation=cv2.INTER_AREA,
        )
        for i in range(9)
    ]
    return np.vstack([np.hstack(tiles[r : r + 3]) for r in range(0, 9, 3)])


MOSAICS = 4


def warped_pairs(photos, categories=None, image=None):
    """Yield (category, photo, warp name, image a, image b, homography a->b); ``image`` turns
    a name of ``photos`` into the grey image (default: :func:`gray_photo`)."""
    for category, warps in WARPS.items():
        if categories and category not in categories:
            continue
        for photo in photos:
            gray = (image or gray_photo)(photo)
            h, w = gray.shape
            for name, make_h, change in warps:
                H = make_h(w, h)
                warped = cv2.warpPerspective(gray, H, (w, h), flags=cv2.INTER_LINEAR)
                if change is not None:
                    warped = change(warped)
                yield category, photo, name, gray, warped, H


def stereo_pair():
    """The motorcycle pair (rectified, Middlebury 2014) and its left disparity (inf: unknown)."""
    left, right, disparity = skimage.data.stereo_motorcycle()
    return (
        cv2.cvtColor(left, cv2.COLOR_RGB2GRAY),
        cv2.cvtColor(right, cv2.COLOR_RGB2GRAY),
        disparity,
    )


def score_stereo(fl, fr, disparity, tolerance=1.0):
    """Precision and count of matches within ``tolerance`` px of the truth: left (x, y) is
    right (x − d(x, y), y); matches at pixels of unknown disparity are not counted."""
    m = visiontk.match(fl, fr, ratio=RATIO, mutual=True, device="cpu")
    a, b = fl.xy[m.pairs[:, 0]], fr.xy[m.pairs[:, 1]]
    h, w = disparity.shape
    col = np.clip(np.rint(a[:, 0]).astype(int), 0, w - 1)
    row = np.clip(np.rint(a[:, 1]).astype(int), 0, h - 1)
    d = disparity[row, col]
    known = np.isfinite(d)
    err = np.hypot(b[known, 0] - (a[known, 0] - d[known]), b[known, 1] - a[known, 1])
    correct = int((err <= tolerance).sum())
    return {
        "precision1": correct / max(int(known.sum()), 1),
        "correct1": correct,
        "matches": int(known.sum()),
    }
