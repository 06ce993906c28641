"""visiontk's SIFT against cv2.SIFT on the same photographs."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

import visiontk
from conftest import opencv_sift


def correspondences(ours, theirs, max_px=1.0):
    """For each OpenCV keypoint, our keypoint within max_px at the same scale (±0.25 octave)
    with the closest angle; returns index pairs and angle differences."""
    tree = cKDTree(ours.xy)
    dist, idx = tree.query(theirs.xy, k=8, distance_upper_bound=max_px)
    pairs, angles = [], []
    for i in range(len(theirs)):
        best = None
        for d, j in zip(dist[i], idx[i], strict=True):
            if not np.isfinite(d):
                break
            if abs(np.log2(ours.size[j] / theirs.size[i])) > 0.25:
                continue
            a = abs((ours.angle[j] - theirs.angle[i] + 180) % 360 - 180)
            if best is None or a < best[0]:
                best = (a, j)
        if best is not None:
            pairs.append((best[1], i))
            angles.append(best[0])
    return np.array(pairs).reshape(-1, 2), np.array(angles)


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_keypoints_angles_and_descriptors_agree_with_opencv(name, request):
    rgb = request.getfixturevalue(name)
    ours = visiontk.sift(rgb, preset="opencv")
    theirs = opencv_sift(rgb)
    assert abs(len(ours) - len(theirs)) <= 0.05 * len(theirs)
    pairs, angle_diff = correspondences(ours, theirs)
    assert len(pairs) >= 0.93 * len(theirs)
    assert np.mean(angle_diff < 1.0) > 0.93
    # Descriptors of coinciding keypoints: uint8 vectors of norm ~512; OpenCV's own fixed-point
    # arithmetic versus our float32 leaves a few units of difference.
    d = np.linalg.norm(
        ours.descriptors[pairs[:, 0]].astype(float) - theirs.descriptors[pairs[:, 1]], axis=1
    )
    assert np.median(d) < 10
    assert np.percentile(d, 90) < 25
    # Same octave numbers and packed layer for coinciding keypoints.
    same_octave = ours.octave_number[pairs[:, 0]] == theirs.octave_number[pairs[:, 1]]
    assert same_octave.mean() > 0.97


def test_descriptors_cross_match_with_opencv(coffee):
    ours = visiontk.sift(coffee, preset="opencv")
    theirs = opencv_sift(coffee)
    m = visiontk.match(ours, theirs)
    assert len(m) > 0.85 * min(len(ours), len(theirs))
    offsets = np.linalg.norm(ours.xy[m.pairs[:, 0]] - theirs.xy[m.pairs[:, 1]], axis=1)
    assert np.mean(offsets < 1.0) > 0.98


def test_keypoint_fields_follow_opencv_conventions(astronaut):
    f = visiontk.sift(astronaut, preset="opencv")
    assert f.xy.dtype == np.float32 and f.xy.shape == (len(f), 2)
    assert f.descriptors.dtype == np.uint8 and f.descriptors.shape == (len(f), 128)
    assert np.all((f.angle >= 0) & (f.angle < 360))
    assert set(np.unique(f.octave_number)) <= set(range(-1, 9))
    assert np.all((f.layer >= 1) & (f.layer <= 3))
    # size is the diameter: 2 * 1.6 * 2^((layer + offset)/3) * 2^octave
    lo = 2 * 1.6 * 2.0 ** ((f.layer - 0.5) / 3) * 2.0**f.octave_number
    hi = 2 * 1.6 * 2.0 ** ((f.layer + 0.5) / 3) * 2.0**f.octave_number
    assert np.all((f.size >= lo * 0.999) & (f.size <= hi * 1.001))
    # strongest first
    assert np.all(np.diff(f.response) <= 0)
    kps = f.to_keypoints()
    back = visiontk.Features.from_keypoints(kps, f.descriptors, f.image_size)
    np.testing.assert_allclose(back.xy, f.xy)
    np.testing.assert_array_equal(back.octave, f.octave)
