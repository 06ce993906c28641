"""GPU extraction and matching speed, with OpenCV's CPU time as the anchor, in one run.

    python bench/gpu_bench.py [--json FILE]      (needs CuPy and an NVIDIA GPU)

Prints: the GPU model; the fused kernels' device time; extraction of a 1920×1080 photo
(single image, and per image in batches of 16 through visiontk.sift_batch); matching 2k×2k and
20k×20k descriptors (device-resident, and through visiontk.match from host arrays), with
cv2.BFMatcher on the CPU as the anchor; cv2.SIFT on the same image on the CPU (visiontk GPU /
OpenCV CPU ratio); the CPU/GPU parity summary on the sample images; and ViT-S/8 attention at
480² in batches of 1 and 16 (images/s) against torch on the same GPU. Each section reports
separately, so one failure does not lose the others; the exit status says if any failed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback
from pathlib import Path

import cv2
import numpy as np
import skimage.data

import visiontk
from visiontk.matching import nearest_neighbours
from visiontk.testing.agreement import keypoint_agreement

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

    from visiontk._sift.backends import for_device
    from visiontk._sift.detect import prethreshold
    from visiontk._sift.extraction import extract
    from visiontk._sift.options import SiftOptions

    cuda = for_device("cuda")
    kernels = cuda.cuda
    g = cp.asarray(gray, dtype=cp.float32)
    octaves = cuda.scale_space(g, SiftOptions())
    base = octaves[0].gaussians[0].copy()

    def device_ms(fn, *args):
        return float(np.median(benchmark(fn, args, n_repeat=repeats).gpu_times) * 1e3)

    return {
        "blur_dog_octave_-1_ms": device_ms(kernels.octave_blur, base, 1.6, 3, 0),
        "detect_all_octaves_ms": device_ms(
            lambda: kernels.detect_extrema(
                octaves,
                threshold=prethreshold(0.04, 3),
                n_octave_layers=3,
                contrast_threshold=0.04,
                edge_threshold=10.0,
            )
        ),
        "extract_ms": device_ms(lambda: extract(g, SiftOptions(), cuda)),
    }


def extraction(gray, repeats):
    visiontk.sift(gray, device="cuda")  # compile kernels, warm the memory pool
    single = median_time(lambda: visiontk.sift(gray, device="cuda"), repeats)
    batched = (
        median_time(lambda: visiontk.sift_batch([gray] * 16, device="cuda"), max(3, repeats // 5))
        / 16
    )
    sift_cv = cv2.SIFT_create()
    opencv = median_time(lambda: sift_cv.detectAndCompute(gray, None), 5)
    return {
        "extract_1080p_single_ms": single * 1e3,
        "extract_1080p_batch16_ms_per_image": batched * 1e3,
        "opencv_cpu_1080p_ms": opencv * 1e3,
        "ratio_gpu_single_over_opencv_cpu": single / opencv,
        "ratio_gpu_batch_over_opencv_cpu": batched / opencv,
    }


def matching(repeats):
    import cupy as cp

    sync = cp.cuda.Device().synchronize
    rng = np.random.default_rng(0)
    report = {}
    bf = cv2.BFMatcher(cv2.NORM_L2)
    for n in (2000, 20000):
        a = rng.integers(0, 140, (n, 128)).astype(np.uint8)
        b = rng.integers(0, 140, (n, 128)).astype(np.uint8)
        da, db = cp.asarray(a), cp.asarray(b)
        nearest_neighbours(da, db, cp)
        resident = median_time(lambda da=da, db=db: nearest_neighbours(da, db, cp), repeats, sync)
        opencv = median_time(
            lambda a=a, b=b: bf.knnMatch(a.astype(np.float32), b.astype(np.float32), k=2),
            3 if n <= 2000 else 1,
        )
        report[n] = {
            "device_resident_ms": resident * 1e3,
            "visiontk_match_ms": median_time(
                lambda a=a, b=b: visiontk.match(a, b, device="cuda"), max(3, repeats // 5)
            )
            * 1e3,
            "opencv_bfmatcher_cpu_ms": opencv * 1e3,
            "ratio_resident_over_opencv_cpu": resident / opencv,
        }
    return report


def vit_throughput(repeats):
    """ViT-S/8 at 480² (random ViT-S weights), last-block attention: images/s for batches of
    1 and 16, visiontk on CuPy against the official forward pass in torch on the same GPU,
    and the largest difference between their maps."""
    import cupy as cp
    import torch
    from vit_bench import torch_forward, vit_s_state

    from visiontk.vit import ViT

    state = vit_s_state(8)
    ours = ViT(state, xp=cp)
    theirs = {k: torch.from_numpy(v).cuda() for k, v in state.items()}
    report = {"model": "ViT-S/8", "image": "480x480", "torch": torch.__version__}
    for batch in (1, 16):
        pixels = (
            np.random.default_rng(batch).standard_normal((batch, 3, 480, 480)).astype(np.float32)
        )
        on_gpu, tensor = cp.asarray(pixels), torch.from_numpy(pixels).cuda()
        a = cp.asnumpy(ours.last_attention(on_gpu))
        b = torch_forward(theirs, tensor, 8).cpu().numpy()
        t_ours = median_time(
            lambda p=on_gpu: ours.last_attention(p), repeats, cp.cuda.Device().synchronize
        )
        t_torch = median_time(
            lambda t=tensor: torch_forward(theirs, t, 8), repeats, torch.cuda.synchronize
        )
        report[f"batch_{batch}"] = {
            "visiontk_images_per_s": round(batch / t_ours, 1),
            "torch_images_per_s": round(batch / t_torch, 1),
            "visiontk_over_torch_time": round(t_ours / t_torch, 2),
            "max_abs_difference": float(np.abs(a.reshape(b.shape) - b).max()),
        }
    return report


def main():
    import cupy as cp

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args()
    props = cp.cuda.runtime.getDeviceProperties(0)
    gpu_name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    img = cv2.resize(skimage.data.coffee(), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)

    # Each section reports on its own: one failing (on a GPU nobody has tried yet) does not
    # cost the others' numbers.
    sections = {
        "parity": lambda: [
            parity(n) for n in ("astronaut.png", "coffee.png", "motorcycle_left.png")
        ],
        "extraction": lambda: extraction(gray, args.repeats),
        "kernels_device_time": lambda: kernel_breakdown(gray, args.repeats),
        "matching": lambda: matching(args.repeats),
        "vit": lambda: vit_throughput(args.repeats),
    }
    report = {"gpu": gpu_name}
    failed = False
    for name, run in sections.items():
        try:
            report[name] = run()
        except Exception:
            report[name] = {"error": traceback.format_exc()}
            failed = True
        print(json.dumps({name: report[name]}, indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
