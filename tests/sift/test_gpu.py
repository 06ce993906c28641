"""The public device paths, ``sift(device=...)``, matching and batches (on a GPU two host
threads, each on its own stream), on each device the public API names (the ``device`` fixture's
"cpu" and "cuda") against the CPU path. The CUDA parameter is skipped, with the reason, where no
GPU exists; the CPU one is the reference against itself, and keeps these tests' code running
where there is no GPU. The kernels themselves are tested in test_cuda_kernels.py (also
emulated in CI)."""

import numpy as np
import pytest

import visiontk
from visiontk.testing.agreement import keypoint_agreement

pytestmark = pytest.mark.devices("cpu", "cuda")


def test_sift_on_each_device_equals_cpu(device, samples):
    cpu = visiontk.sift(samples / "astronaut.png", device="cpu")
    on_device = visiontk.sift(samples / "astronaut.png", device=device.name)
    p = keypoint_agreement(cpu, on_device)
    assert p["same"] > 0.98 and p["octave_layer_equal"], p
    assert p["angle_within_0.5"] > 0.99 and p["descriptor_l2_median"] < 3, p


@pytest.mark.devices("cuda")
def test_auto_is_the_gpu_where_there_is_one(device, samples):
    on_gpu = visiontk.sift(samples / "astronaut.png", device=device.name)
    assert visiontk.sift(samples / "astronaut.png", device="auto").xy.shape == on_gpu.xy.shape


def test_matching_on_each_device_equals_cpu_matching(device, samples):
    a = visiontk.sift(samples / "motorcycle_left.png", device="cpu")
    b = visiontk.sift(samples / "motorcycle_right.png", device="cpu")
    on_cpu = visiontk.match(a, b, device="cpu")
    on_device = visiontk.match(a, b, device=device.name)
    np.testing.assert_array_equal(on_cpu.pairs, on_device.pairs)
    np.testing.assert_allclose(on_cpu.distances, on_device.distances, rtol=1e-5)


def test_batch_on_each_device_equals_single_images(device, samples):
    names = ["astronaut.png", "coffee.png", "coffee_warped.png", "astronaut.png"]
    batch = visiontk.sift_batch([samples / n for n in names], device=device.name)
    for n, feats in zip(names, batch, strict=True):
        single = visiontk.sift(samples / n, device=device.name)
        np.testing.assert_array_equal(feats.xy, single.xy)
        # Float atomics make a GPU's last bits run-dependent: a byte may move by one.
        assert np.abs(feats.descriptors.astype(int) - single.descriptors).max() <= 1
