"""Saving and loading features; the match picture."""

import os

import numpy as np
import pytest

import visiontk
from visiontk.errors import FeaturesFileError
from visiontk.viz import draw_matches, save_image


def test_save_load_roundtrip(tmp_path, astronaut):
    f = visiontk.sift(astronaut, max_features=150)
    path = f.save(tmp_path / "a.npz")
    g = visiontk.Features.load(path)
    for name in ("xy", "size", "angle", "response", "octave", "descriptors"):
        np.testing.assert_array_equal(getattr(f, name), getattr(g, name))
    assert g.image_size == (512, 512)
    assert [p.name for p in path.parent.iterdir()] == ["a.npz"]  # no temporary left behind


def test_load_bad_file(tmp_path):
    p = tmp_path / "x.npz"
    p.write_bytes(b"garbage")
    with pytest.raises(FeaturesFileError, match=r"x\.npz"):
        visiontk.Features.load(p)


def test_draw_matches_draws_lines_between_the_points(tmp_path):
    a = np.zeros((100, 120, 3), np.uint8)
    b = np.zeros((80, 100, 3), np.uint8)
    xy_a = np.array([[10.0, 50.0]])
    xy_b = np.array([[90.0, 50.0]])
    pic = draw_matches(a, b, xy_a, xy_b, title=None)
    assert pic.shape == (100, 220, 3)
    # the line from (10, 50) to (120 + 90, 50) crosses the whole canvas at row 50
    assert pic[50, 15:205].max(axis=1).min() > 50
    assert pic[20].max() == 0 and pic[90, :120].max() == 0
    assert pic[90, 120:].min() == 255  # below the shorter image: white padding
    out = save_image(tmp_path / "m.png", pic)
    import cv2

    assert cv2.imread(str(out)).shape == pic.shape


def test_outliers_drawn_red():
    a = np.zeros((60, 60, 3), np.uint8)
    pic = draw_matches(
        a, a, np.array([[5.0, 30.0]]), np.array([[50.0, 30.0]]), inliers=np.array([False])
    )
    r, g, _ = pic[30, 20:80].astype(int).max(axis=0)
    assert r > 100 and g < 60


def test_matches_convert_to_cv2_dmatches(astronaut):
    import cv2

    a = visiontk.sift(astronaut, max_features=300)
    rotated = cv2.rotate(astronaut, cv2.ROTATE_90_CLOCKWISE)
    b = visiontk.sift(rotated, max_features=300)
    m = visiontk.match(a, b)
    dm = m.to_dmatches()
    assert len(dm) == len(m) > 50
    assert [[d.queryIdx, d.trainIdx] for d in dm] == m.pairs.tolist()
    drawn = cv2.drawMatches(astronaut, a.to_keypoints(), rotated, b.to_keypoints(), dm, None)
    assert drawn.shape[1] == astronaut.shape[1] + rotated.shape[1]


def test_keypoint_agreement_sees_moved_turned_and_changed_keypoints(astronaut):
    import dataclasses

    from visiontk.testing.agreement import keypoint_agreement

    ref = visiontk.sift(astronaut, preset="opencv", max_features=400)
    same = keypoint_agreement(ref, ref)
    assert same["same"] == 1.0 and same["octave_layer_equal"]
    assert same["angle_within_0.5"] == 1.0 and same["descriptor_l2_median"] == 0.0

    moved = ref.xy.copy()
    moved[::2] += 0.1
    assert keypoint_agreement(ref, dataclasses.replace(ref, xy=moved))["same"] == 0.5
    turned = ref.angle.copy()
    turned[:100] = (turned[:100] + 1.0) % 360
    assert (
        keypoint_agreement(ref, dataclasses.replace(ref, angle=turned))["angle_within_0.5"] == 0.75
    )
    other_layer = ref.octave.copy()
    other_layer[0] ^= 1 << 8
    assert not keypoint_agreement(ref, dataclasses.replace(ref, octave=other_layer))[
        "octave_layer_equal"
    ]
    blank = np.zeros_like(ref.descriptors)
    assert (
        keypoint_agreement(ref, dataclasses.replace(ref, descriptors=blank))["descriptor_l2_median"]
        > 100
    )


def test_picture_titles_draw_names_that_are_not_ascii():
    """OpenCV's fonts drew "café.png" as "caf??.png": the two titles gave the same pixels."""
    from visiontk.viz import draw_matches

    blank, xy = np.zeros((120, 400, 3), np.uint8), np.zeros((0, 2))
    accented, mangled, other = (
        draw_matches(blank, blank, xy, xy, title=t) for t in ("café.png", "caf??.png", "cafè.png")
    )
    assert not np.array_equal(accented, mangled)
    assert not np.array_equal(accented, other)  # é and è told apart
    assert accented[:30, :200].max() == 255  # the text is there, white on black


def test_save_into_a_folder_that_does_not_exist_is_an_error(tmp_path, astronaut):
    """A typo in a folder name used to make that folder (a test made one at the root)."""
    from visiontk.errors import VisiontkError

    feats = visiontk.sift(astronaut, max_features=20, keep="strongest")
    with pytest.raises(VisiontkError, match=r"typo does not exist"):
        feats.save(tmp_path / "typo" / "a.npz")
    assert not (tmp_path / "typo").exists()
    # a folder, a name ending in a slash (it made a file of that name), a pipe
    os.mkfifo(tmp_path / "pipe.npz")
    for target, words in (
        (tmp_path, "is a folder"),
        (f"{tmp_path}/new/", "is a folder"),
        (tmp_path / "pipe.npz", "not a regular file"),
    ):
        with pytest.raises(VisiontkError, match=words):
            feats.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.npz"]
