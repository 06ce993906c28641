"""Two photos in one call (visiontk.two_view.match_images): the same rules as the pipeline's
stages. Its geometry on known warps is in tests/sift/test_invariance.py."""

from __future__ import annotations

import numpy as np

import visiontk
from visiontk.pipeline import load_stage


def test_min_inliers_is_the_same_rule_for_match_images_and_verify():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 500, (10, 2))
    H = np.array([[1.0, 0.1, 5], [0, 1.1, -3], [0, 0, 1]])
    b = (np.c_[a, np.ones(10)] @ H.T)[:, :2] / (np.c_[a, np.ones(10)] @ H.T)[:, 2:]
    assert visiontk.estimate_homography(a, b).model is None  # 10 < 15
    assert visiontk.estimate_homography(a, b, min_inliers=4).n_inliers == 10
    verify = load_stage("verify").from_dict({})
    assert verify.options.min_inliers == 15
    strict = visiontk.match_images(
        "sample_images/coffee.png", "sample_images/coffee_warped.png", min_inliers=10_000
    )
    assert strict.geometry.model is None and strict.geometry.n_inliers == 0
    usual = visiontk.match_images("sample_images/coffee.png", "sample_images/coffee_warped.png")
    assert usual.geometry.n_inliers > 100
