"""Throughput of the pipeline runner, and its overhead against a plain loop of library calls.

    python bench/pipeline_bench.py                 # 200 images at 1024 px, 3 rounds
    python bench/pipeline_bench.py --images 40 --rounds 1     # quicker

The images are views (rotation, zoom, shift) of scikit-image photos at 1024×1024, written as
PNG to a temporary folder. Pipeline: load, sift (max_features 2000), match (sequential,
window 3), verify (homography); the same work as a plain Python loop is the anchor. The three
ways run in turn, round after round (fresh output folders, so nothing is cached), and the table
shows medians: this machine is shared and single runs vary by 10%.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import skimage.data
from doc_tables import add_docs_flag, markdown_table, parse_args, publish

import visiontk
from visiontk.pipeline import Pipeline

SPEC = [
    {"name": "load"},
    {"name": "sift", "max_features": 2000},
    {"name": "pairs-sequential", "window": 3},
    {"name": "match"},
    {"name": "verify", "model": "homography"},
]


def make_images(folder: Path, n: int) -> list[Path]:
    photos = [
        skimage.data.astronaut(),
        skimage.data.coffee(),
        skimage.data.chelsea(),
        skimage.data.rocket(),
        skimage.data.immunohistochemistry(),
    ]
    paths = []
    for i in range(n):
        img = cv2.resize(
            photos[(i // 8) % len(photos)], (1024, 1024), interpolation=cv2.INTER_CUBIC
        )
        # every view different (the runner caches by content: repeats would be free)
        m = cv2.getRotationMatrix2D((512 + (i % 7), 512), (1.3 * i) % 30, 1 + 0.001 * i)
        path = folder / f"img{i:04d}.png"
        cv2.imwrite(
            str(path), cv2.cvtColor(cv2.warpAffine(img, m, (1024, 1024)), cv2.COLOR_RGB2BGR)
        )
        paths.append(path)
    return paths


def plain_loop(paths: list[Path]) -> float:
    t = time.perf_counter()
    feats = [visiontk.sift(p, max_features=2000) for p in paths]
    for i in range(len(paths)):
        for j in range(i + 1, min(i + 4, len(paths))):
            m = visiontk.match(feats[i], feats[j])
            visiontk.estimate_homography(feats[i].xy[m.pairs[:, 0]], feats[j].xy[m.pairs[:, 1]])
    return time.perf_counter() - t


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    add_docs_flag(parser, "pipeline_bench")
    args = parse_args(parser)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        paths = make_images(folder, args.images)
        visiontk.sift(paths[0])  # load compiled kernels before timing anything
        times = {"loop": [], 1: [], 2: []}
        for k in range(args.rounds):
            times["loop"].append(plain_loop(paths))
            for workers in (1, 2):
                t = time.perf_counter()
                r = Pipeline.from_spec(SPEC).run(
                    folder, Path(tmp) / f"out{k}-{workers}", workers=workers, quiet=True
                )
                times[workers].append(time.perf_counter() - t)
                assert r.ok and r.images_done == args.images
        med = {key: statistics.median(v) for key, v in times.items()}
        rows = [
            ("plain loop of library calls", med["loop"]),
            ("visiontk run, 1 worker", med[1]),
            ("visiontk run, 2 workers", med[2]),
        ]
        text = "\n".join(
            [
                f"{args.images} images 1024×1024, sift (2000 features) + sequential match "
                f"(window 3, {r.pairs} pairs) + homography; medians of {args.rounds} rounds\n",
                markdown_table(
                    ["how", "seconds", "images/s", "vs plain loop"],
                    [
                        [
                            name,
                            f"{secs:.1f}",
                            f"{args.images / secs:.2f}",
                            f"{secs / med['loop']:.2f}×",
                        ]
                        for name, secs in rows
                    ],
                ),
                "\nAll runs (seconds): "
                + str({k: [round(x, 1) for x in v] for k, v in times.items()}),
            ]
        )
        print(text)
        if args.docs:
            publish("pipeline_bench", text, command="python bench/pipeline_bench.py --docs")


if __name__ == "__main__":
    main()
