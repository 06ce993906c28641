"""Known warps of real photos: the homography estimated from matches is within 1 px."""

import cv2
import numpy as np
import pytest

import visiontk
from visiontk.geometry import corner_error


def similarity(w, h, angle_deg, scale):
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, scale)
    return np.vstack([m, [0, 0, 1]])


def perspective(w, h):
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[0.1 * w, 0.05 * h], [0.92 * w, 0], [w, h], [0.02 * w, 0.9 * h]])
    return cv2.getPerspectiveTransform(src, dst)


WARPS = {
    "rotation 35°": lambda w, h: similarity(w, h, 35, 1.0),
    "scale 0.5": lambda w, h: similarity(w, h, 0, 0.5),
    "scale 2": lambda w, h: similarity(w, h, 10, 2.0),
    "perspective": perspective,
    "illumination": lambda w, h: np.eye(3),
    "blur": lambda w, h: np.eye(3),
}


def photometric(kind, img):
    if kind == "illumination":
        return np.clip(255 * (img / 255.0) ** 1.8 * 0.8 + 10, 0, 255).astype(np.uint8)
    if kind == "blur":
        return cv2.GaussianBlur(img, (0, 0), 2.0)
    return img


@pytest.mark.parametrize("kind", list(WARPS))
@pytest.mark.parametrize("photo", ["astronaut", "coffee"])
def test_homography_recovered_under_warp(kind, photo, request):
    img = request.getfixturevalue(photo)
    h, w = img.shape[:2]
    H = WARPS[kind](w, h)
    warped = photometric(kind, cv2.warpPerspective(img, H, (w, h), flags=cv2.INTER_LINEAR))
    r = visiontk.match_images(img, warped)
    assert r.geometry.model is not None
    assert r.geometry.n_inliers >= 30
    assert corner_error(r.geometry.model, H, w, h, visible=True) < 1.0
