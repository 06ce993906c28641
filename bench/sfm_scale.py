"""Structure from motion at scale: a rendered scene of 200 views through `visiontk run sfm`
(retrieval pairs) with the incremental and the global mapper, against COLMAP's pipeline
(extract, exhaustive match, incremental map) on the same images.

Each phase runs in its own process, so its seconds and its peak memory (the whole process
tree's resident set, sampled every 0.1 s) are its own: visiontk's features (load + sift), pairs
(retrieval + match + verify, the features read back from the run's cache) and reconstruct (the
rest read back); COLMAP's extract, match and map. The per-image and per-pair costs feed the
README's plan for 10k images (docs/sfm.md, "Large sets").

    python bench/sfm_scale.py [--views 200] [--docs]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_tables import add_docs_flag, markdown_table, parse_args, publish
from sfm_bench import score, sfm_pipeline

#: The phases of visiontk's sfm preset, each run on the cache of the one before.
PHASES = {
    "features": ["load", "sift"],
    "pairs": ["load", "sift", "pairs-retrieval", "match", "verify"],
    "reconstruct": None,  # the whole preset
}
COLMAP_PHASES = {
    "extract": "pycolmap.extract_features(out + '/database.db', images)",
    "match": "pycolmap.match_exhaustive(out + '/database.db')",
    "map": (
        "models = pycolmap.incremental_mapping(out + '/database.db', images, out)\n"
        "best = max(models.values(), key=lambda m: m.num_reg_images())\n"
        "best.write(out)"
    ),
}


def measured(command: list[str]) -> tuple[float, float]:
    """Run ``command``; (seconds, peak resident memory of its process tree in GiB)."""
    import psutil

    peak, done = [0], threading.Event()
    t0 = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def sample() -> None:
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(_rss(p) for p in tree))
            except psutil.Error:
                pass
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    if process.returncode not in (0, 1):  # 1: some image not mapped is still a result
        raise SystemExit(f"{command[:5]} failed:\n{stderr.decode(errors='replace')[-2000:]}")
    return seconds, peak[0] / 2**30


def _rss(process) -> int:
    import psutil

    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def run_visiontk(images: Path, out: Path, mapper: str) -> dict:
    phases = {}
    for phase, stages in PHASES.items():
        pipeline = sfm_pipeline(images.parent, mapper, stages)
        command = [sys.executable, "-m", "visiontk_cli.main", "run", pipeline]
        command += ["--images", str(images), "--out", str(out), "--quiet"]
        phases[phase] = measured(command)
    return phases


def run_colmap(images: Path, out: Path) -> dict:
    out.mkdir(parents=True)
    phases = {}
    for phase, step in COLMAP_PHASES.items():
        script = (
            "import sys, pycolmap\npycolmap.logging.minloglevel = 2\n"
            f"images, out = sys.argv[1], sys.argv[2]\n{step}\n"
        )
        phases[phase] = measured([sys.executable, "-c", script, str(images), str(out)])
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=200)
    parser.add_argument("--size", default="800x600", help="width x height of the views")
    parser.add_argument("--no-colmap", action="store_true", help="visiontk's runs only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    add_docs_flag(parser, "sfm_scale")
    args = parse_args(parser)
    from visiontk.testing.scene import make_scene

    w, h = (int(v) for v in args.size.split("x"))
    scene = make_scene(views=args.views, size=(w, h), focal=0.81 * w, arc_degrees=300.0, seed=11)
    rows, figures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        scene.write(images)
        runs = {
            "visiontk incremental": lambda out: run_visiontk(images, out, "incremental"),
            "visiontk global": lambda out: run_visiontk(images, out, "global"),
        }
        if not args.no_colmap:
            runs["COLMAP"] = lambda out: run_colmap(images, out)
        for method, run in runs.items():
            out = Path(tmp) / method.replace(" ", "_")
            phases = run(out)
            model = out / "sparse" / "0" if method.startswith("visiontk") else out
            s = score(model, scene)
            total = sum(t for t, _ in phases.values())
            figures.append({"method": method, "phases": phases, "total": total, **s})
            print(method, json.dumps(figures[-1]), flush=True)
    base = next((f["total"] for f in figures if f["method"] == "COLMAP"), None)
    for f in figures:
        rows.append(
            [
                f["method"],
                f"{f['registered']}/{args.views}",
                f"{f['rotation']:.3f} ({f['max_rotation']:.3f})",
                f["points"],
                "; ".join(f"{p} {t:.0f} s, {m:.2f} GiB" for p, (t, m) in f["phases"].items()),
                f"{f['total']:.0f}",
                f"{f['total'] / base:.2f}×" if base else "-",
            ]
        )
    header = [
        "pipeline",
        "registered",
        "rotation error ° median (max)",
        "3-D points",
        "per phase: seconds, peak memory",
        "seconds",
        "time / COLMAP",
    ]
    text = markdown_table(header, rows) + (
        f"\n\n{args.views} views {w}×{h}; visiontk: 30 retrieval neighbours per image; "
        "COLMAP: exhaustive matching."
    )
    print(text)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.docs:
        publish("sfm_scale", text, command=f"python bench/sfm_scale.py --docs --views {args.views}")


if __name__ == "__main__":
    main()
