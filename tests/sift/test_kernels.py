"""The numba backend computes what the xp definitions compute, on the same input: loop by loop,
and for the whole of SIFT."""

import cv2
import numpy as np
import pytest

from visiontk._sift.backends import NumbaBackend, XpBackend, cpu_kernels, for_device
from visiontk._sift.detect import find_candidates, refine_extrema
from visiontk._sift.orient import orientation_scale
from visiontk._sift.scale_space import scale_space
from visiontk.testing.kernel_checks import (
    assert_descriptors_agree,
    assert_orientation_histograms_agree,
)

pytestmark = pytest.mark.skipif(cpu_kernels() is None, reason="numba is not installed")
reference = XpBackend(np)


@pytest.fixture(scope="module")
def compiled():
    return NumbaBackend(cpu_kernels())


@pytest.fixture(scope="module")
def octave_and_keypoints(coffee):
    gray = cv2.cvtColor(coffee, cv2.COLOR_RGB2GRAY).astype(np.float32)
    octave = scale_space(gray, sigma=1.6, n_octave_layers=3, upsample=True, xp=np)[1]
    layer, row, col = find_candidates(octave, 1.7, np)
    ext = refine_extrema(
        octave.gaussians,
        layer,
        row,
        col,
        n_octave_layers=3,
        contrast_threshold=0.04,
        edge_threshold=10,
        xp=np,
    )
    scale = orientation_scale(1.6, 3, ext.layer, ext.offset_layer, np)
    return octave, ext, scale


def test_the_cpu_gets_the_numba_backend(monkeypatch):
    assert for_device("cpu").name == "numba"
    monkeypatch.setenv("VISIONTK_KERNELS", "xp")
    assert for_device("cpu").name == "xp"


def test_candidates_identical(octave_and_keypoints, compiled):
    octave, _, _ = octave_and_keypoints
    ours = np.stack(compiled.candidates(octave, 1.7))
    ref = np.stack(reference.candidates(octave, 1.7))
    assert ref.shape[1] > 100
    order = np.lexsort(ours[::-1])
    np.testing.assert_array_equal(ours[:, order], ref[:, np.lexsort(ref[::-1])])


@pytest.mark.parametrize("subpixel", [False, True], ids=["pixel-centred", "subpixel"])
def test_orientation_histograms_match(octave_and_keypoints, compiled, subpixel):
    octave, ext, scale = octave_and_keypoints
    args = (octave.gaussians, ext.layer, ext.col + ext.offset_col, ext.row + ext.offset_row, scale)
    ours = compiled.raw_orientations(*args, subpixel=subpixel)
    ref = reference.raw_orientations(*args, subpixel=subpixel)
    assert ref.shape == (len(ext), 36) and ref.sum() > 0
    assert_orientation_histograms_agree(ours, ref)


@pytest.mark.parametrize("subpixel", [False, True], ids=["pixel-centred", "subpixel"])
def test_descriptors_match(octave_and_keypoints, compiled, subpixel):
    octave, ext, scale = octave_and_keypoints
    rng = np.random.default_rng(1)
    direction = rng.uniform(0, 360, len(ext)).astype(np.float32)
    x = (ext.col + ext.offset_col).astype(np.float32)
    y = (ext.row + ext.offset_row).astype(np.float32)
    args = (octave.gaussians, ext.layer, x, y, direction, scale)
    ours = compiled.raw_descriptors(*args, subpixel=subpixel)
    ref = reference.raw_descriptors(*args, subpixel=subpixel)
    assert ref.shape == (len(ext), 128) and ref.sum() > 0
    assert_descriptors_agree(ours, ref)
    if subpixel:  # the window moved: not the pixel-centred descriptors
        assert not np.allclose(ref, reference.raw_descriptors(*args), rtol=0.05)


@pytest.mark.parametrize("preset", ["opencv", "accurate"])
def test_whole_pipeline_on_xp_definitions_matches_compiled(monkeypatch, astronaut, preset):
    import visiontk

    fast = visiontk.sift(astronaut, preset=preset)
    monkeypatch.setenv("VISIONTK_KERNELS", "xp")
    slow = visiontk.sift(astronaut, preset=preset)
    assert abs(len(fast) - len(slow)) <= 0.01 * len(fast)
    tree_d, tree_i = (
        __import__("scipy.spatial", fromlist=["cKDTree"]).cKDTree(slow.xy).query(fast.xy)
    )
    close = tree_d < 1e-3
    assert close.mean() > 0.98
    dist = np.linalg.norm(
        fast.descriptors[close].astype(float) - slow.descriptors[tree_i[close]], axis=1
    )
    assert np.median(dist) < 2
