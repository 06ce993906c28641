"""Exact matching time and peak memory for N×N uint8 SIFT-like descriptors, against FAISS,
torch and OpenCV in the same run.

    python bench/match_bench.py [--sizes 2000 8000 20000] [--memory 50000] [--docs]

Descriptors: random uint8 (0..139), half of B a true partner of a row of A (+3 per component).
Every method is exact brute force with Lowe's ratio test 0.8: visiontk.match (with and without
its mutual test), FAISS ``IndexFlatL2`` k=2 (``pip install faiss-cpu``), torch ``cdist`` +
``topk`` (``pip install torch==2.13.0``), OpenCV ``BFMatcher.knnMatch`` k=2. Each (method, size)
runs in a fresh process: one warm-up call, then the median of 3; peak memory is what the timed
calls added to the process's resident memory at their peak (VmHWM, reset after the warm-up
through /proc/self/clear_refs, minus VmRSS before them). Threads: every library's
default on this machine (2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_tables import add_docs_flag, markdown_table, parse_args, publish

METHODS = ("visiontk", "visiontk_no_mutual", "faiss", "torch", "opencv")
LABELS = {
    "visiontk": "visiontk.match (mutual)",
    "visiontk_no_mutual": "visiontk.match",
    "faiss": "FAISS IndexFlatL2",
    "torch": "torch cdist+topk",
    "opencv": "OpenCV BFMatcher",
}

CHILD = r"""
import json, statistics, sys, time
import numpy as np

def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0

method, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.integers(0, 140, (n, 128)).astype(np.uint8)
b = rng.integers(0, 140, (n, 128)).astype(np.uint8)
b[: n // 2] = np.clip(a[: n // 2].astype(int) + 3, 0, 255)
ratio = 0.8

if method.startswith("visiontk"):
    import visiontk
    mutual = method == "visiontk"
    def run():
        return len(visiontk.match(a, b, ratio=ratio, mutual=mutual))
elif method == "faiss":
    import faiss
    af, bf = a.astype(np.float32), b.astype(np.float32)
    def run():
        index = faiss.IndexFlatL2(128)
        index.add(bf)
        d, _ = index.search(af, 2)
        return int((np.sqrt(d[:, 0]) < ratio * np.sqrt(d[:, 1])).sum())
elif method == "torch":
    import torch
    at, bt = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    def run():
        with torch.no_grad():
            count, step = 0, 4096
            for s in range(0, n, step):  # blocks, or 20k x 20k floats is 1.6 GB
                d = torch.cdist(at[s:s + step], bt)
                v, _ = torch.topk(d, 2, dim=1, largest=False)
                count += int((v[:, 0] < ratio * v[:, 1]).sum())
            return count
else:
    import cv2
    af, bf = a.astype(np.float32), b.astype(np.float32)
    def run():
        knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(af, bf, k=2)
        return sum(1 for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance)

count = run()  # warm-up: imports, compiled kernels, thread pools
try:  # reset the high-water mark: the peak below is the matching's own
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
before = vm("VmRSS")
times = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
print(json.dumps({"seconds": statistics.median(times), "matches": count,
                  "peak_mb": vm("VmHWM") - before}))
"""


def measure(method: str, n: int, repeats: int = 3) -> dict | None:
    p = subprocess.run(
        [sys.executable, "-c", CHILD, method, str(n), str(repeats)],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        print(f"{method} {n}: not run ({last})", file=sys.stderr)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 20000])
    parser.add_argument(
        "--memory",
        type=int,
        nargs="*",
        default=[50000],
        help="sizes timed once for visiontk only (peak memory)",
    )
    add_docs_flag(parser, "match_bench")
    args = parse_args(parser)
    rows = []
    for n in args.sizes:
        found = {m: measure(m, n) for m in METHODS}
        faiss = found["faiss"]
        counts = {r["matches"] for m, r in found.items() if r and m != "visiontk"}
        for method in METHODS:
            r = found[method]
            if r is None:
                continue
            versus = f"{r['seconds'] / faiss['seconds']:.2f}×" if faiss else "–"
            rows.append(
                [
                    f"{n}×{n}",
                    LABELS[method],
                    f"{r['seconds']:.3f}",
                    versus,
                    f"{r['peak_mb']:.0f}",
                    r["matches"],
                ]
            )
            print(" | ".join(map(str, rows[-1])), flush=True)
        if len(counts) > 1:
            print(f"note: match counts differ at {n}: {sorted(counts)}", file=sys.stderr)
    for n in args.memory:
        r = measure("visiontk", n, repeats=1)
        if r:
            rows.append(
                [
                    f"{n}×{n}",
                    LABELS["visiontk"],
                    f"{r['seconds']:.3f}",
                    "not run",
                    f"{r['peak_mb']:.0f}",
                    r["matches"],
                ]
            )
    text = markdown_table(
        ["N×N", "method", "seconds (median of 3)", "time / FAISS", "peak MB", "matches"], rows
    )
    print(text)
    if args.docs:
        publish("match_bench", text, command="python bench/match_bench.py --docs")


if __name__ == "__main__":
    main()
