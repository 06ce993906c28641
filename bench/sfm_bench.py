"""Photos to a 3-D model: `visiontk run sfm` against COLMAP's own pipeline (pycolmap extract +
exhaustive match + incremental map), same scenes, same run, each end to end in a fresh process.

Scenes are rendered with known cameras (visiontk.testing.scene: textured boxes on a textured
floor), so the poses are scored against the truth after a similarity alignment:

    python bench/sfm_bench.py [--rounds 3] [--docs]
    python bench/sfm_bench.py --more     # four other layouts, to check the defaults elsewhere
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_tables import add_docs_flag, markdown_table, parse_args, publish

#: (label, make_scene keyword arguments)
SCENES = [
    ("10 views 640×480", {"views": 10, "size": (640, 480)}),
    (
        "14 views 1280×960",
        {"views": 14, "size": (1280, 960), "focal": 1040.0, "arc_degrees": 140.0, "seed": 1},
    ),
    (
        "12 views 2048×1536",
        {"views": 12, "size": (2048, 1536), "focal": 1660.0, "arc_degrees": 120.0, "seed": 2},
    ),
    (
        "14 views 1280×960, phone JPEGs",
        {"views": 14, "size": (1280, 960), "focal": 1040.0, "arc_degrees": 140.0, "seed": 1},
    ),
    # the sizes of the AVX2 report (docs/benchmarks.md, "At AVX2"): a set and a larger one
    (
        "14 views 1024×768",
        {"views": 14, "size": (1024, 768), "focal": 830.0, "arc_degrees": 150.0, "seed": 4},
    ),
    (
        "40 views 1024×768",
        {"views": 40, "size": (1024, 768), "focal": 830.0, "arc_degrees": 150.0, "seed": 4},
    ),
]
#: Four more layouts (other seeds, sizes and arcs), not the ones the defaults were chosen on:
#: ``--more`` runs them instead of SCENES.
MORE_SCENES = [
    (
        "12 views 1024×768, seed 5",
        {"views": 12, "size": (1024, 768), "focal": 830.0, "arc_degrees": 100.0, "seed": 5},
    ),
    (
        "20 views 800×600, seed 7",
        {"views": 20, "size": (800, 600), "focal": 650.0, "arc_degrees": 160.0, "seed": 7},
    ),
    (
        "8 views 1600×1200, seed 3",
        {"views": 8, "size": (1600, 1200), "focal": 1300.0, "arc_degrees": 90.0, "seed": 3},
    ),
    ("10 views 640×480, seed 9", {"views": 10, "size": (640, 480), "seed": 9}),
]
#: Scenes written as a phone writes photos: JPEG (quality 95) with EXIF make, model and 35 mm
#: focal length (an integer, so 2% off the true focal), as one camera at one zoom.
PHONE = {3}

COLMAP_SCRIPT = """
import sys, pycolmap
pycolmap.logging.minloglevel = 2
images, out = sys.argv[1], sys.argv[2]
pycolmap.extract_features(out + "/database.db", images)
pycolmap.match_exhaustive(out + "/database.db")
models = pycolmap.incremental_mapping(out + "/database.db", images, out)
best = max(models.values(), key=lambda m: m.num_reg_images())
best.write(out)
"""


def sfm_pipeline(folder: Path, mapper: str, stages: list[str] | None = None) -> str:
    """The sfm preset, or a file in ``folder`` with another ``mapper`` or only the preset's
    ``stages`` (by name)."""
    if mapper == "incremental" and stages is None:
        return "sfm"
    from visiontk.pipeline.config import PIPELINES

    chosen = [dict(s) for s in PIPELINES["sfm"] if stages is None or s["name"] in stages]
    if stages is None:
        chosen[-1]["mapper"] = mapper
    lines = []
    for stage in chosen:
        lines.append("[[stages]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in stage.items()]
    path = folder / f"{'-'.join(stages or ['sfm'])}-{mapper}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run_visiontk(images: Path, out: Path, mapper: str = "incremental") -> float:
    pipeline = sfm_pipeline(images.parent, mapper)
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "visiontk_cli.main",
            "run",
            pipeline,
            "--images",
            str(images),
            "--out",
            str(out),
            "--quiet",
        ],
        check=True,  # default workers
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def run_colmap(images: Path, out: Path) -> float:
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", COLMAP_SCRIPT, str(images), str(out)],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def score(model_dir: Path, scene) -> dict:
    import pycolmap

    from visiontk.sfm.evaluate import model_poses, pose_errors

    model = pycolmap.Reconstruction(model_dir)
    truth = {n: (R, t) for n, R, t in zip(scene.names, scene.R, scene.t, strict=True)}
    errors = pose_errors(model_poses(model), truth)
    return {
        "registered": model.num_reg_images(),
        "points": model.num_points3D(),
        "rotation": errors["median_rotation_deg"],
        "max_rotation": errors["max_rotation_deg"],
        "centre": errors["median_centre"],
        "reprojection": model.compute_mean_reprojection_error(),
        "track": model.compute_mean_track_length(),
    }


def write_phone_jpegs(scene, folder: Path) -> None:
    """The views as JPEGs with the EXIF a phone writes (renames ``scene.names`` to match)."""
    from PIL import Image

    folder.mkdir(parents=True)
    h, w = scene.images[0].shape[:2]
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "visiontk", "rendered camera"  # Make, Model
    exif.get_ifd(0x8769)[0xA405] = round(scene.K[0, 0] / max(w, h) * 35)  # FocalLengthIn35mm
    scene.names = [Path(n).with_suffix(".jpg").name for n in scene.names]
    for name, image in zip(scene.names, scene.images, strict=True):
        Image.fromarray(image).save(folder / name, quality=95, exif=exif.tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per method (median)")
    add_docs_flag(parser, "sfm_bench")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--scenes", type=int, nargs="*", help="which scenes (0-based)")
    parser.add_argument("--more", action="store_true", help="the four other layouts instead")
    parser.add_argument(
        "--global",
        dest="global_mapper",
        action="store_true",
        help='also visiontk with mapper = "global" (COLMAP 4\'s GLOMAP)',
    )
    args = parse_args(parser)
    if args.more and args.docs:
        parser.error("--docs publishes the bench's own scenes; --more is for checking")
    scenes, phone = (MORE_SCENES, set()) if args.more else (SCENES, PHONE)
    from visiontk.testing.scene import make_scene

    rows, figures, spread = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (label, kwargs) in enumerate(scenes):
            if args.scenes and k not in args.scenes:
                continue
            scene = make_scene(**kwargs)
            images = Path(tmp) / f"scene{k}" / "images"
            if k in phone:
                write_phone_jpegs(scene, images)
            else:
                scene.write(images)
            methods = {
                "visiontk": (functools.partial(run_visiontk, mapper="incremental"), "sparse/0"),
                "COLMAP": (run_colmap, ""),
            }
            if args.global_mapper:
                methods["visiontk global"] = (
                    functools.partial(run_visiontk, mapper="global"),
                    "sparse/0",
                )
            times: dict[str, list[float]] = {method: [] for method in methods}
            for r in range(args.rounds):  # interleaved, so all see the same machine load
                for method, (fn, _) in methods.items():
                    out = images.parent / f"{method.replace(' ', '_')}_{r}"
                    times[method].append(fn(images, out))
            # every run scored; the row is the run of median rotation error (COLMAP's
            # pipeline varies from run to run, visiontk's does not), the spread below it
            results = {}
            for method, (_, where) in methods.items():
                runs = sorted(
                    (
                        score(images.parent / f"{method.replace(' ', '_')}_{r}" / where, scene)
                        for r in range(args.rounds)
                    ),
                    key=lambda s: s["rotation"],
                )
                results[method] = runs[len(runs) // 2]
                spread.append(
                    f"{label}, {method}: rotation error "
                    + ", ".join(f"{s['rotation']:.3f}" for s in runs)
                    + "°"
                )
            base = statistics.median(times["COLMAP"])
            for method, s in results.items():
                t = statistics.median(times[method])
                figures.append({"scene": label, "method": method, "seconds": t, **s})
                rows.append(
                    [
                        label,
                        method,
                        f"{s['registered']}/{len(scene.names)}",
                        f"{s['rotation']:.3f} ({s['max_rotation']:.3f})",
                        f"{1000 * s['centre']:.1f}",
                        s["points"],
                        f"{s['reprojection']:.3f}",
                        f"{s['track']:.2f}",
                        f"{t:.1f}",
                        f"{t / base:.2f}×",
                    ]
                )
    header = [
        "scene",
        "pipeline",
        "registered",
        "rotation error ° median (max)",
        "centre error mm (median)",
        "3-D points",
        "reprojection px",
        "track length",
        "seconds (median)",
        "time / COLMAP",
    ]
    text = (
        markdown_table(header, rows)
        + "\n\nMedian rotation error of each run, best first: "
        + "; ".join(spread)
        + "."
    )
    print(text)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if args.docs:
        chosen = f" --scenes {' '.join(map(str, args.scenes))}" if args.scenes else ""
        if args.global_mapper:  # its own table: the mappers side by side
            publish(
                "sfm_global", text, command=f"python bench/sfm_bench.py --docs{chosen} --global"
            )
        else:
            publish("sfm_bench", text, command=f"python bench/sfm_bench.py --docs{chosen}")


if __name__ == "__main__":
    main()
