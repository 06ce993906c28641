"""The accurate preset's contrast threshold, on a real rectified stereo pair with ground truth
(Middlebury's motorcycle, shipped with scikit-image): the faint keypoints it keeps below
COLMAP's peak threshold are surface texture, matched more precisely than the rest."""

import cv2
import numpy as np
import pytest
import skimage.data

import visiontk


@pytest.fixture(scope="module")
def motorcycle():
    left, right, disparity = skimage.data.stereo_motorcycle()
    gray = [cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) for img in (left, right)]
    return gray[0], gray[1], disparity


def within_one_pixel(left, right, disparity, **options):
    """Matches (mutual, ratio 0.8) at pixels of known disparity, and which of them land
    within 1 px of where the disparity puts them."""
    fl = visiontk.sift(left, device="cpu", **options)
    fr = visiontk.sift(right, device="cpu", **options)
    m = visiontk.match(fl, fr, ratio=0.8, device="cpu")
    a, b = fl.xy[m.pairs[:, 0]], fr.xy[m.pairs[:, 1]]
    h, w = disparity.shape
    d = disparity[
        np.clip(np.rint(a[:, 1]).astype(int), 0, h - 1),
        np.clip(np.rint(a[:, 0]).astype(int), 0, w - 1),
    ]
    known = np.isfinite(d)
    err = np.hypot(b[known, 0] - (a[known, 0] - d[known]), b[known, 1] - a[known, 1])
    return err <= 1.0


def test_default_threshold_adds_correct_matches_without_losing_precision(motorcycle):
    default = within_one_pixel(*motorcycle)
    colmaps = within_one_pixel(*motorcycle, contrast_threshold=0.02)
    assert default.sum() > 1.05 * colmaps.sum()
    assert default.mean() >= colmaps.mean()
    assert default.mean() > 0.8  # and most matches are right at all
