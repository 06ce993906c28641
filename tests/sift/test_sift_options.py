"""Each SIFT option changes what it should."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

import visiontk
from visiontk.errors import ImageError, OptionError


@pytest.fixture(scope="module")
def base(astronaut):
    return visiontk.sift(astronaut)


def test_upright_gives_angle_zero_and_one_keypoint_per_extremum(astronaut, base):
    up = visiontk.sift(astronaut, upright=True)
    assert np.all(up.angle == 0)
    # without orientations, the extra keypoints made by secondary peaks disappear
    assert len(up) < len(base)
    assert len(np.unique(up.xy, axis=0)) == len(up)


def test_max_features_keeps_the_strongest(astronaut, base):
    capped = visiontk.sift(astronaut, max_features=100, keep="strongest")
    assert len(capped) == 100
    np.testing.assert_allclose(capped.response, base.response[:100])
    np.testing.assert_array_equal(capped.descriptors, base.descriptors[:100])


def test_keep_largest_is_colmaps_rule(astronaut, base):
    """COLMAP's cap: whole detection levels (octave, layer), coarsest first, up to and
    including the one that passes max_features, each detection with all its orientations
    (up to max_orientations)."""
    every = visiontk.sift(astronaut, max_features=0)
    capped = visiontk.sift(astronaut, max_features=300, keep="largest")

    def levels(f):  # (octave, layer) as one number, coarser is larger
        octave = (f.octave & 255).astype(np.int8).astype(int)
        return octave * 100 + ((f.octave >> 8) & 255)

    detections = np.unique(capped.xy, axis=0)
    finest = levels(capped).min()
    every_levels = levels(every)
    locations = {tuple(p) for p in every.xy[every_levels >= finest].tolist()}
    above = {tuple(p) for p in every.xy[every_levels > finest].tolist()}
    assert len(above) <= 300 < len(detections) == len(locations)  # the crossing level, whole
    assert {tuple(p) for p in detections.tolist()} == locations
    assert len(detections) < len(capped) <= 2 * len(detections)  # orientations kept
    assert np.all(np.diff(capped.response) <= 0)  # still ordered by response
    # every kept keypoint is one of the uncapped run's, descriptor and all
    index = {
        (*p, round(float(a), 3)): i
        for i, (p, a) in enumerate(zip(every.xy.tolist(), every.angle, strict=True))
    }
    same = [
        index[(*p, round(float(a), 3))]
        for p, a in zip(capped.xy.tolist(), capped.angle, strict=True)
    ]
    np.testing.assert_array_equal(capped.descriptors, every.descriptors[same])
    # the accurate preset's cap is this rule
    np.testing.assert_array_equal(visiontk.sift(astronaut, max_features=300).xy, capped.xy)


def test_mask_excludes_keypoints(astronaut, base):
    mask = np.zeros(astronaut.shape[:2], np.uint8)
    mask[:, :256] = 1
    left = visiontk.sift(astronaut, mask=mask)
    assert 0 < len(left) < len(base)
    assert np.all(left.xy[:, 0] < 256)
    expected = base.subset(np.floor(base.xy[:, 0] + 0.5) < 256)
    assert abs(len(left) - len(expected)) <= 2


def test_rootsift_descriptors_are_hellinger_normalised(astronaut):
    root = visiontk.sift(astronaut, preset="opencv", rootsift=True, max_features=200)
    base = visiontk.sift(astronaut, preset="opencv", max_features=200)
    v = root.descriptors.astype(float) / 512
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=0.03)
    plain = base.descriptors[:200].astype(float)
    # RootSIFT squared is the L1-normalised SIFT vector (up to byte rounding of both).
    l1 = plain / plain.sum(axis=1, keepdims=True)
    assert np.abs(v**2 - l1).max() < 0.005
    assert not np.array_equal(root.descriptors, base.descriptors[:200])


def test_thresholds_layers_sigma_and_upsample_change_detection(astronaut, base):
    assert len(visiontk.sift(astronaut, contrast_threshold=0.08)) < 0.7 * len(base)
    assert len(visiontk.sift(astronaut, edge_threshold=3)) < len(base)
    assert len(visiontk.sift(astronaut, n_octave_layers=5)) > len(base)
    assert len(visiontk.sift(astronaut, sigma=2.4)) < len(base)
    no_up = visiontk.sift(astronaut, upsample=False)
    assert no_up.octave_number.min() == 0 and base.octave_number.min() == -1
    assert len(no_up) < len(base)


def test_the_default_is_the_accurate_preset_and_options_override_a_preset(astronaut, base):
    accurate = visiontk.sift(astronaut, preset="accurate")
    np.testing.assert_array_equal(accurate.descriptors, base.descriptors)
    opencv = visiontk.sift(astronaut, preset="opencv")
    # half the contrast threshold and VLFeat's localisation: many more keypoints
    assert len(base) > 1.3 * len(opencv)
    # an explicit option wins over the preset's value, the rest stay the preset's
    strict = visiontk.sift(astronaut, preset="accurate", contrast_threshold=0.04)
    assert len(opencv) < len(strict) < len(base)
    assert visiontk.SiftOptions(preset="opencv", rootsift=True).refinement == "opencv"


def test_tolerant_refinement_keeps_extrema_opencv_drops(astronaut):
    opencv = visiontk.sift(astronaut, preset="opencv")
    tolerant = visiontk.sift(astronaut, preset="opencv", refinement="tolerant")
    assert len(tolerant) > 1.1 * len(opencv)
    # and the ones both keep sit where OpenCV's refinement puts them
    d, _ = cKDTree(tolerant.xy).query(opencv.xy)
    assert np.median(d) < 1e-3


def test_max_orientations_keeps_the_highest_peaks(astronaut):
    every = visiontk.sift(astronaut, preset="opencv", max_orientations=0)
    one = visiontk.sift(astronaut, preset="opencv", max_orientations=1)
    two = visiontk.sift(astronaut, preset="opencv", max_orientations=2)
    assert len(one) < len(two) < len(every)
    assert len(np.unique(one.xy, axis=0)) == len(one)
    # each keypoint's one orientation is its strongest: present among all of its peaks
    _, places = np.unique(every.xy, axis=0, return_inverse=True)
    assert len(np.unique(places)) == len(one)


def test_vlfeat_orientation_smoothing_moves_angles_a_little(astronaut):
    opencv = visiontk.sift(astronaut, preset="opencv", upright=False, max_features=300)
    box = visiontk.sift(
        astronaut, preset="opencv", orientation_smoothing="vlfeat", max_features=300
    )
    tree = cKDTree(np.c_[box.xy, box.angle / 100])
    d, _ = tree.query(np.c_[opencv.xy, opencv.angle / 100])
    assert 0.3 < np.mean(d < 0.02) < 1.0  # most angles within 2°, not all identical


def test_flat_image_gives_no_features():
    feats = visiontk.sift(np.full((64, 80), 128, np.uint8))
    assert len(feats) == 0 and feats.descriptors.shape == (0, 128)
    assert feats.image_size == (64, 80)


@pytest.mark.parametrize(
    "options",
    [
        {"max_features": -1},
        {"n_octave_layers": 0},
        {"contrast_threshold": "high"},
        {"edge_threshold": 0},
        {"sigma": float("nan")},
        {"upright": "yes"},
        {"colour": True},
        {"preset": "fast"},
        {"refinement": "lowe"},
        {"max_orientations": -1},
        {"orientation_smoothing": "box"},
        {"subpixel_window": 1},
        {"keep": "random"},
    ],
)
def test_bad_options_are_one_line_errors(astronaut, options):
    with pytest.raises(OptionError) as info:
        visiontk.sift(astronaut, **options)
    assert "\n" not in str(info.value)
    assert any(name in str(info.value) for name in options)


def test_input_types_agree(astronaut):
    u8 = astronaut
    u16 = astronaut.astype(np.uint16) * 257
    f = astronaut.astype(np.float32) / 255
    ref = visiontk.sift(u8, max_features=300)
    for other in (u16, f):
        got = visiontk.sift(other, max_features=300)
        np.testing.assert_allclose(got.xy, ref.xy, atol=1e-3)


@pytest.mark.skipif(visiontk.devices.cuda_status()[0], reason="a GPU is present")
def test_device_cuda_without_gpu_says_what_is_missing(astronaut):
    expected = (
        "visiontk\\[cuda12\\]"
        if importlib.util.find_spec("cupy") is None
        else "no usable NVIDIA GPU|no NVIDIA GPU"
    )
    with pytest.raises(visiontk.VisiontkError, match=f"device 'cuda': .*({expected})"):
        visiontk.sift(astronaut, device="cuda")
    # auto falls back to the CPU quietly
    assert len(visiontk.sift(astronaut, device="auto", max_features=10, keep="strongest")) == 10


@pytest.mark.skipif(visiontk.devices.cuda_status()[0], reason="a GPU is present")
def test_auto_falls_back_to_the_cpu_with_or_without_driver_files(monkeypatch):
    """``auto`` skips CuPy where Linux shows no NVIDIA driver, and asks CuPy (which finds no
    usable GPU here) where it does: the CPU both ways; an explicit ``cuda`` always asks."""
    from visiontk import devices

    for present in (False, True):
        monkeypatch.setattr(devices, "nvidia_driver_present", lambda present=present: present)
        assert devices.resolve_device("auto") == "cpu"
        with pytest.raises(visiontk.VisiontkError, match="device 'cuda': "):
            devices.resolve_device("cuda")


def test_the_implementation_is_importable_by_its_path():
    """visiontk.sift is the function; every module of its implementation imports by path."""
    import importlib

    for name in (
        "api",
        "batch",
        "options",
        "backends",
        "extraction",
        "scale_space",
        "detect",
        "orient",
        "describe",
        "constants",
    ):
        module = importlib.import_module(f"visiontk._sift.{name}")
        assert module.__name__ == f"visiontk._sift.{name}"
    import visiontk._sift.scale_space as scale_space

    assert scale_space.UPSAMPLE_SHIFT == -0.25 and callable(visiontk.sift)
    assert visiontk.sift is importlib.import_module("visiontk._sift.api").sift


def test_sift_batch_equals_single_calls(samples):
    paths = [samples / "astronaut.png", samples / "coffee.png"]
    batch = visiontk.sift_batch(paths, max_features=300)
    assert len(batch) == 2
    for p, feats in zip(paths, batch, strict=True):
        np.testing.assert_array_equal(feats.xy, visiontk.sift(p, max_features=300).xy)
    assert visiontk.sift_batch([]) == []


def test_iter_sift_reports_a_bad_image_and_goes_on(samples, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    paths = [samples / "coffee.png", broken, tmp_path / "missing.png", samples / "astronaut.png"]
    got = list(visiontk.iter_sift(paths, max_features=200))
    assert [p for p, _ in got] == paths
    assert isinstance(got[1][1], ImageError) and "broken.png" in str(got[1][1])
    assert isinstance(got[2][1], ImageError) and "missing.png" in str(got[2][1])
    for path, feats in (got[0], got[3]):
        np.testing.assert_array_equal(feats.xy, visiontk.sift(path, max_features=200).xy)
    with pytest.raises(ImageError, match=r"broken\.png"):
        visiontk.sift_batch(paths)


@pytest.mark.parametrize(
    "images", ["sample_images/", Path("sample_images"), np.zeros((64, 64), np.uint8)]
)
def test_iter_sift_refuses_one_path_or_array_instead_of_a_list(images):
    """A folder's name was iterated character by character ("s", "a", ...: 14 bad images),
    an array row by row."""
    with pytest.raises(OptionError, match="iter_sift takes a list of images"):
        visiontk.iter_sift(images)


def test_iter_sift_refuses_bad_options_at_the_call(samples):
    with pytest.raises(OptionError, match="max_features"):
        visiontk.iter_sift([samples / "coffee.png"], max_features=-1)


def test_sift_batch_refuses_unknown_options_in_one_line(samples):
    with pytest.raises(OptionError, match="colour"):
        visiontk.sift_batch([samples / "coffee.png"], colour=True)


def test_n_octaves_drops_the_coarsest_keypoints_only(astronaut):
    """A cap of n octaves keeps exactly the keypoints of octaves −1 … n−2, same bytes."""
    every = visiontk.sift(astronaut, n_octaves=0, max_features=0)
    octave = (every.octave & 255).astype(np.int8)
    assert octave.max() >= 3  # a 512² image has octaves past the cap below
    capped = visiontk.sift(astronaut, n_octaves=3, max_features=0)
    fine = every.subset(octave <= 1)
    assert len(capped) == len(fine) < len(every)
    np.testing.assert_array_equal(capped.xy, fine.xy)
    np.testing.assert_array_equal(capped.descriptors, fine.descriptors)
    assert visiontk.SiftOptions().n_octaves == 4
    with pytest.raises(OptionError, match="n_octaves"):
        visiontk.SiftOptions(n_octaves=-1)


def test_largest_skips_the_octaves_its_cap_drops_and_keeps_the_same_keypoints(astronaut):
    """Under COLMAP's cap the finer octaves are not searched once the coarser ones pass it;
    the keypoints are those of searching every octave (a mask turns the skipping off)."""
    from visiontk._sift import backends, extraction
    from visiontk._sift.options import SiftOptions

    capped = visiontk.sift(astronaut, max_features=300, keep="largest")
    searched = visiontk.sift(
        astronaut, max_features=300, keep="largest", mask=np.ones(astronaut.shape[:2], bool)
    )
    np.testing.assert_array_equal(capped.xy, searched.xy)
    np.testing.assert_array_equal(capped.descriptors, searched.descriptors)
    cpu = backends.for_device("cpu")
    opts = SiftOptions(max_features=300, keep="largest")
    gray = astronaut.mean(axis=2).astype(np.float32)
    octaves = cpu.scale_space(gray, opts)
    skipped = [len(e) for e in extraction._detect(octaves, opts, cpu, None)]
    every = [len(e) for e in cpu.detect(octaves, opts)]
    assert skipped[0] == 0 < every[0] and skipped[-1] == every[-1]
