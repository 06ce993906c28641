"""GPU extraction and matching speed, with OpenCV's CPU time as the anchor, in one run.

    python bench/gpu_bench.py [--json FILE]      (needs CuPy and an NVIDIA GPU)

Prints: the GPU model; the fused kernels' device time; extraction of a 1920×1080 photo
(single image, and per image in batches of 16 through visiontk.sift_batch); matching 2k×2k and
20k×20k descriptors (device-resident, and through visiontk.match from host arrays); cv2.SIFT on
the same image on the CPU (visiontk GPU / OpenCV CPU ratio); and the CPU/GPU parity summary on
the sample images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data

import visiontk
from visiontk.matching import nearest_neighbours
from visiontk.sift.agreement import keypoint_agreement

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


def median_time(fn, repeats, sync=None):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def parity(name):
    cpu = visiontk.sift(SAMPLES / name, device="cpu")
    gpu = visiontk.sift(SAMPLES / name, device="cuda")
    return {"image": name, **keypoint_agreement(cpu, gpu)}


def kernel_breakdown(gray, repeats):
    """GPU time of the fused kernels on the 1080p image (cupyx.profiler, device time): the
    blur of octave -1 (3840x2160), detection over all octaves, and the whole extraction."""
    import cupy as cp
    from cupyx.profiler import benchmark

    from visiontk.sift import SiftOptions, extract
    from visiontk.sift._gpu_kernels import for_current_device
    from visiontk.sift.detect import prethreshold
    from visiontk.sift.scale_space import scale_space

    kernels = for_current_device()
    g = cp.asarray(gray, dtype=cp.float32)
    octaves = scale_space(g, sigma=1.6, n_octave_layers=3, upsample=True, xp=cp,
                          octave_blur=kernels.octave_blur)
    base = octaves[0].gaussians[0].copy()

    def device_ms(fn, *args):
        return float(np.median(benchmark(fn, args, n_repeat=repeats).gpu_times) * 1e3)

    return {
        "blur_dog_octave_-1_ms": device_ms(kernels.octave_blur, base, 1.6, 3, 0),
        "detect_all_octaves_ms": device_ms(
            lambda: kernels.detect_extrema(octaves, threshold=prethreshold(0.04, 3),
                                           n_octave_layers=3, contrast_threshold=0.04,
                                           edge_threshold=10.0)),
        "extract_ms": device_ms(lambda: extract(g, SiftOptions(), cp, kernels=kernels)),
    }


def main():
    import cupy as cp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args()
    sync = cp.cuda.Device().synchronize
    props = cp.cuda.runtime.getDeviceProperties(0)
    gpu_name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    img = cv2.resize(skimage.data.coffee(), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)

    visiontk.sift(gray, device="cuda")  # compile kernels, warm the memory pool
    single = median_time(lambda: visiontk.sift(gray, device="cuda"), args.repeats)
    batch = [gray] * 16
    batched = median_time(lambda: visiontk.sift_batch(batch, device="cuda"),
                          max(3, args.repeats // 5)) / 16
    sift_cv = cv2.SIFT_create()
    opencv = median_time(lambda: sift_cv.detectAndCompute(gray, None), 5)

    rng = np.random.default_rng(0)
    matching = {}
    for n in (2000, 20000):
        a = rng.integers(0, 140, (n, 128)).astype(np.uint8)
        b = rng.integers(0, 140, (n, 128)).astype(np.uint8)
        da, db = cp.asarray(a), cp.asarray(b)
        nearest_neighbours(da, db, cp)
        matching[n] = {
            "device_resident_s": median_time(lambda da=da, db=db: nearest_neighbours(da, db, cp),
                                             args.repeats, sync),
            "visiontk_match_s": median_time(lambda a=a, b=b: visiontk.match(a, b, device="cuda"),
                                            max(3, args.repeats // 5)),
        }
    report = {
        "gpu": gpu_name,
        "extract_1080p_single_ms": single * 1e3,
        "extract_1080p_batch16_ms_per_image": batched * 1e3,
        "opencv_cpu_1080p_ms": opencv * 1e3,
        "ratio_gpu_single_over_opencv_cpu": single / opencv,
        "ratio_gpu_batch_over_opencv_cpu": batched / opencv,
        "kernels_device_time": kernel_breakdown(gray, args.repeats),
        "matching": matching,
        "parity": [parity(n) for n in ("astronaut.png", "coffee.png", "motorcycle_left.png")],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
