"""GPU (CuPy) path against the CPU path: kernels against their xp definitions, and whole
extraction and matching on the sample images. Skipped, with the reason, where no GPU exists."""

import numpy as np
import pytest

import visiontk
from visiontk import backend

USABLE, WHY = backend.cuda_status()
pytestmark = pytest.mark.skipif(not USABLE, reason=f"no GPU for the CUDA tests: {WHY}")


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


@pytest.fixture(scope="module")
def octave_on_gpu(cp, coffee):
    import cv2

    from visiontk.sift.detect import find_candidates, refine_extrema
    from visiontk.sift.orient import orientation_scale
    from visiontk.sift.scale_space import scale_space

    gray = cp.asarray(cv2.cvtColor(coffee, cv2.COLOR_RGB2GRAY).astype(np.float32))
    octave = scale_space(gray, sigma=1.6, n_octave_layers=3, upsample=True, xp=cp)[1]
    ext = refine_extrema(octave.gaussians, *find_candidates(octave, 1.7, cp), n_octave_layers=3,
                         contrast_threshold=0.04, edge_threshold=10, xp=cp)
    return octave, ext, orientation_scale(1.6, 3, ext.layer, ext.offset_layer, cp)


def test_cuda_candidates_equal_xp_definition(cp, octave_on_gpu):
    from visiontk.sift import XpKernels, _gpu_kernels

    octave, _, _ = octave_on_gpu
    ours = cp.stack(_gpu_kernels.find_candidates(octave, 1.7)).get()
    ref = cp.stack(XpKernels.find_candidates(octave, 1.7, cp)).get()
    assert ref.shape[1] > 100
    np.testing.assert_array_equal(ours, ref)


def test_cuda_orientation_histograms_match_xp_definition(cp, octave_on_gpu):
    from visiontk.sift import XpKernels, _gpu_kernels

    octave, ext, scale = octave_on_gpu
    args = (octave.gaussians, ext.layer, ext.row, ext.col, scale)
    ours = _gpu_kernels.raw_orientation_histograms(*args).get()
    ref = XpKernels.raw_orientation_histograms(*args, cp).get()
    np.testing.assert_allclose(ours.sum(axis=1), ref.sum(axis=1), rtol=1e-4)
    assert np.abs(ours - ref).sum() / ref.sum() < 2e-3


def test_cuda_descriptors_match_xp_definition(cp, octave_on_gpu):
    from visiontk.sift import XpKernels, _gpu_kernels
    from visiontk.sift.describe import quantize_descriptors

    octave, ext, scale = octave_on_gpu
    direction = cp.asarray(np.random.default_rng(1).uniform(0, 360, len(ext)), cp.float32)
    args = (octave.gaussians, ext.layer, ext.col + ext.offset_col, ext.row + ext.offset_row,
            direction, scale)
    ours = quantize_descriptors(_gpu_kernels.raw_descriptors(*args), cp).get().astype(float)
    ref = quantize_descriptors(XpKernels.raw_descriptors(*args, cp), cp).get().astype(float)
    dist = np.linalg.norm(ours - ref, axis=1)
    assert np.median(dist) < 1.5 and dist.max() < 12


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png", "motorcycle_left.png"])
def test_gpu_sift_equals_cpu_sift(samples, name):
    cpu = visiontk.sift(samples / name, device="cpu")
    gpu = visiontk.sift(samples / name, device="cuda")
    assert abs(len(cpu) - len(gpu)) <= 0.01 * len(cpu)
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(gpu.xy).query(cpu.xy)
    same = dist < 0.05
    assert same.mean() > 0.98
    np.testing.assert_array_equal(cpu.octave_number[same], gpu.octave_number[idx[same]])
    np.testing.assert_array_equal(cpu.layer[same], gpu.layer[idx[same]])
    angle = np.abs((cpu.angle[same] - gpu.angle[idx[same]] + 180) % 360 - 180)
    assert np.mean(angle < 0.5) > 0.98
    d = np.linalg.norm(cpu.descriptors[same].astype(float)
                       - gpu.descriptors[idx[same]], axis=1)
    assert np.median(d) < 3


def test_gpu_matching_equals_cpu_matching(samples):
    a = visiontk.sift(samples / "motorcycle_left.png", device="cpu")
    b = visiontk.sift(samples / "motorcycle_right.png", device="cpu")
    on_cpu = visiontk.match(a, b, device="cpu")
    on_gpu = visiontk.match(a, b, device="cuda")
    np.testing.assert_array_equal(on_cpu.pairs, on_gpu.pairs)
    np.testing.assert_allclose(on_cpu.distances, on_gpu.distances, rtol=1e-5)


def test_batch_on_gpu_equals_single_images(samples):
    names = ["astronaut.png", "coffee.png", "coffee_warped.png"]
    batch = visiontk.sift_batch([samples / n for n in names], device="cuda")
    for n, feats in zip(names, batch, strict=True):
        single = visiontk.sift(samples / n, device="cuda")
        np.testing.assert_array_equal(feats.xy, single.xy)
