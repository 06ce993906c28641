"""Scoring a model against known cameras: similarity alignment and pose errors.

A reconstruction is known up to a similarity (scale, rotation, translation), so its camera
centres are aligned to the true ones first (Umeyama's least squares), then each registered
image's rotation and centre are compared with the truth.
"""

from __future__ import annotations

import numpy as np


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``s, R, t`` minimising Σ‖dst − (s R src + t)‖² (Umeyama 1991); ``src``, ``dst``: N×3,
    N ≥ 3 points not on one line."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / (a**2).sum(1).mean())
    return s, R, mu_d - s * R @ mu_s


def pose_errors(poses: dict, truth: dict) -> dict:
    """Errors of estimated world-to-camera poses against the truth, after aligning the camera
    centres. ``poses`` and ``truth``: name -> (R, t). Returns per-image ``rotation_deg`` and
    ``centre`` errors (the truth's units) and their medians; images missing from ``poses``
    are listed in ``missing``."""
    names = [n for n in truth if n in poses]
    if len(names) < 3:
        raise ValueError(f"need at least 3 registered images to align, got {len(names)}")
    est = np.array([_centre(*poses[n]) for n in names])
    true = np.array([_centre(*truth[n]) for n in names])
    s, R, t = similarity(est, true)
    rotation, centre = {}, {}
    for n, c_est, c_true in zip(names, est, true, strict=True):
        R_est = poses[n][0] @ R.T  # the estimated camera's rotation in the true frame
        cos = (np.trace(R_est.T @ truth[n][0]) - 1) / 2
        rotation[n] = float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
        centre[n] = float(np.linalg.norm(s * R @ c_est + t - c_true))
    return {
        "rotation_deg": rotation,
        "centre": centre,
        "median_rotation_deg": float(np.median(list(rotation.values()))),
        "median_centre": float(np.median(list(centre.values()))),
        "max_rotation_deg": float(max(rotation.values())),
        "missing": sorted(set(truth) - set(poses)),
    }


def model_poses(model) -> dict:
    """name -> (R, t) world-to-camera of a pycolmap Reconstruction's registered images."""
    poses = {}
    for image_id in model.reg_image_ids():
        image = model.image(image_id)
        pose = image.cam_from_world()
        poses[image.name] = (pose.rotation.matrix(), np.asarray(pose.translation))
    return poses


def _centre(R, t) -> np.ndarray:
    return -np.asarray(R).T @ np.asarray(t)
