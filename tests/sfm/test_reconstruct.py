"""visiontk run sfm on a rendered 3-D scene with known cameras (visiontk.testing.scene)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from visiontk.errors import OptionError
from visiontk.pipeline import Pipeline
from visiontk.sfm.evaluate import model_poses, pose_errors
from visiontk.testing.scene import make_scene

pycolmap = pytest.importorskip("pycolmap")


@pytest.fixture(scope="module")
def scene():
    return make_scene(views=10, size=(640, 480))


@pytest.fixture(scope="module")
def photos(scene, tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    scene.write(folder)
    return folder


@pytest.fixture(scope="module")
def mapped(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("sfm")
    result = Pipeline.from_file("sfm").run(photos, out, workers=2, quiet=True)
    return result, out


def truth_of(scene):
    return {n: (R, t) for n, R, t in zip(scene.names, scene.R, scene.t, strict=True)}


def test_every_view_registered_with_true_poses(mapped, scene):
    result, out = mapped
    assert result.ok, result.failures
    summary = result.models["reconstruct"]
    assert summary["registered"] == summary["images"] == len(scene.names)
    assert summary["not_registered"] == [] and summary["warnings"] == []
    assert summary["cameras"] == len(scene.names)  # no EXIF: a camera per image, as COLMAP
    model = pycolmap.Reconstruction(out / "sparse" / "0")  # COLMAP's files read back
    assert model.num_reg_images() == len(scene.names)
    assert model.num_points3D() == summary["points"] > 1000
    errors = pose_errors(model_poses(model), truth_of(scene))
    # the cameras stand 4.2 m from the boxes; the truth is exact
    assert errors["median_rotation_deg"] < 0.3 and errors["max_rotation_deg"] < 1.0
    assert errors["median_centre"] < 0.02
    assert 0 < summary["mean_reprojection_error"] < 0.8
    assert summary["mean_track_length"] > 3


def test_model_files_pictures_and_summary(mapped):
    result, out = mapped
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["models"]["reconstruct"]["points"] == result.models["reconstruct"]["points"]
    header, _, body = (out / "points.ply").read_bytes().partition(b"end_header\n")
    count = int(header.split(b"element vertex ")[1].split()[0])
    assert count == result.models["reconstruct"]["points"] and len(body) == count * 15
    colours = np.frombuffer(body, np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)]))["rgb"]
    assert colours.std() > 20  # coloured from the photos, not one flat colour
    import cv2

    for name in ("model.png", "registration.png"):
        picture = cv2.imread(str(out / name))
        assert picture is not None and picture.std() > 10, name
    assert result.colmap_path == out / "database.db"
    page = (out / "index.html").read_text()
    assert 'src="model.png"' in page and 'src="registration.png"' in page
    assert "10 of 10 images in 1 model(s)" in page
    assert "10 (one set of intrinsics each)" in page


def test_points_coloured_from_the_pixels_that_observe_them(mapped, photos):
    import cv2

    model = pycolmap.Reconstruction(mapped[1] / "sparse" / "0")
    seen = {}
    for image_id in model.reg_image_ids():
        image = model.image(image_id)
        rgb = cv2.imread(str(photos / image.name))[:, :, ::-1]
        for p in image.points2D:
            if p.has_point3D():
                x, y = np.floor(p.xy).astype(int)  # COLMAP's pixel centres are at +0.5
                seen.setdefault(p.point3D_id, []).append(rgb[y, x])
    assert len(seen) == model.num_points3D()
    worst = max(np.abs(model.point3D(i).color - np.mean(c, axis=0)).max() for i, c in seen.items())
    assert worst <= 0.5


def test_robust_refinement_brings_the_cameras_closer_to_the_truth(mapped, photos, scene, tmp_path):
    from visiontk.sfm.mapping import ImageScan, map_database

    images = {n: photos / n for n in scene.names}
    errors = {}
    database = tmp_path / "database.db"  # a copy: the mapper opening it changes its bytes
    shutil.copy(mapped[1] / "database.db", database)
    for refine in (False, True):
        out = tmp_path / str(refine)
        out.mkdir()
        models, _ = map_database(database, images, out, ImageScan({}, {}), refine=refine)
        errors[refine] = pose_errors(model_poses(models[0]), truth_of(scene))
    assert pycolmap.logging.minloglevel == 2  # still quiet: no INFO lines on the run's stderr
    # the mapper's squared loss lets its 1-4 px outliers pull: 0.103 -> 0.062 deg, 3.9 -> 2.3 mm
    assert errors[True]["median_rotation_deg"] < 0.8 * errors[False]["median_rotation_deg"]
    assert errors[True]["median_centre"] < 0.8 * errors[False]["median_centre"]


def test_image_scan_skips_images_gone_or_broken_since_their_features(tmp_path, samples):
    import cv2

    from visiontk import Features
    from visiontk.sfm.mapping import ImageScan

    rgb = cv2.cvtColor(cv2.imread(str(samples / "coffee.png")), cv2.COLOR_BGR2RGB)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), rgb[:, :, ::-1])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    xy = np.array([[10.0, 20.0], [100.0, 50.0]], np.float32)
    feats = Features(
        xy,
        np.ones(2, np.float32),
        np.zeros(2, np.float32),
        np.ones(2, np.float32),
        np.zeros(2, np.int32),
        np.zeros((2, 128), np.uint8),
        rgb.shape[:2],
    )
    feats.save(tmp_path / "f.npz")
    images = {n: tmp_path / n for n in ("good.png", "broken.png", "gone.png")}
    scan = ImageScan(images, {n: tmp_path / "f.npz" for n in images}, images, 50).result()
    assert list(scan.colours) == ["good.png"] and list(scan.thumbs) == ["good.png"]
    assert np.array_equal(scan.colours["good.png"], rgb[[20, 50], [10, 100]])
    assert scan.thumbs["good.png"].shape[1] == 50


def test_keypoint_colours_on_a_scaled_down_image():
    from visiontk.sfm.mapping import keypoint_colours

    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), np.uint8)
    xy = np.array([[0.2, 0.1], [10.2, 5.9], [28.9, 18.8], [-0.4, 25]], np.float32)  # on 30×20
    # pixel x of the half-size image covers x = 2x and 2x+1 here: its centre 2x + 0.5
    expected = rgb[[1, 12, 38, 39], [1, 21, 58, 0]]
    assert np.array_equal(keypoint_colours(rgb, xy, (20, 30)), expected)
    assert np.array_equal(keypoint_colours(rgb, xy[:2], (40, 60)), rgb[[0, 6], [0, 10]])


def test_rerun_reuses_the_model(mapped, photos):
    result, out = mapped
    before = (out / "sparse" / "0" / "points3D.bin").stat().st_mtime_ns
    again = Pipeline.from_file("sfm").run(photos, out, quiet=True)
    assert again.models == result.models
    assert "reconstruct" not in again.stage_seconds  # nothing was mapped again
    assert (out / "sparse" / "0" / "points3D.bin").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "damage",
    ["truncated database", "database byte flipped", "model file deleted", "model file changed"],
)
def test_a_damaged_model_is_made_again_not_reused(mapped, photos, tmp_path, damage):
    """A truncated database.db or a sparse model missing a file used to be reported as the
    run's model ("10 of 10 registered", exit 0) because their names were there."""
    result, out = mapped
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    db = copy / "database.db"
    if damage == "truncated database":
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    elif damage == "database byte flipped":  # inside a descriptor: SQLite's checks pass
        data = bytearray(db.read_bytes())
        data[len(data) // 2] ^= 1
        db.write_bytes(bytes(data))
    elif damage == "model file deleted":
        (copy / "sparse" / "0" / "points3D.bin").unlink()
    else:
        points = copy / "sparse" / "0" / "points3D.bin"
        data = bytearray(points.read_bytes())
        data[len(data) // 2] ^= 0xFF
        points.write_bytes(bytes(data))
    again = Pipeline.from_file("sfm").run(photos, copy, quiet=True)
    assert "reconstruct" in again.stage_seconds  # mapped again
    assert again.models["reconstruct"]["registered"] == result.models["reconstruct"]["registered"]
    assert (copy / "sparse" / "0" / "points3D.bin").is_file()
    import pycolmap

    assert pycolmap.Reconstruction(str(copy / "sparse" / "0")).num_points3D() > 100


def test_unrelated_images_are_listed_not_registered(photos, tmp_path, samples):
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    # a stereo pair of something else: they match each other, but two images are not a model
    for name in ("motorcycle_left.png", "motorcycle_right.png"):
        shutil.copy(samples / name, folder / f"zz_{name}")
    out = tmp_path / "out"
    result = Pipeline.from_file("sfm").run(folder, out, quiet=True)
    summary = result.models["reconstruct"]
    assert summary["images"] == 12 and summary["registered"] == 10
    assert [e["image"] for e in summary["not_registered"]] == [
        "zz_motorcycle_left.png",
        "zz_motorcycle_right.png",
    ]


def test_known_intrinsics_and_one_camera(photos, scene, tmp_path):
    K = scene.K
    (tmp_path / "cameras.txt").write_text(
        f"# name MODEL width height params\n* PINHOLE 640 480 {K[0, 0]} {K[1, 1]} {K[0, 2]} "
        f"{K[1, 2]}\n"
    )
    spec = [
        {"name": "load"},
        {"name": "sift"},
        {"name": "match"},
        {"name": "verify", "model": "fundamental"},
        {"name": "reconstruct", "intrinsics": str(tmp_path / "cameras.txt"), "single_camera": True},
    ]
    out = tmp_path / "out"
    result = Pipeline.from_spec(spec).run(photos, out, quiet=True)
    summary = result.models["reconstruct"]
    assert summary["registered"] == 10 and summary["focal_length_from"] == {"file": 10}
    assert summary["cameras"] == 1
    model = pycolmap.Reconstruction(out / "sparse" / "0")
    assert model.num_cameras() == 1
    camera = next(iter(model.cameras.values()))
    assert camera.model.name == "PINHOLE"
    assert np.allclose(camera.params[:2], K[0, 0], rtol=0.02)  # refined, but it started true


@pytest.mark.skipif(
    not hasattr(pycolmap, "hierarchical_mapping"),
    reason="pycolmap < 4.2 has no hierarchical_mapping",
)
def test_hierarchical_mapper_merges_clusters_into_one_model(mapped, photos, scene, tmp_path):
    from visiontk.sfm.mapping import ImageScan, map_database

    images = {n: photos / n for n in scene.names}
    # clusters of at most 5 of the 10 views, mapped on their own, then merged
    models, summary = map_database(
        mapped[1] / "database.db",
        images,
        tmp_path,
        ImageScan({}, {}),
        mapper="hierarchical",
        leaf_images=5,
    )
    assert summary["models"] == 1 and summary["registered"] == 10
    errors = pose_errors(model_poses(models[0]), truth_of(scene))
    assert errors["median_rotation_deg"] < 0.3 and errors["median_centre"] < 0.02


def test_hierarchical_mapper_on_an_old_pycolmap_is_a_one_line_error(
    mapped, photos, scene, tmp_path, monkeypatch
):
    from visiontk.sfm.mapping import ImageScan, map_database

    monkeypatch.delattr(pycolmap, "hierarchical_mapping", raising=False)  # as pycolmap 4.1
    with pytest.raises(OptionError, match=r"needs pycolmap 4\.2 or later") as info:
        map_database(
            mapped[1] / "database.db",
            {n: photos / n for n in scene.names},
            tmp_path,
            ImageScan({}, {}),
            mapper="hierarchical",
        )
    assert "\n" not in str(info.value)


def test_reconstruct_needs_matches_and_comes_last():
    with pytest.raises(OptionError, match="needs matches"):
        Pipeline.from_spec([{"name": "load"}, {"name": "sift"}, {"name": "reconstruct"}])
    with pytest.raises(OptionError, match="in this order"):
        Pipeline.from_spec(
            [
                {"name": "load"},
                {"name": "sift"},
                {"name": "match"},
                {"name": "reconstruct"},
                {"name": "verify"},
            ]
        )


@pytest.mark.parametrize(
    "options, words",
    [
        ({"min_model_size": 1}, "min_model_size must be >= 2"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"camera_model": "FISHEYE"}, "camera_model must be one of"),
        ({"exif": "yes"}, "exif must be"),
        ({"mapper": "glomap"}, "mapper must be one of"),
        ({"leaf_images": 2}, "leaf_images must be"),
        ({"threads": -1}, "threads must be >= 0"),
    ],
)
def test_bad_reconstruct_options_are_one_line_errors(options, words):
    spec = [
        {"name": "load"},
        {"name": "sift"},
        {"name": "match"},
        {"name": "reconstruct", **options},
    ]
    with pytest.raises(OptionError, match=words) as info:
        Pipeline.from_spec(spec)
    assert "\n" not in str(info.value) and "stage reconstruct" in str(info.value)


def test_bad_intrinsics_file_fails_before_any_image(photos, tmp_path):
    bad = tmp_path / "cameras.txt"
    bad.write_text("view_00.png PINHOLE 640 480 500 500\n")
    spec = [
        {"name": "load"},
        {"name": "sift"},
        {"name": "match"},
        {"name": "reconstruct", "intrinsics": str(bad)},
    ]
    with pytest.raises(OptionError, match=r"cameras.txt:1: PINHOLE takes 4 params"):
        Pipeline.from_spec(spec).run(photos, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out" / "features.h5").exists()


def test_images_that_share_nothing_make_no_model(tmp_path, photo_folder):
    folder = photo_folder("astronaut.png", "coffee.png", "motorcycle_left.png")
    out = tmp_path / "out"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "visiontk_cli.main",
            "run",
            "sfm",
            "--images",
            str(folder),
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 1, p.stderr  # a run that makes no model did not do its job
    [line] = p.stderr.strip().splitlines()
    assert line.startswith(
        "error: reconstruct: no model (0 of 3 images registered: 3 no verified pairs)"
    )
    summary = json.loads((out / "summary.json").read_text())["models"]["reconstruct"]
    assert summary["models"] == 0 and [
        (e["image"], e["reason"]) for e in summary["not_registered"]
    ] == [(n, "no verified pairs") for n in ("astronaut.png", "coffee.png", "motorcycle_left.png")]
    assert not (out / "sparse").exists() and not (out / "model.png").exists()
    assert (out / "registration.png").exists()
    assert json.loads((out / "summary.json").read_text())["ok"] is False
    page = (out / "index.html").read_text()
    assert "0 of 3 images: no model" in page and "None" not in page  # was "None px"


def test_two_images_say_they_are_fewer_than_a_model_needs(tmp_path, photo_folder):
    """The stereo pair (1800 inliers) said 'too few matches between them'."""
    folder = photo_folder("motorcycle_left.png", "motorcycle_right.png")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "visiontk_cli.main",
            "run",
            "sfm",
            "--images",
            str(folder),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 1
    assert (
        "registered: 2 rejected by the mapper; 2 usable images, fewer than min_model_size (3))"
    ) in p.stderr
    assert "not registered: motorcycle_left.png (rejected by the mapper); " in p.stdout


def test_without_pycolmap_one_line_before_any_image(photos, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # as if it were not installed
    with pytest.raises(
        OptionError,
        match=r"reconstruct needs pycolmap: pip install "
        r"'visiontk\[sfm\]'",
    ):
        Pipeline.from_file("sfm").run(photos, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out" / "features.h5").exists()


def test_one_thread_maps_the_same_model_bit_for_bit(mapped, photos, scene, tmp_path):
    from visiontk.sfm.mapping import ImageScan, map_database

    images = {n: photos / n for n in scene.names}
    written = []
    for run in ("a", "b"):
        out = tmp_path / run
        out.mkdir()
        map_database(mapped[1] / "database.db", images, out, ImageScan({}, {}), threads=1)
        written.append({f.name: f.read_bytes() for f in (out / "sparse" / "0").iterdir()})
    assert set(written[0]) >= {"cameras.bin", "images.bin", "points3D.bin"}
    assert written[0] == written[1]
