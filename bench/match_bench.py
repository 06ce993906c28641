"""Matching time and peak memory for N×N uint8 SIFT-like descriptors (brute force, exact).

    python bench/match_bench.py              # 2k, 20k and 50k
    python bench/match_bench.py --sizes 2000

The anchor in the same run is OpenCV's brute-force kNN matcher (cv2.BFMatcher, k=2, float32)
with the same ratio test, on the sizes where it fits in memory comfortably.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import cv2
import numpy as np
from readme import markdown_table, publish

import visiontk


def descriptors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 140, (n, 128)).astype(np.uint8)


def opencv_ratio(a, b, ratio=0.8):
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a.astype(np.float32), b.astype(np.float32), k=2)
    return sum(1 for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance)


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 50000])
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        a, b = descriptors(n, 0), descriptors(n, 1)
        b[: n // 2] = np.clip(a[: n // 2].astype(int) + 3, 0, 255)  # half have a true partner
        repeats = 3 if n <= 20000 else 1
        t_ours, m = timed(lambda a=a, b=b: visiontk.match(a, b, mutual=False), repeats)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if n <= 20000:
            t_cv, count = timed(lambda a=a, b=b: opencv_ratio(a, b), repeats)
            assert abs(count - len(m)) <= max(2, 0.001 * n), (count, len(m))
            cv_cell, ratio = f"{t_cv:.3f} s", f"{t_ours / t_cv:.2f}×"
        else:
            cv_cell, ratio = "not run", "–"
        rows.append([f"{n}×{n}", f"{t_ours:.3f} s", cv_cell, ratio, f"{peak:.0f}"])
        print(" | ".join(rows[-1]), flush=True)
    text = markdown_table(["N×N", "visiontk.match", "OpenCV BFMatcher knn", "visiontk/OpenCV",
                           "peak RSS (MB)"], rows)
    print(text)
    if args.readme:
        publish("match_bench", text, command="python bench/match_bench.py --readme")


if __name__ == "__main__":
    main()
