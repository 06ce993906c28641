"""visiontk.extract, the names plugins and stages build on: wrong input is one line, never a
deep traceback or a silent wrong answer."""

from __future__ import annotations

import numpy as np
import pytest

import visiontk
from visiontk.extract import (
    SiftOptions,
    array_module_for,
    in_original_pixels,
    sift_backend,
    sift_gray,
)
from visiontk.io import load_gray

NOT_DEVICES = [None, 123, 1.5, ["cpu"], object(), "gpu"]


@pytest.mark.parametrize("wrong", NOT_DEVICES, ids=repr)
def test_every_entry_point_refuses_what_is_not_a_device_in_one_line(wrong):
    descriptors = np.zeros((5, 128), np.uint8)
    calls = [
        lambda: sift_backend(wrong),
        lambda: array_module_for(wrong),
        lambda: visiontk.sift("sample_images/coffee.png", device=wrong),
        lambda: visiontk.match(descriptors, descriptors, device=wrong),
    ]
    for call in calls:
        with pytest.raises(visiontk.VisiontkError, match="device must be one of"):
            call()


def test_a_resolved_backend_is_used_as_it_is():
    backend = sift_backend("cpu")
    assert sift_backend(backend) is backend and array_module_for(backend) is np
    a = visiontk.sift("sample_images/coffee.png", device=backend)
    b = visiontk.sift("sample_images/coffee.png", device="cpu")
    assert np.array_equal(a.xy, b.xy) and np.array_equal(a.descriptors, b.descriptors)


@pytest.mark.parametrize(
    ("gray", "message"),
    [
        (np.zeros((3, 40, 40), np.float32), "must be H×W"),
        (np.zeros(40, np.float32), "must be H×W"),
        (np.zeros((0, 0), np.float32), "needs at least 16×16"),
        (np.zeros((1, 1), np.float32), "needs at least 16×16"),
        (np.full((40, 40), np.nan, np.float32), "NaN or infinite"),
        (np.full((40, 40), "a"), "real numbers"),
    ],
)
def test_sift_gray_refuses_what_is_not_a_grey_image(gray, message):
    with pytest.raises(visiontk.VisiontkError, match=message):
        sift_gray(gray, SiftOptions(), "cpu")


def test_sift_gray_takes_0_to_255_and_says_so_for_0_to_1():
    gray = load_gray("sample_images/coffee.png")
    assert len(sift_gray(gray, SiftOptions(), "cpu")) == len(visiontk.sift(gray / 255))
    with pytest.raises(visiontk.VisiontkError, match=r"within 0\.\.1"):
        sift_gray(gray / 255, SiftOptions(), "cpu")
    dark = np.zeros((64, 64), np.float32)  # a dark 0..255 image is not a 0..1 one
    dark[10:20, 10:20] = 1.0
    assert len(sift_gray(dark, SiftOptions(), "cpu")) == 0
    for options in ({}, None, "accurate"):
        with pytest.raises(visiontk.VisiontkError, match="SiftOptions"):
            sift_gray(gray, options, "cpu")
    with pytest.raises(visiontk.VisiontkError, match="mask has shape"):
        sift_gray(gray, SiftOptions(), "cpu", mask=np.ones((3, 3)))


def test_in_original_pixels_makes_new_features_and_checks_its_arguments():
    features = visiontk.sift("sample_images/coffee.png", max_features=20, keep="strongest")
    before = features.xy.copy(), features.size.copy(), features.image_size
    moved = in_original_pixels(features, (2.0, 3.0), (1200, 1200))
    assert moved is not features
    assert (features.xy.tolist(), features.size.tolist(), features.image_size) == (
        before[0].tolist(),
        before[1].tolist(),
        before[2],
    )
    assert np.allclose(moved.xy, (before[0] + 0.5) * [2.0, 3.0] - 0.5)
    assert np.allclose(moved.size, before[1] * np.sqrt(6.0)) and moved.image_size == (1200, 1200)
    same = in_original_pixels(features, (1.0, 1.0), features.image_size)
    assert np.array_equal(same.xy, features.xy)
    for scale, size in [((0, 0), (10, 10)), ((-1, 2), (10, 10)), (2.0, (10, 10)), ((2, 2), (5,))]:
        with pytest.raises(visiontk.VisiontkError):
            in_original_pixels(features, scale, size)


def test_match_images_timings_are_never_negative():
    result = visiontk.match_images("sample_images/coffee.png", "sample_images/coffee_warped.png")
    assert result.timings and min(result.timings.values()) >= 0
