"""Stages that run once over a whole run (kind "model"): ``reconstruct``, structure from motion."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import OptionError
from ..pipeline.stage import Stage

CameraModel = Literal["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV"]
#: Thumbnails on the registration sheet (the images not registered come first).
SHEET_LIMIT = 120
#: Their width in pixels.
SHEET_WIDTH = 200
#: Photos the interactive 3-D view shows at most (spread evenly over the images).
MAX_PHOTOS = 300


@dataclass(frozen=True)
class ReconstructOptions:
    camera_model: CameraModel = "SIMPLE_RADIAL"
    single_camera: bool = False  # every image from one camera (else: one per EXIF camera)
    intrinsics: str = ""  # file of known intrinsics: "name MODEL width height params..." lines
    exif: bool = True  # focal length from EXIF when present (else COLMAP's 1.2 × longer side)
    min_model_size: int = 3  # smallest model kept (images)
    seed: int = 0  # the mapper's random seed (with threads = 1: the same model every run)
    refine: bool = True  # a last bundle adjustment with a robust (Cauchy) loss
    mapper: Literal["incremental", "global", "hierarchical"] = "incremental"
    leaf_images: int = 500  # hierarchical: images per cluster at most (COLMAP's default)
    threads: int = 0  # the mapper's threads, 0: all cores; 1: the same model bit for bit

    def __post_init__(self) -> None:
        if self.leaf_images < 3:
            raise OptionError(
                f"stage reconstruct: leaf_images must be >= 3, got {self.leaf_images}"
            )
        if self.min_model_size < 2:
            raise OptionError(
                f"stage reconstruct: min_model_size must be >= 2, got {self.min_model_size}"
            )
        if self.threads < 0:
            raise OptionError(f"stage reconstruct: threads must be >= 0, got {self.threads}")
        if self.seed < 0:
            raise OptionError(f"stage reconstruct: seed must be >= 0, got {self.seed}")


class ReconstructStage(Stage):
    """Map the run's images with COLMAP (pycolmap): OUT/sparse/<i>/, points.ply, model.png."""

    name = "reconstruct"
    kind = "model"
    inputs = ("features", "matches")
    outputs = ("model",)
    Options = ReconstructOptions
    #: summary.json's layout (2: not_registered as {image, reason, detail}, warnings)
    result_format = 2

    def check(self) -> None:
        from ..sfm.cameras import read_intrinsics
        from ..sfm.mapping import require_pycolmap

        require_pycolmap()
        if self.options.intrinsics:
            read_intrinsics(self.options.intrinsics)

    def run(self, context: dict[str, Any]) -> dict[str, Any]:
        """``context``: ``out`` (the run's folder), ``database`` (where the COLMAP database
        goes), ``images`` ((name, path) of the images with features), ``features`` ((name,
        features file)), ``pairs`` ((name_a, name_b, pair file)): the cache files of
        :mod:`visiontk.pipeline.store`; ``failed`` ((name, why) of the run's images that
        failed before they had features)."""
        import time

        from ..features import Features
        from ..pipeline.colmap import export_colmap
        from ..pipeline.store import read_pair
        from ..sfm.cameras import CameraChooser
        from ..sfm.diagnose import diagnose
        from ..sfm.mapping import ImageScan, map_database

        o, out = self.options, Path(context["out"])
        images = dict(context["images"])
        cameras = CameraChooser(
            images,
            model=o.camera_model,
            single_camera=o.single_camera,
            intrinsics=o.intrinsics,
            exif=o.exif,
        )
        t0 = time.perf_counter()
        # the images are read while the database is written and mapped (the sheet shows the
        # images not registered first: those past SHEET_LIMIT are read when it is drawn)
        names = sorted(images)
        step = max(1, -(-len(names) // MAX_PHOTOS))  # the 3-D view's photos, spread evenly
        scan = ImageScan(
            images, dict(context["features"]), {*names[:SHEET_LIMIT], *names[::step]}, SHEET_WIDTH
        )
        try:
            # generators: one image's features in memory at a time
            database = export_colmap(
                Path(context["database"]),
                ((n, Features.load(p)) for n, p in context["features"]),
                ((a, b, *read_pair(p)) for a, b, p in context["pairs"]),
                cameras=cameras,
            )
            t1 = time.perf_counter()
            models, summary = map_database(
                database,
                images,
                out,
                scan,
                min_model_size=o.min_model_size,
                seed=o.seed,
                refine=o.refine,
                mapper=o.mapper,
                leaf_images=o.leaf_images,
                threads=_threads(o.threads),
            )
        finally:
            scan.close()
        t2 = time.perf_counter()
        failed = dict(context.get("failed", []))
        summary["images"] += len(failed)
        summary["not_registered"], summary["warnings"] = diagnose(
            database, models, [*images, *failed], failed, min_model_size=o.min_model_size
        )
        t3 = time.perf_counter()
        pictures, summary["thumbnails"] = self._pictures(models, summary, images, scan.thumbs, out)
        summary["focal_length_from"] = dict(Counter(cameras.sources.values()))
        summary["cameras"] = len({id(c) for c in cameras.chosen.values()})
        summary["seconds"] = {
            "write database.db": t1 - t0,
            "map": t2 - t1,
            "diagnose": t3 - t2,
            "pictures": time.perf_counter() - t3,
        }
        summary["pictures"] = pictures
        summary["viewer"] = "model.html" if models and (out / "model.html").is_file() else None
        if not models:  # what the run's one line says
            summary["why"] = _why_no_model(summary["not_registered"], o.min_model_size)
        summary["files"] = [
            database.relative_to(out).as_posix(),
            *(["sparse", "points.ply"] if models else []),
            *pictures,
            *([summary["viewer"]] if summary["viewer"] else []),
        ]
        return summary

    @staticmethod
    def _pictures(models, summary, images, thumbs, out) -> tuple[list[str], dict[str, str]]:
        """model.png, registration.png (the images not registered first, marked with why),
        and a thumbnail of each image not registered for the report, under
        report/not_registered/. Returns the pictures and name -> thumbnail (relative to
        out)."""
        from .._files import own_folder
        from ..sfm.pictures import draw_model, registration_sheet
        from ..sfm.viewer import write_viewer
        from ..viz import save_image, thumbnail

        written = []
        if models:
            s = summary
            title = (
                f"{s['registered']} of {s['images']} images registered, {s['points']} "
                f"points, reprojection error {s['mean_reprojection_error']} px"
            )
            draw_model(models[0], out / "model.png", title)
            written.append("model.png")
            if write_viewer(models[0], out / "model.html", thumbs, title) is None:
                (out / "model.html").unlink(missing_ok=True)  # not an earlier run's
        else:
            (out / "model.png").unlink(missing_ok=True)
            (out / "model.html").unlink(missing_ok=True)
        reasons = {e["image"]: e["reason"] for e in summary["not_registered"]}
        order = sorted({*images, *reasons}, key=lambda n: (n not in reasons, n))[:SHEET_LIMIT]
        small = {
            n: thumbs[n] if n in thumbs else thumbnail(images[n], SHEET_WIDTH)
            for n in order
            if n in images  # an unreadable image has no picture
        }
        registration_sheet(
            [(n, small.get(n), reasons.get(n)) for n in order],
            out / "registration.png",
            width=SHEET_WIDTH,
        )
        shown = {}
        folder = out / "report" / "not_registered"
        shutil.rmtree(folder, ignore_errors=True)  # none of an earlier run's
        for n in order:
            picture = small.get(n)
            if n in reasons and picture is not None:
                own_folder(folder, out)
                # named by a hash: an escaped name (a/b.jpg -> a%2Fb.jpg) can pass the
                # file system's 255 bytes
                digest = hashlib.sha256(n.encode("utf-8", "surrogateescape")).hexdigest()
                relative = f"report/not_registered/{digest[:20]}.jpg"
                with contextlib.suppress(OSError):  # a thumbnail never fails the model
                    save_image(out / relative, picture)
                    shown[n] = relative
        return [*written, "registration.png"], shown


def _why_no_model(entries: list[dict], min_model_size: int) -> str:
    """The reasons of the images, most common first: "7 degenerate geometry, 1 unreadable"."""
    counts = Counter(e["reason"] for e in entries)
    text = ", ".join(f"{k} {reason}" for reason, k in counts.most_common()) or "no images"
    usable = counts["rejected by the mapper"]
    if 0 < usable < min_model_size:
        text += f"; {usable} usable images, fewer than min_model_size ({min_model_size})"
    return text


def _threads(asked: int) -> int:
    """The mapper's threads: 0 is all cores (pycolmap's -1); more than the usable cores is
    the usable cores (a billion asked for started 32k threads and made fork fail for every
    process on the machine)."""
    from ..pipeline.workers import usable_cores

    return -1 if asked == 0 else min(asked, usable_cores())
