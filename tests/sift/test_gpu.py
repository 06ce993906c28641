"""The public GPU paths on an NVIDIA GPU: ``sift(device="cuda")``, matching and batches (two
host threads, each on its own stream) against the CPU path. Skipped, with the reason, where no
GPU exists; the kernels themselves are tested in test_cuda_kernels.py (also emulated in CI)."""

import numpy as np
import pytest

import visiontk
from visiontk import devices
from visiontk.testing.agreement import keypoint_agreement

USABLE, WHY = devices.cuda_status()
pytestmark = pytest.mark.skipif(not USABLE, reason=f"no GPU for the CUDA tests: {WHY}")


def test_sift_on_cuda_equals_cpu(samples):
    cpu = visiontk.sift(samples / "astronaut.png", device="cpu")
    gpu = visiontk.sift(samples / "astronaut.png", device="cuda")
    p = keypoint_agreement(cpu, gpu)
    assert p["same"] > 0.98 and p["octave_layer_equal"], p
    assert p["angle_within_0.5"] > 0.99 and p["descriptor_l2_median"] < 3, p
    assert visiontk.sift(samples / "astronaut.png", device="auto").xy.shape == gpu.xy.shape


def test_gpu_matching_equals_cpu_matching(samples):
    a = visiontk.sift(samples / "motorcycle_left.png", device="cpu")
    b = visiontk.sift(samples / "motorcycle_right.png", device="cpu")
    on_cpu = visiontk.match(a, b, device="cpu")
    on_gpu = visiontk.match(a, b, device="cuda")
    np.testing.assert_array_equal(on_cpu.pairs, on_gpu.pairs)
    np.testing.assert_allclose(on_cpu.distances, on_gpu.distances, rtol=1e-5)


def test_batch_on_gpu_equals_single_images(samples):
    names = ["astronaut.png", "coffee.png", "coffee_warped.png", "astronaut.png"]
    batch = visiontk.sift_batch([samples / n for n in names], device="cuda")
    for n, feats in zip(names, batch, strict=True):
        single = visiontk.sift(samples / n, device="cuda")
        np.testing.assert_array_equal(feats.xy, single.xy)
        # Float atomics make a GPU's last bits run-dependent: a byte may move by one.
        assert np.abs(feats.descriptors.astype(int) - single.descriptors).max() <= 1
