"""Mapping a COLMAP database with pycolmap, and writing what a person wants from it.

:func:`map_database` runs COLMAP's incremental mapper on a database that visiontk wrote,
colours the points from the images, and writes ``sparse/<i>/`` (COLMAP's binary model, largest
model first) and ``points.ply`` (the largest model's coloured points); everything is written
under temporary names and renamed, so a killed run leaves the previous model or none, never
half of one.

``mapper="global"`` runs COLMAP 4's global mapper (GLOMAP's method) instead; which to use
when is measured in docs/benchmarks.md ("Global mapping").
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..errors import OptionError

MISSING = "reconstruct needs pycolmap: pip install 'visiontk[sfm]'"


def require_pycolmap() -> None:
    """A one-line error when pycolmap is not installed, without importing it: the run's
    process checks this before its workers start, and only the mapping worker imports it."""
    import importlib.util

    if importlib.util.find_spec("pycolmap") is None:
        raise OptionError(MISSING)


def import_pycolmap():
    """pycolmap, or a one-line error saying how to install it."""
    # OpenCV first: pycolmap's wheel carries a zlib under the system's soname, and a library
    # loaded after it that needs zlib (OpenCV's libpng) binds to that copy and can abort
    # writing a PNG (pycolmap 4.2.1, opencv-python 5.0; Pillow's PNG writer too). Loaded
    # OpenCV first, each keeps its own; docs/sfm.md tells scripts to import visiontk first.
    import cv2  # noqa: F401

    try:
        import pycolmap
    except ImportError:
        raise OptionError(MISSING) from None
    with contextlib.suppress(AttributeError):
        # warnings and errors only (no per-image chatter), or less where GLOG_minloglevel
        # says so (a quiet run)
        pycolmap.logging.minloglevel = max(2, pycolmap.logging.minloglevel)
    return pycolmap


#: Residuals from which a bundle adjustment runs on all threads (COLMAP's default: 50000).
BA_MULTITHREAD_RESIDUALS = 20000
#: The last bundle adjustment's loss: Cauchy, its scale in pixels; it stops when an iteration
#: lowers the cost by less than this fraction (on the bench's scenes the same poses as a fixed
#: 100 iterations, in a fraction of the time).
REFINE_LOSS_SCALE = 1.0
REFINE_FUNCTION_TOLERANCE = 1e-4
#: With that last adjustment to come, the mapper's own local and global adjustments stop when an
#: iteration lowers the cost by less than this fraction (COLMAP: 0, run to convergence): faster
#: mapping, the same images registered and points, rotation errors level (a looser tolerance
#: let them grow; docs/benchmarks.md, "Structure from motion").
MAPPER_FUNCTION_TOLERANCE = 1e-3
#: ... and the model grows by this factor (images or points) between its global adjustments
#: (COLMAP: 1.1; 1.4 is COLMAP's own setting for video, ModifyForVideoData): faster mapping on
#: rendered scenes, the same images registered and points, rotation errors level within the
#: noise of which view is the median (docs/benchmarks.md, "Structure from motion").
MAPPER_GLOBAL_GROWTH = 1.4


def map_database(
    database: Path,
    images: dict,
    out: Path,
    scan: ImageScan,
    *,
    min_model_size: int = 3,
    threads: int = -1,
    seed: int = 0,
    refine: bool = True,
    mapper: str = "incremental",
    leaf_images: int = 500,
) -> tuple[list, dict]:
    """Map ``database`` into ``out``; ``images``: name -> path of every image of the run;
    ``scan``: their keypoints' colours, read while this maps; ``refine``: a last robust bundle
    adjustment of each model (:func:`refine_model`); ``mapper``: COLMAP's "incremental"
    mapper, "global" (:func:`_global_mapping`), or "hierarchical": clusters of at most
    ``leaf_images`` images (overlapping by a tenth, 2 to 50 images, as COLMAP's defaults), each
    mapped incrementally, side by side, then merged; ``threads``: the mapper's and the
    adjustments' (-1: all cores; with 1 the same database gives the same model bit for bit,
    with more pycolmap's mapper varies in the last digits from run to run). Returns the models
    (pycolmap Reconstructions, largest first) and the summary (see :func:`describe`)."""
    pycolmap = import_pycolmap()
    out = Path(out)
    work = Path(tempfile.mkdtemp(prefix=".sparse.", suffix=".part", dir=out))
    try:
        options = _incremental_options(pycolmap, min_model_size, threads, seed, refine)
        if mapper == "hierarchical":
            if not hasattr(pycolmap, "hierarchical_mapping"):
                raise OptionError(
                    "mapper hierarchical needs pycolmap 4.2 or later: pip install -U pycolmap"
                )
            hierarchical = pycolmap.HierarchicalPipelineOptions()
            hierarchical.incremental_options = options
            hierarchical.num_threads = threads
            clusters = hierarchical.clustering_options
            clusters.leaf_max_num_images = leaf_images
            # a tenth, as COLMAP's 50 of 500; one shared image was too few to merge on
            clusters.image_overlap = max(2, min(50, leaf_images // 10))
            models = pycolmap.hierarchical_mapping(database, str(out), work, hierarchical)
        elif mapper == "global":
            models = _global_mapping(pycolmap, database, out, work, min_model_size, threads, seed)
        else:
            models = pycolmap.incremental_mapping(database, str(out), work, options)
        models = sorted(models.values(), key=lambda m: -m.num_reg_images())
        if refine:
            for model in models:
                refine_model(pycolmap, model, threads)
        colours = scan.result().colours
        for model in models:
            colour_points(model, colours)
        sparse = work / "sparse"
        for i, model in enumerate(models):
            (sparse / str(i)).mkdir(parents=True)
            model.write(sparse / str(i))
        if models:
            write_ply(models[0], work / "points.ply")
        _replace(sparse, out / "sparse")
        if models:
            _replace(work / "points.ply", out / "points.ply")
        else:
            with contextlib.suppress(FileNotFoundError):
                (out / "points.ply").unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return models, describe(models, images)


def _global_mapping(pycolmap, database: Path, out: Path, work: Path, min_size, threads, seed):
    """COLMAP's global mapper (GLOMAP's method: rotation averaging, then all positions at
    once) on a copy of the database: its view-graph calibration first fits the focal lengths
    from the pairs' fundamental matrices and writes calibrated two-view geometries, which the
    run's database.db keeps as visiontk verified them."""
    copy = work / "global.db"
    shutil.copyfile(database, copy)
    pycolmap.calibrate_view_graph(str(copy))
    options = pycolmap.GlobalPipelineOptions()
    options.min_model_size = min_size
    options.num_threads = threads
    options.random_seed = seed
    options.mapper.num_threads = threads
    options.mapper.random_seed = seed
    return pycolmap.global_mapping(str(copy), str(out), work, options)


def _incremental_options(pycolmap, min_model_size: int, threads: int, seed: int, refine: bool):
    options = pycolmap.IncrementalPipelineOptions()
    options.min_model_size = min_model_size
    options.num_threads = threads
    options.random_seed = seed
    options.extract_colors = False  # done below, with EXIF turning as the features had
    # Bundle adjustment is most of the mapper's time: every thread from 20000 residuals
    # (COLMAP waits for 50000, which leaves a mid-sized scene's adjustments on one core;
    # far lower, a small scene's small adjustments pay more for threads than they gain).
    # COLMAP's ba_global_ignore_redundant_points3D saves time but moved camera centres
    # further from the truth: not used.
    options.ba_min_num_residuals_for_cpu_multi_threading = BA_MULTITHREAD_RESIDUALS
    if refine:  # converged once, at the end (MAPPER_FUNCTION_TOLERANCE, MAPPER_GLOBAL_GROWTH)
        options.ba_local_function_tolerance = MAPPER_FUNCTION_TOLERANCE
        options.ba_global_function_tolerance = MAPPER_FUNCTION_TOLERANCE
        options.ba_global_frames_ratio = MAPPER_GLOBAL_GROWTH
        options.ba_global_points_ratio = MAPPER_GLOBAL_GROWTH
    return options


def refine_model(pycolmap, model, threads: int = -1) -> None:
    """A last bundle adjustment of ``model`` with a Cauchy loss (scale 1 px). COLMAP's mapper
    adjusts with squared errors and drops only observations past 4 px, so the wrong ones it
    keeps at 1-4 px (a match slid along its epipolar line, a corner on a depth edge) pull on
    every camera. On the bench's scenes it brings the cameras closer to the truth, the phone
    JPEGs' rotations aside (docs/benchmarks.md, "Structure from motion")."""
    options = pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    options.ceres.loss_function_scale = REFINE_LOSS_SCALE
    options.ceres.solver_options.function_tolerance = REFINE_FUNCTION_TOLERANCE
    options.ceres.min_num_residuals_for_cpu_multi_threading = BA_MULTITHREAD_RESIDUALS
    options.ceres.solver_options.num_threads = threads
    # What pycolmap.bundle_adjustment runs (COLMAP's BundleAdjustmentController), without the
    # controller: it turned the log level back to INFO (pycolmap 4.2.1), and the worker's
    # later calls chattered on stderr. The same poses to 1e-14.
    pycolmap.ObservationManager(model).filter_observations_with_negative_depth()
    config = pycolmap.BundleAdjustmentConfig()
    for image_id in model.reg_image_ids():
        config.add_image(image_id)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    pycolmap.create_default_bundle_adjuster(options, config, model).solve()
    model.update_point_3d_errors()


def describe(models: list, images: dict) -> dict:
    """Counts for summary.json: images registered of all, points, errors, tracks, per model
    (why the others are not registered: :mod:`visiontk.sfm.diagnose`)."""
    registered = set()
    per_model = []
    for model in models:
        names = sorted(model.image(i).name for i in model.reg_image_ids())
        registered.update(names)
        per_model.append(
            {
                "images": len(names),
                "points": int(model.num_points3D()),
                "mean_reprojection_error": _finite(model.compute_mean_reprojection_error()),
                "mean_track_length": _finite(model.compute_mean_track_length()),
                "mean_observations_per_image": _finite(
                    model.compute_mean_observations_per_reg_image()
                ),
                "cameras": int(model.num_cameras()),
                "registered": names,
            }
        )
    largest = per_model[0] if per_model else {}
    return {
        "images": len(images),
        "registered": len(registered),
        "models": len(models),
        "points": largest.get("points", 0),
        "mean_reprojection_error": largest.get("mean_reprojection_error"),
        "mean_track_length": largest.get("mean_track_length"),
        "per_model": per_model,
    }


def _finite(value) -> float | None:
    value = float(value)
    return round(value, 4) if np.isfinite(value) else None


class ImageScan:
    """Every image read once, in a thread beside the mapper (pycolmap releases the GIL while it
    maps): the colour under each keypoint (:attr:`colours`, name -> N×3 uint8), and a
    thumbnail of the images in ``thumbnails`` (:attr:`thumbs`) for the registration sheet.
    Read after mapping instead, twice (colours, then thumbnails), their whole reading time
    was added to the reconstruct stage. ``features``: name -> its features file."""

    def __init__(self, images: dict, features: dict, thumbnails=(), width: int = 200):
        self.colours: dict = {}
        self.thumbs: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._scan,
            args=(images, features, set(thumbnails), width),
            daemon=True,
            name="visiontk-image-scan",
        )
        self._thread.start()

    def _scan(self, images: dict, features: dict, thumbnails: set, width: int) -> None:
        from ..features import Features
        from ..io import load_rgb
        from ..viz import shrink

        for name, path in images.items():
            if self._stop.is_set():
                return
            try:
                rgb = load_rgb(path)
                if name in thumbnails:
                    self.thumbs[name] = shrink(rgb, width)
                if name in features:
                    f = Features.load(features[name])
                    self.colours[name] = keypoint_colours(rgb, f.xy, f.image_size)
            except Exception:  # changed or gone since its features: no colours, no thumbnail
                continue

    def result(self) -> ImageScan:
        """This scan, finished."""
        self._thread.join()
        return self

    def close(self) -> None:
        """Stop reading (after the image being read) and wait: a failed stage leaves no thread
        behind in its worker."""
        self._stop.set()
        self._thread.join()


def keypoint_colours(rgb: np.ndarray, xy: np.ndarray, image_size) -> np.ndarray:
    """The pixel of ``rgb`` under each keypoint ``xy`` found on the image at ``image_size``
    (height, width), scaled if that is not ``rgb``'s size (the pipeline's features are in the
    file's pixels, the load stage's ``max_side`` undone: the same size there)."""
    h, w = image_size
    rows, cols = rgb.shape[:2]
    x = np.rint((xy[:, 0] + 0.5) * cols / max(w, 1) - 0.5).astype(np.int64)
    y = np.rint((xy[:, 1] + 0.5) * rows / max(h, 1) - 0.5).astype(np.int64)
    return rgb[np.clip(y, 0, rows - 1), np.clip(x, 0, cols - 1)]


def colour_points(model, colours: dict) -> None:
    """Each 3-D point's colour: the mean colour under the keypoints that observe it
    (``colours``: image name -> one row per keypoint, as :func:`keypoint_colours`)."""
    ids = np.array(list(model.point3D_ids()), np.int64)
    if not len(ids):
        return
    index = {int(p): k for k, p in enumerate(ids)}
    total = np.zeros((len(ids), 3))
    count = np.zeros(len(ids))
    for image_id in model.reg_image_ids():
        image = model.image(image_id)
        table = colours.get(image.name)
        if table is None or len(table) != len(image.points2D):
            continue
        observed = [
            (k, index[p.point3D_id]) for k, p in enumerate(image.points2D) if p.has_point3D()
        ]
        if observed:
            keypoint, point = np.array(observed).T
            np.add.at(total, point, table[keypoint])
            np.add.at(count, point, 1)
    rgb = np.rint(total / np.maximum(count, 1)[:, None]).astype(np.uint8)
    for point_id, colour in zip(ids, rgb, strict=True):
        model.point3D(int(point_id)).color = colour


def write_ply(model, path: Path) -> None:
    """Binary little-endian PLY: x y z (float32), red green blue (uint8)."""
    points = [model.point3D(int(i)) for i in model.point3D_ids()]
    data = np.zeros(
        len(points),
        [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")],
    )
    if points:
        xyz = np.array([p.xyz for p in points], np.float32)
        rgb = np.array([p.color for p in points], np.uint8)
        for k, axis in enumerate("xyz"):
            data[axis] = xyz[:, k]
        for k, channel in enumerate(("red", "green", "blue")):
            data[channel] = rgb[:, k]
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(data.tobytes())


def _replace(new: Path, final: Path) -> None:
    """Put ``new`` where ``final`` is, in one rename when final is a file; a folder swaps in
    two renames (the old one moved aside first, then removed)."""
    if new.is_dir() and final.exists():
        aside = final.with_name(f".{final.name}.{secrets.token_hex(4)}.part")
        final.rename(aside)
        new.rename(final)
        shutil.rmtree(aside, ignore_errors=True)
    elif new.exists():
        new.replace(final)
    elif final.is_dir():  # no models now: no stale ones either
        shutil.rmtree(final)
