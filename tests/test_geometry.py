"""Robust homography and fundamental matrix on synthetic correspondences with outliers."""

import cv2
import numpy as np

import visiontk


def test_homography_with_outliers():
    rng = np.random.default_rng(3)
    H = np.array([[0.9, -0.2, 30], [0.15, 1.1, -12], [1e-4, -5e-5, 1]])
    a = rng.uniform(0, 500, (300, 2))
    b = cv2.perspectiveTransform(a.reshape(-1, 1, 2), H).reshape(-1, 2)
    b += rng.normal(0, 0.3, b.shape)
    outliers = rng.random(300) < 0.3
    b[outliers] = rng.uniform(0, 500, (outliers.sum(), 2))
    g = visiontk.estimate_homography(a, b)
    assert g.kind == "homography"
    np.testing.assert_allclose(g.model / g.model[2, 2], H, rtol=0.02, atol=0.5)
    assert (g.inliers == ~outliers).mean() > 0.97


def test_fundamental_with_outliers():
    rng = np.random.default_rng(4)
    X = np.c_[rng.uniform(-2, 2, (300, 2)), rng.uniform(4, 8, 300)]
    K = np.array([[500, 0, 320], [0, 500, 240], [0, 0, 1]])
    R, _ = cv2.Rodrigues(np.array([0.05, -0.2, 0.03]))
    t = np.array([1.0, 0.1, 0.05])
    xa = (K @ X.T).T
    xb = (K @ (R @ X.T + t[:, None])).T
    a, b = xa[:, :2] / xa[:, 2:], xb[:, :2] / xb[:, 2:]
    outliers = rng.random(300) < 0.25
    b[outliers] += rng.uniform(-60, 60, (outliers.sum(), 2))
    g = visiontk.estimate_fundamental(a, b)
    F = g.model
    err = np.abs(np.sum(np.c_[b, np.ones(300)] * (F @ np.c_[a, np.ones(300)].T).T, axis=1))
    line = F @ np.c_[a, np.ones(300)].T
    dist = err / np.linalg.norm(line[:2].T, axis=1)
    assert np.median(dist[~outliers]) < 0.5
    assert (g.inliers[outliers]).mean() < 0.1 and g.inliers[~outliers].mean() > 0.9


def test_too_few_points_is_a_result_not_a_crash():
    g = visiontk.estimate_homography(np.zeros((3, 2)), np.zeros((3, 2)))
    assert g.model is None and g.n_inliers == 0
