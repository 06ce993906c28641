"""Accuracy and speed of visiontk's SIFT (both presets) against OpenCV's and COLMAP's, measured
in the same run.

    python bench/sift_bench.py            # everything (about 10 minutes on 2 cores)
    python bench/sift_bench.py --quick    # two photos, 3 timing runs
    python bench/sift_bench.py --docs     # and write the tables into docs/benchmarks.md

Accuracy (bench/sift_scores.py): real photos from scikit-image warped by known homographies
(rotation, scale, viewpoint, illumination, blur + JPEG, and the hard cases: scale ×0.33/×2.8,
strong viewpoint, dark and noisy), plus the Middlebury motorcycle stereo pair scored against its
ground-truth disparity. One matcher (mutual nearest neighbour + ratio 0.8) and one robust
estimator for every extractor. Anchors: cv2.SIFT (OpenCV's defaults) and pycolmap.Sift
(COLMAP's defaults).

Speed: extraction (detection + descriptors) of two 1920×1080 photos, a low-density one (coffee)
and a dense texture (grass, ≥ 25k OpenCV keypoints), median of N interleaved runs, as ratios to
OpenCV in the same run; visiontk's per-stage split; peak memory of one extraction (RSS growth
over the warmed-up process, measured in a fresh process per extractor).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import sift_scores as S
from doc_tables import add_docs_flag, markdown_table, parse_args, publish

import visiontk

EXTRACTORS = {
    "OpenCV": lambda: S.extract_opencv,
    "visiontk opencv": lambda: S.visiontk_extractor(preset="opencv"),
    "visiontk accurate": lambda: S.visiontk_extractor(preset="accurate"),
    "pycolmap": S.pycolmap_extractor,
}
ANCHOR = "OpenCV"
TIMING_IMAGES = {"coffee (low density)": "coffee", "grass (dense texture)": "grass"}
COLUMNS = [
    ("MMA@1", "mma1", "{:.3f}"),
    ("correct @3 px", "correct3", "{:.0f}"),
    ("rep @3", "rep", "{:.3f}"),
    ("H@1", "h1", "{:.3f}"),
    ("H@3", "h3", "{:.3f}"),
    ("kp", "kp", "{:.0f}"),
]


def _mean(rows, key):
    values = [r[key] for r in rows]
    return float(np.sum(values)) if key == "correct3" else float(np.mean(values))


def accuracy(photos, extractors, mosaics=S.MOSAICS):
    by_category = {name: {} for name in extractors}
    for category, _photo, _warp, a, b, H in S.warped_pairs(photos):
        for name, extract in extractors.items():
            fa, fb = extract(a), extract(b)
            by_category[name].setdefault(category, []).append(
                S.score_pair(fa, fb, H, a.shape, b.shape)
            )
    large = {name: [] for name in extractors}
    for _c, _p, _w, a, b, H in S.warped_pairs(range(mosaics), image=S.mosaic):
        for name, extract in extractors.items():
            large[name].append(S.score_pair(extract(a), extract(b), H, a.shape, b.shape))
    left, right, disparity = S.stereo_pair()
    result = {}
    for name, extract in extractors.items():
        cats = by_category[name]
        every = [row for rows in cats.values() for row in rows]
        result[name] = {
            "categories": {
                c: {k: _mean(rows, k) for _, k, _ in COLUMNS} | {"pairs": len(rows)}
                for c, rows in cats.items()
            },
            "all": {k: _mean(every, k) for _, k, _ in COLUMNS} | {"pairs": len(every)},
            "stereo": S.score_stereo(extract(left), extract(right), disparity),
            "large": {k: _mean(large[name], k) for _, k, _ in COLUMNS}
            | {"pairs": len(large[name])},
        }
    return result


def summary_table(acc):
    header = ["extractor", *(c for c, _, _ in COLUMNS[:-1]), "stereo precision @1 (correct)", "kp"]
    rows = []
    for name, r in acc.items():
        a, st = r["all"], r["stereo"]
        rows.append(
            [
                name,
                *(fmt.format(a[k]) for _, k, fmt in COLUMNS[:-1]),
                f"{st['precision1']:.3f} ({st['correct1']})",
                f"{a['kp']:.0f}",
            ]
        )
    pairs = next(iter(acc.values()))["all"]["pairs"]
    return f"All {pairs} warped pairs, and the stereo pair:\n\n" + markdown_table(header, rows)


def large_table(acc):
    header = ["extractor", *(c for c, _, _ in COLUMNS)]
    rows = [
        [name, *(fmt.format(r["large"][k]) for _, k, fmt in COLUMNS)] for name, r in acc.items()
    ]
    pairs = next(iter(acc.values()))["large"]["pairs"]
    mosaics = pairs // sum(len(warps) for warps in S.WARPS.values())
    return (
        f"Large images: {pairs} pairs, the same warps of {mosaics} 3×3 mosaics of the "
        "photos (1536×1536, where the 8192 cap binds):\n\n" + markdown_table(header, rows)
    )


def category_table(acc):
    header = ["category (pairs)", "extractor", *(c for c, _, _ in COLUMNS)]
    rows = []
    categories = next(iter(acc.values()))["categories"]
    for category in categories:
        for name, r in acc.items():
            c = r["categories"][category]
            rows.append(
                [f"{category} ({c['pairs']})", name, *(fmt.format(c[k]) for _, k, fmt in COLUMNS)]
            )
    return markdown_table(header, rows)


def timing_image(name):
    return cv2.resize(S.gray_photo(name), (1920, 1080), interpolation=cv2.INTER_CUBIC)


def speed(extractors, repeats):
    """Median seconds per extraction, each extractor timed in its own block of runs, after a
    warm-up: taking turns, each one found the memory the previous one had just given back to
    the system and paid its page faults (visiontk opencv 1.24× after OpenCV, 0.95× alone),
    and pycolmap's threads kept spinning into the next one's time."""
    out = {}
    for label, photo in TIMING_IMAGES.items():
        gray = timing_image(photo)
        times, stages, counts = {}, {}, {}
        for name, extract in extractors.items():
            extract(gray)  # compiled kernels loaded, caches and memory warm
            times[name], stages[name] = [], []
            for _ in range(repeats):
                t = time.perf_counter()
                feats = extract(gray)
                times[name].append(time.perf_counter() - t)
                counts[name] = len(feats)
                stages[name].append(feats.timings)
        anchor = statistics.median(times[ANCHOR])
        out[label] = {
            name: {
                "seconds": statistics.median(t),
                "ratio": statistics.median(t) / anchor,
                "keypoints": counts[name],
            }
            for name, t in times.items()
        }
        for name in extractors:
            if name.startswith("visiontk"):
                out[label][name]["stages"] = {
                    k: statistics.median(s[k] for s in stages[name])
                    for k in ("scale_space", "detect_orient", "describe")
                }
    return out


def peak_memory(name, photo):
    """RSS growth (MB) of one extraction of the 1080p photo, in a fresh process (the extractor
    warmed up on a small image first, so compiled code and libraries are not counted). Read
    from VmHWM: unlike ru_maxrss it starts afresh at exec instead of carrying this process's
    peak over."""
    code = (
        "import sys; sys.path.insert(0, 'bench'); import sift_bench as B; "
        f"e = B.EXTRACTORS[{name!r}](); import numpy as np; "
        "e(np.zeros((64, 64), np.uint8) + np.uint8(np.arange(64) * 3)); "
        f"g = B.timing_image({photo!r}); r0 = B.peak_rss(); e(g); "
        "print((B.peak_rss() - r0) / 1024)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return float(done.stdout.strip().splitlines()[-1])


def peak_rss() -> int:
    """This process's peak resident memory so far, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def speed_table(spd, memory):
    header = [
        "image (1920×1080)",
        "extractor",
        "keypoints",
        "ms",
        f"÷ {ANCHOR}",
        "visiontk stages: scale space / detect+orient / describe (ms)",
        "peak memory (MB)",
    ]
    rows = []
    for label, by in spd.items():
        for name, r in by.items():
            st = r.get("stages")
            split = " / ".join(f"{st[k] * 1000:.0f}" for k in st) if st else ""
            rows.append(
                [
                    label,
                    name,
                    r["keypoints"],
                    f"{r['seconds'] * 1000:.0f}",
                    f"**{r['ratio']:.2f}×**"
                    if name.startswith("visiontk")
                    else f"{r['ratio']:.2f}×",
                    split,
                    f"{memory[label][name]:.0f}" if memory else "–",
                ]
            )
    return markdown_table(header, rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two photos, 3 timing runs")
    parser.add_argument("--repeats", type=int, default=5, help="timing runs (median)")
    parser.add_argument("--json", help="also write the numbers to this file")
    add_docs_flag(parser, "sift_speed", "sift_summary", "sift_large", "sift_bench")
    parser.add_argument("--speed-only", action="store_true", help="timing and memory only")
    args = parse_args(parser)
    photos = S.PHOTOS[:2] if args.quick else S.PHOTOS
    extractors = {name: make() for name, make in EXTRACTORS.items()}
    print(
        f"# visiontk {visiontk.__version__}, OpenCV {cv2.__version__} "
        f"({cv2.getNumThreads()} threads), pycolmap {_pycolmap_version()}, "
        f"{platform.machine()}; photos: {', '.join(photos)}\n",
        flush=True,
    )
    spd = speed(extractors, 3 if args.quick else args.repeats)
    memory = (
        None
        if args.quick
        else {
            label: {name: peak_memory(name, photo) for name in EXTRACTORS}
            for label, photo in TIMING_IMAGES.items()
        }
    )
    speed_md = speed_table(spd, memory)
    print(speed_md + "\n", flush=True)
    command = "python bench/sift_bench.py --docs"
    if args.docs and not args.quick:
        publish(
            "sift_speed", speed_md, command=command + (" --speed-only" if args.speed_only else "")
        )
    acc = None
    if not args.speed_only:
        acc = accuracy(photos, extractors, 1 if args.quick else S.MOSAICS)
        summary_md, category_md = summary_table(acc), category_table(acc)
        large_md = large_table(acc)
        print(summary_md + "\n\n" + large_md + "\n\n" + category_md)
        if args.docs and not args.quick:
            publish("sift_summary", summary_md, command=command)
            publish("sift_large", large_md, command=command)
            publish("sift_bench", category_md, command=command)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"accuracy": acc, "speed": spd, "memory": memory}, fh, indent=2)


def _pycolmap_version():
    import pycolmap

    return pycolmap.__version__


if __name__ == "__main__":
    main()
