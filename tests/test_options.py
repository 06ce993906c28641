"""One definition of each option, the same in the library, the command line and the pipeline:
EXIF orientation, the minimum inlier count, the image size limit, and the device."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import visiontk
from visiontk.errors import OptionError
from visiontk.pipeline import Pipeline, load_stage, option_fields
from visiontk.pipeline.store import read_features_h5


def visiontk_command() -> str:
    return str(Path(sys.executable).parent / "visiontk")


def test_exif_orientation_is_honoured_by_every_entry_point(tmp_path, coffee):
    """A phone photo stored sideways with an orientation tag: the library, `visiontk extract`
    and `visiontk run` all see it as a viewer shows it, and find the same keypoints."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    folder = tmp_path / "in"
    folder.mkdir()
    photo = folder / "phone.jpg"
    Image.fromarray(coffee).save(photo, exif=exif.tobytes(), quality=95)
    library = visiontk.sift(photo)
    assert library.image_size == (600, 400)  # turned: 400 wide, 600 high
    p = subprocess.run([visiontk_command(), "extract", str(photo), "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    extracted = visiontk.Features.load(tmp_path / "x" / "phone.jpg.npz")
    run = Pipeline.from_spec([{"name": "load"}, {"name": "sift"}]).run(folder, tmp_path / "r",
                                                                       quiet=True)
    piped = read_features_h5(run.features_path)["phone.jpg"]
    for other in (extracted, piped):
        assert other.image_size == library.image_size
        np.testing.assert_allclose(other.xy, library.xy, atol=1e-4)


def test_min_inliers_is_the_same_rule_for_match_images_and_verify():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 500, (10, 2))
    H = np.array([[1.0, 0.1, 5], [0, 1.1, -3], [0, 0, 1]])
    b = (np.c_[a, np.ones(10)] @ H.T)[:, :2] / (np.c_[a, np.ones(10)] @ H.T)[:, 2:]
    assert visiontk.estimate_homography(a, b).model is None  # 10 < 15
    assert visiontk.estimate_homography(a, b, min_inliers=4).n_inliers == 10
    verify = load_stage("verify").from_dict({})
    assert verify.options.min_inliers == 15
    strict = visiontk.match_images("sample_images/coffee.png", "sample_images/coffee_warped.png",
                                   min_inliers=10_000)
    assert strict.geometry.model is None and strict.geometry.n_inliers == 0
    usual = visiontk.match_images("sample_images/coffee.png", "sample_images/coffee_warped.png")
    assert usual.geometry.n_inliers > 100


def test_the_sift_stage_takes_only_what_sift_uses():
    names = {name for name, _, _ in option_fields(load_stage("sift"))}
    assert "max_pixels" not in names and {"max_features", "device"} <= names
    assert "max_pixels" in {name for name, _, _ in option_fields(load_stage("load"))}
    with pytest.raises(OptionError, match="max_pixels"):
        visiontk.sift("sample_images/coffee.png", max_pixels=0)


@pytest.mark.parametrize("stage", ["sift", "match", "dino-attention"])
def test_a_device_typo_fails_when_the_pipeline_is_read(stage):
    with pytest.raises(OptionError, match="one of auto, cpu, cuda"):
        Pipeline.from_spec([{"name": "load"}, {"name": "sift"}, {"name": stage,
                                                                  "device": "cdua"}])
