"""The pipeline runner: stages, registry, files and presets, outputs, resume, failures."""

import json
import re
import sys
import textwrap

import cv2
import h5py
import numpy as np
import pytest
from plugins import install_plugin

import visiontk
from visiontk.errors import OptionError
from visiontk.pipeline import Pipeline, load_stage, stage_names
from visiontk.pipeline.store import read_features_h5


@pytest.fixture(scope="module")
def folder(tmp_path_factory, samples):
    """Five real photos, one in a subfolder, plus nothing else."""
    d = tmp_path_factory.mktemp("images")
    (d / "sub").mkdir()
    for name in ("astronaut.png", "coffee.png", "coffee_warped.png", "motorcycle_left.png"):
        (d / name).write_bytes((samples / name).read_bytes())
    (d / "sub" / "motorcycle_right.png").write_bytes(
        (samples / "motorcycle_right.png").read_bytes()
    )
    return d


def h5_snapshot(path):
    """Every dataset and attribute of an HDF5 file, for equality checks."""
    out = {}
    with h5py.File(path, "r") as h5:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
            out.update({f"{name}@{k}": v for k, v in obj.attrs.items() if k != "key"})

        h5.visititems(visit)
    return out


def assert_same_h5(a, b):
    sa, sb = h5_snapshot(a), h5_snapshot(b)
    assert sorted(sa) == sorted(sb)
    for k in sa:
        np.testing.assert_array_equal(np.asarray(sa[k]), np.asarray(sb[k]), err_msg=k)


# --- stages and registry -------------------------------------------------------------------


def test_builtin_stages_are_registered_through_entry_points():
    assert {"load", "sift", "match", "verify"} <= set(stage_names())
    assert load_stage("sift").kind == "image" and load_stage("match").kind == "pair"


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"name": "sift", "colour": True}, ["stage sift", "unknown option 'colour'"]),
        ({"name": "sift", "max_features": "many"}, ["stage sift", "max_features", "integer"]),
        ({"name": "sift", "upright": 1}, ["stage sift", "upright", "true or false"]),
        (
            {"name": "match", "pairs": "sequential"},
            ["stage match", "option pairs moved", "pairs-sequential"],
        ),
        ({"name": "pairs-sequential", "window": 0}, ["stage pairs-sequential", "window"]),
        ({"name": "match", "device": "gpu"}, ["stage match", "device", "one of auto, cpu, cuda"]),
        ({"name": "verify", "threshold": -1.0}, ["stage verify", "threshold"]),
        ({"name": "load", "max_side": 3}, ["stage load", "max_side"]),
        ({"name": "nope"}, ["unknown stage 'nope'"]),
    ],
)
def test_bad_options_are_one_line_errors(spec, words):
    with pytest.raises(OptionError) as e:
        Pipeline.from_spec([spec])
    message = str(e.value)
    assert "\n" not in message
    for w in words:
        assert w in message


@pytest.mark.parametrize("stage", ["sift", "match", "dino-attention"])
def test_a_device_typo_fails_when_the_pipeline_is_read(stage):
    with pytest.raises(OptionError, match="one of auto, cpu, cuda"):
        Pipeline.from_spec([{"name": "load"}, {"name": "sift"}, {"name": stage, "device": "cdua"}])


def test_pipeline_checks_stage_order_and_inputs():
    with pytest.raises(OptionError, match="needs image"):
        Pipeline.from_spec([{"name": "sift"}])
    # a second sift or verify replaced the first one's outputs unseen
    for twice in ("sift", "verify"):
        spec = [{"name": "load"}, {"name": "sift"}, {"name": "match"}, {"name": "verify"}]
        spec.insert(next(i for i, s in enumerate(spec) if s["name"] == twice), {"name": twice})
        with pytest.raises(OptionError, match=f"stage {twice} appears twice"):
            Pipeline.from_spec(spec)
    with pytest.raises(OptionError, match="stages go in this order"):
        Pipeline.from_spec(
            [{"name": "load"}, {"name": "sift"}, {"name": "match"}, {"name": "load"}]
        )
    with pytest.raises(OptionError, match="stages go in this order"):
        Pipeline.from_spec(
            [{"name": "load"}, {"name": "sift"}, {"name": "match"}, {"name": "pairs-sequential"}]
        )
    with pytest.raises(OptionError, match="one pair selection per pipeline"):
        Pipeline.from_spec(
            [
                {"name": "load"},
                {"name": "sift"},
                {"name": "pairs-exhaustive"},
                {"name": "pairs-sequential"},
                {"name": "match"},
            ]
        )
    with pytest.raises(OptionError, match="no per-pair stage follows"):
        Pipeline.from_spec([{"name": "load"}, {"name": "sift"}, {"name": "pairs-exhaustive"}])
    with pytest.raises(OptionError, match="different kinds of files"):
        Pipeline.from_spec([{"name": "load"}, {"name": "branches"}])
    default = Pipeline.from_spec([{"name": "load"}, {"name": "sift"}, {"name": "match"}])
    assert default.selection.name == "pairs-exhaustive"


def test_toml_and_yaml_files_and_safe_loading(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text(
        textwrap.dedent("""
        [[stages]]
        name = "load"
        max_side = 800
        [[stages]]
        name = "sift"
        max_features = 100
    """)
    )
    yml = tmp_path / "p.yaml"
    yml.write_text(
        "stages:\n  - {name: load, max_side: 800}\n  - {name: sift, max_features: 100}\n"
    )
    a, b = Pipeline.from_file(toml), Pipeline.from_file(yml)
    assert [s.describe() for s in a.stages] == [s.describe() for s in b.stages]
    assert a.stages[1].options.max_features == 100
    evil = tmp_path / "evil.yaml"
    evil.write_text("stages: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(OptionError, match="not valid YAML"):
        Pipeline.from_file(evil)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(OptionError, match="no such pipeline file or preset"):
        Pipeline.from_file(tmp_path / "missing.toml")
    # what is wrong with a file's stages names the file
    typo = tmp_path / "typo.yaml"
    typo.write_text("stages:\n  - {name: load}\n  - {name: sfit}\n")
    with pytest.raises(OptionError, match=f"^{re.escape(str(typo))}: unknown stage 'sfit'"):
        Pipeline.from_file(typo)
    order = tmp_path / "order.yaml"
    order.write_text("stages:\n  - {name: load}\n  - {name: match}\n  - {name: sift}\n")
    with pytest.raises(OptionError, match=f"^{re.escape(str(order))}: stages go in this order"):
        Pipeline.from_file(order)


def test_a_yaml_alias_bomb_as_an_option_is_refused_in_a_short_line(tmp_path):
    """The message used to print the whole value: a billion-laughs alias grew memory without
    end. Six levels of ten here, a million items (the old message: 7 MB)."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("stages:\n  - {name: load, max_side: " + _nested(6) + "}\n")
    with pytest.raises(OptionError, match="option max_side must be an integer") as raised:
        Pipeline.from_file(bomb)
    assert str(raised.value).startswith(f"{bomb}: ")  # the file's name, then a short line
    assert len(str(raised.value)) - len(str(bomb)) < 200


@pytest.mark.parametrize(
    "suffix, text",
    [
        (".yaml", "stages: [{name: load, max_side: " + "[" * 5000 + "]" * 5000 + "}]\n"),
        (".toml", '[[stages]]\nname = "load"\nmax_side = ' + "[" * 3000 + "1" + "]" * 3000 + "\n"),
    ],
)
def test_a_pipeline_file_nested_past_reason_is_one_line(tmp_path, suffix, text):
    """An internal RecursionError from the parsers (exit 1) instead of a usage error."""
    deep = tmp_path / f"deep{suffix}"
    deep.write_text(text)
    with pytest.raises(OptionError, match="nested too deeply"):
        Pipeline.from_file(deep)


def _nested(depth: int) -> str:
    """A YAML flow value holding 10**depth items through anchors and aliases."""
    value = "&b0 [x, x, x, x, x, x, x, x, x, x]"
    for i in range(1, depth + 1):
        value = f"&b{i} [{value}, " + ", ".join([f"*b{i - 1}"] * 9) + "]"
    return value


@pytest.mark.parametrize(
    "spec, words",
    [
        ([{"name": "sift", "max_features": 10**40}], "within ±2,147,483,647"),
        ([{"name": "load", "max_side": float("inf")}], "must be an integer"),
        ([{"name": "verify", "threshold": float("nan")}], "finite number"),
        ([{"name": "sift", "preset": "x" * 10**6}], "preset must be one of"),
    ],
)
def test_numbers_and_strings_past_any_use_are_refused_in_one_short_line(spec, words):
    with pytest.raises(OptionError, match=words) as raised:
        Pipeline.from_spec([{"name": "load"}, *spec] if spec[0]["name"] != "load" else spec)
    assert len(str(raised.value)) < 300


def test_unknown_top_level_keys_in_a_pipeline_file_are_named(tmp_path):
    spec = tmp_path / "p.toml"
    spec.write_text('[[stages]]\nname = "load"\n\n[[stage]]\nname = "sift"\n')
    with pytest.raises(OptionError, match="unknown top-level key 'stage'"):
        Pipeline.from_file(spec)


def test_workers_asked_for_past_the_items_and_cores_are_capped(samples, tmp_path):
    from visiontk.pipeline.executors import WORKERS_PER_CORE_MAX, capped_workers
    from visiontk.pipeline.workers import usable_cores
    from visiontk.stages.model import _threads

    r = Pipeline.from_spec([{"name": "load"}]).run(
        samples, tmp_path / "o", workers=10**6, quiet=True
    )
    assert r.workers == 5 and r.images_done == 5
    assert capped_workers(10**6, 10**6) == WORKERS_PER_CORE_MAX * usable_cores()
    assert _threads(10**9) == usable_cores() and _threads(0) == -1 and _threads(1) == 1


def test_plugin_stage_is_first_class(tmp_path, monkeypatch, folder):
    """A package that declares a stage in the visiontk.stages entry-point group is found,
    listed without being imported, and runs like a built-in."""
    install_plugin(
        tmp_path,
        "vt_plugin_demo",
        '''
        from dataclasses import dataclass
        from visiontk.pipeline import Stage

        @dataclass(frozen=True)
        class Options:
            keep: int = 10

        class KeepStrongest(Stage):
            """Keep the strongest features only."""
            name = "keep-strongest"
            kind = "image"
            inputs = ("features",)
            outputs = ("features",)
            Options = Options

            def run(self, context):
                return {"features": context["features"].subset(slice(0, self.options.keep))}
    ''',
        {"keep-strongest": "vt_plugin_demo:KeepStrongest"},
        monkeypatch,
    )
    from visiontk.pipeline import registry

    registry.refresh()
    try:
        assert "keep-strongest" in stage_names()
        assert "vt_plugin_demo" not in sys.modules  # listing imported nothing
        p = Pipeline.from_spec(
            [{"name": "load"}, {"name": "sift"}, {"name": "keep-strongest", "keep": 7}]
        )
        r = p.run(folder, tmp_path / "out", quiet=True)
        assert r.ok
        assert all(len(f) == 7 for f in read_features_h5(r.features_path).values())
    finally:
        registry.refresh()


# --- running ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return Pipeline.from_file("sift-match").run(folder, out, quiet=True, colmap=True)


def test_outputs_hold_what_the_library_computes(first_run, folder):
    r = first_run
    assert r.ok and r.images_done == 5 and r.pairs == 10 and r.pairs_done == 10
    feats = read_features_h5(r.features_path)
    assert sorted(feats) == [
        "astronaut.png",
        "coffee.png",
        "coffee_warped.png",
        "motorcycle_left.png",
        "sub/motorcycle_right.png",
    ]
    direct = visiontk.sift(folder / "coffee.png")
    np.testing.assert_array_equal(feats["coffee.png"].xy, direct.xy)
    np.testing.assert_array_equal(feats["coffee.png"].descriptors, direct.descriptors)
    with h5py.File(r.features_path) as h5:
        assert "opencv" in h5.attrs["convention"]
        assert "sub%2Fmotorcycle_right.png" in h5
    with h5py.File(r.matches_path) as h5:
        g = h5["motorcycle_left.png|sub%2Fmotorcycle_right.png"]
        m = visiontk.match(feats["motorcycle_left.png"], feats["sub/motorcycle_right.png"])
        np.testing.assert_array_equal(g["matches"][()], m.pairs)
        assert g.attrs["model_kind"] == "fundamental" and g["model"].shape == (3, 3)
        assert g["inliers"][()].sum() > 0.8 * len(m)
    summary = json.loads((r.out / "summary.json").read_text())
    assert summary["ok"] and summary["images_done"] == 5
    assert json.loads((r.out / "failures.json").read_text()) == []


def test_colmap_export_reads_back_in_pycolmap(first_run):
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap is installed with [test]")
    feats = read_features_h5(first_run.features_path)
    db = pycolmap.Database.open(str(first_run.colmap_path))
    try:
        images = {im.name: im for im in db.read_all_images()}
        assert sorted(images) == sorted(feats)
        left = images["motorcycle_left.png"]
        kp = np.asarray(db.read_keypoints(left.image_id))
        np.testing.assert_allclose(kp[:, :2], feats["motorcycle_left.png"].xy + 0.5, atol=1e-4)
        desc = np.asarray(db.read_descriptors(left.image_id).data)
        np.testing.assert_array_equal(desc, feats["motorcycle_left.png"].descriptors)
        cam = db.read_camera(left.camera_id)
        assert (cam.width, cam.height) == (741, 500)
        right = images["sub/motorcycle_right.png"]
        two_view = db.read_two_view_geometry(left.image_id, right.image_id)
        with h5py.File(first_run.matches_path) as h5:
            g = h5["motorcycle_left.png|sub%2Fmotorcycle_right.png"]
            expected = g["matches"][()][g["inliers"][()]]
        np.testing.assert_array_equal(np.asarray(two_view.inlier_matches), expected)
        assert int(two_view.config) == 3  # UNCALIBRATED: verified with a fundamental matrix
        F = np.asarray(two_view.F)
        xa = np.c_[kp[expected[:, 0], :2], np.ones(len(expected))]
        kpb = np.asarray(db.read_keypoints(right.image_id))
        xb = np.c_[kpb[expected[:, 1], :2], np.ones(len(expected))]
        lines = (F @ xa.T).T
        err = np.abs(np.sum(xb * lines, axis=1)) / np.linalg.norm(lines[:, :2], axis=1)
        assert np.median(err) < 1.0  # epipolar distance in COLMAP's +0.5 pixels
        assert db.num_matched_image_pairs() == 10
    finally:
        db.close()


def test_rerun_skips_and_option_change_recomputes_what_depends(first_run, folder):
    out = first_run.out
    again = Pipeline.from_file("sift-match").run(folder, out, quiet=True)
    assert again.images_cached == 5 and again.pairs_cached == 10
    spec = [
        {"name": "load"},
        {"name": "sift"},
        {"name": "match"},
        {"name": "verify", "model": "homography"},
    ]
    verify_changed = Pipeline.from_spec(spec).run(folder, out, quiet=True)
    assert verify_changed.images_cached == 5 and verify_changed.pairs_cached == 0
    spec[1] = {"name": "sift", "max_features": 300, "keep": "strongest"}
    sift_changed = Pipeline.from_spec(spec).run(folder, out, quiet=True)
    assert sift_changed.images_cached == 0 and sift_changed.pairs_cached == 0
    assert all(len(f) == 300 for f in read_features_h5(sift_changed.features_path).values())


def test_bad_images_are_listed_and_the_run_goes_on(folder, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("coffee.png", "coffee_warped.png"):
        (mixed / name).write_bytes((folder / name).read_bytes())
    (mixed / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    cv2.imwrite(str(mixed / "tiny.png"), np.zeros((4, 4), np.uint8))
    r = Pipeline.from_file("sift-match").run(mixed, tmp_path / "out", quiet=True)
    assert not r.ok and r.images_done == 2 and r.pairs_done == 1
    reasons = {f["item"].split("/")[-1]: f["reason"] for f in r.failures}
    assert set(reasons) == {"broken.jpg", "tiny.png"}
    assert "broken.jpg" in reasons["broken.jpg"] and "tiny.png" in reasons["tiny.png"]
    written = json.loads((tmp_path / "out" / "failures.json").read_text())
    assert len(written) == 2 and all(f["stage"] == "load" for f in written)


@pytest.mark.parametrize("pattern", [False, True])
@pytest.mark.parametrize("out_name", ["run", "."])
def test_outputs_inside_the_images_folder_are_never_inputs(samples, tmp_path, pattern, out_name):
    """--out inside (or equal to) --images: the report's thumbnails and match pictures used to
    become images of every rerun (2 -> 6 -> 10 ...)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee.png", "coffee_warped.png"):
        (photos / name).write_bytes((samples / name).read_bytes())
    images = f"{photos}/**/*.[jp][pn]g" if pattern else photos  # .png and .jpg
    pipeline = Pipeline.from_spec(
        [
            {"name": "load", "max_side": 256},
            {"name": "sift", "max_features": 200},
            {"name": "match"},
        ]
    )
    for _ in range(2):
        r = pipeline.run(images, photos / out_name, quiet=True)
        assert (r.images, r.pairs, r.failures) == (2, 1, [])
    # the two thumbnails and the one verified pair's picture, none taken for inputs
    assert len(list(photos.rglob("*.jpg"))) == 3


def test_pair_selection(folder, tmp_path):
    seq = Pipeline.from_spec(
        [
            {"name": "load"},
            {"name": "sift", "max_features": 200},
            {"name": "pairs-sequential", "window": 1},
            {"name": "match"},
        ]
    )
    r = seq.run(folder, tmp_path / "seq", quiet=True)
    assert r.pairs == 4
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text(
        "# chosen\ncoffee.png coffee_warped.png\n\nmotorcycle_left.png sub/motorcycle_right.png\n"
    )
    from_file = Pipeline.from_spec(
        [
            {"name": "load"},
            {"name": "sift", "max_features": 200},
            {"name": "pairs-file", "path": str(pairs_file)},
            {"name": "match"},
        ]
    )
    r = from_file.run(folder, tmp_path / "file", quiet=True)
    assert r.pairs == 2
    with h5py.File(r.matches_path) as h5:
        assert sorted(h5) == [
            "coffee.png|coffee_warped.png",
            "motorcycle_left.png|sub%2Fmotorcycle_right.png",
        ]
    pairs_file.write_text("coffee.png nothere.png\n")
    with pytest.raises(OptionError, match=r"nothere\.png"):
        from_file.run(folder, tmp_path / "bad", quiet=True)


def test_resize_reports_original_pixels(folder, tmp_path):
    p = Pipeline.from_spec([{"name": "load", "max_side": 256}, {"name": "sift"}])
    feats = read_features_h5(p.run(folder, tmp_path / "small", quiet=True).features_path)
    a = feats["astronaut.png"]
    assert a.image_size == (512, 512)
    assert a.xy.max() > 400  # in the 512-px frame, not the 256-px one
    full = visiontk.sift(folder / "astronaut.png")
    m = visiontk.match(a, full)
    offsets = np.linalg.norm(a.xy[m.pairs[:, 0]] - full.xy[m.pairs[:, 1]], axis=1)
    assert len(m) > 50 and np.median(offsets) < 1.0


def test_load_turns_images_by_exif_orientation(tmp_path, coffee):
    from PIL import Image

    im = Image.fromarray(coffee)  # 600 wide, 400 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    (tmp_path / "in").mkdir()
    im.save(tmp_path / "in" / "tagged.jpg", exif=exif.tobytes(), quality=95)
    turned = Pipeline.from_spec([{"name": "load"}, {"name": "sift", "max_features": 50}])
    raw = Pipeline.from_spec(
        [{"name": "load", "exif": False}, {"name": "sift", "max_features": 50}]
    )
    a = read_features_h5(turned.run(tmp_path / "in", tmp_path / "a", quiet=True).features_path)
    b = read_features_h5(raw.run(tmp_path / "in", tmp_path / "b", quiet=True).features_path)
    assert a["tagged.jpg"].image_size == (600, 400)
    assert b["tagged.jpg"].image_size == (400, 600)


def _turn_of_orientations(xy0, ang0, xy1, ang1, rotation) -> np.ndarray:
    """Orientation change (degrees, wrapped to ±180) of keypoints found again after
    ``rotation`` (2×3 affine), pairing each moved keypoint with the nearest within 0.5 px."""
    moved = xy0 @ rotation[:, :2].T + rotation[:, 2]
    d = np.linalg.norm(moved[:, None] - xy1[None], axis=2)
    j = d.argmin(axis=1)
    ok = d[np.arange(len(j)), j] < 0.5
    return (np.degrees(ang1[j[ok]] - ang0[ok]) + 180) % 360 - 180


def test_colmap_export_cameras_as_colmaps_extractor(tmp_path, samples):
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap is installed with [test]")
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Phone", "One"
    exif.get_ifd(0x8769)[0xA405] = 28  # FocalLengthIn35mmFilm
    rgb = cv2.cvtColor(cv2.imread(str(samples / "coffee.png")), cv2.COLOR_BGR2RGB)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, image in (("a.jpg", rgb), ("b.jpg", rgb[:, ::-1])):
        Image.fromarray(np.ascontiguousarray(image)).save(photos / name, exif=exif.tobytes())
    cv2.imwrite(str(photos / "plain.png"), rgb[::-1])
    r = Pipeline.from_file("sift-match").run(photos, tmp_path / "out", quiet=True, colmap=True)
    db = pycolmap.Database.open(str(r.colmap_path))
    try:
        images = {im.name: im for im in db.read_all_images()}
        assert images["a.jpg"].camera_id == images["b.jpg"].camera_id  # one phone, one zoom
        assert images["plain.png"].camera_id != images["a.jpg"].camera_id
        phone = db.read_camera(images["a.jpg"].camera_id)
        assert phone.has_prior_focal_length
        assert phone.params[0] == pytest.approx(28 / 35 * max(rgb.shape[:2]))
        assert not db.read_camera(images["plain.png"].camera_id).has_prior_focal_length
    finally:
        db.close()


def test_colmap_orientation_turns_as_colmaps_own_sift(tmp_path, samples):
    """Rotate a photo by +30° (counter-clockwise on screen): the orientations visiontk exports
    must turn the way pycolmap's own SIFT turns them, and agree with them on the same image."""
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap is installed with [test]")
    from visiontk.pipeline.colmap import export_colmap

    grey = cv2.imread(str(samples / "coffee.png"), cv2.IMREAD_GRAYSCALE)
    h, w = grey.shape
    rotation = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 30, 1.0)
    turned = cv2.warpAffine(grey, rotation, (w, h), flags=cv2.INTER_CUBIC)
    ours, theirs = [], []
    for i, image in enumerate((grey, turned)):
        export_colmap(tmp_path / f"{i}.db", [("x.png", visiontk.sift(image))], [])
        db = pycolmap.Database.open(str(tmp_path / f"{i}.db"))
        try:
            kp = np.asarray(db.read_keypoints(1))
        finally:
            db.close()
        ours.append((kp[:, :2] - 0.5, kp[:, 3]))
        colmap_kp, _ = pycolmap.Sift().extract(np.ascontiguousarray(image, np.float32) / 255)
        theirs.append((colmap_kp[:, :2] - 0.5, colmap_kp[:, 3]))
    turn_ours = np.median(_turn_of_orientations(*ours[0], *ours[1], rotation))
    turn_theirs = np.median(_turn_of_orientations(*theirs[0], *theirs[1], rotation))
    assert abs(abs(turn_theirs) - 30) < 3
    assert abs(turn_ours - turn_theirs) < 3, (turn_ours, turn_theirs)
    # the same image: where both detect a keypoint, orientations agree (COLMAP may keep two)
    (xy_a, ang_a), (xy_b, ang_b) = ours[0], theirs[0]
    d = np.linalg.norm(xy_a[:, None] - xy_b[None], axis=2)
    close = d < 0.3
    pairs = np.argwhere(close)
    diff = np.abs((np.degrees(ang_a[pairs[:, 0]] - ang_b[pairs[:, 1]]) + 180) % 360 - 180)
    best = np.full(len(xy_a), np.inf)
    np.minimum.at(best, pairs[:, 0], diff)
    shared = best[np.isfinite(best)]
    assert len(shared) > 100 and np.mean(shared < 10) > 0.7


def test_fundamental_pairs_leave_e_and_h_unset(first_run):
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap is installed with [test]")
    import sqlite3

    from visiontk.pipeline.colmap import MAX_IMAGE_ID

    with sqlite3.connect(first_run.colmap_path) as con:
        rows = con.execute("SELECT pair_id, config, F, E, H FROM two_view_geometries").fetchall()
    assert rows and all(
        config == 3 and f is not None and e is None and h is None for _, config, f, e, h in rows
    )
    db = pycolmap.Database.open(str(first_run.colmap_path))
    try:
        pair = db.read_two_view_geometry(*divmod(rows[0][0], MAX_IMAGE_ID))
        assert np.abs(np.asarray(pair.F)).sum() > 0
        for unset in (pair.E, pair.H):  # pycolmap says None, COLMAP reads zeros
            assert unset is None or not np.asarray(unset).any()
    finally:
        db.close()


def test_plugin_pair_selection_and_resident_stage_objects(tmp_path, monkeypatch, folder):
    """A plugin supplies its own pair selection (kind "pairs"), and a worker keeps the stage
    objects the runner sent for a whole run (a stage that loads a model loads it once)."""
    from visiontk.pipeline import registry

    install_plugin(
        tmp_path,
        "vt_pairs_demo",
        '''
        import os
        from dataclasses import dataclass
        from visiontk.pipeline import Stage

        @dataclass(frozen=True)
        class Options:
            hub: str = ""

        class Star(Stage):
            """Every image paired with one hub image."""
            name = "pairs-star"
            kind = "pairs"
            inputs = ("features",)
            outputs = ("pairs",)
            Options = Options

            def select(self, names, features):
                assert len(features(self.options.hub)) > 0
                return [(self.options.hub, n) for n in names if n != self.options.hub]

        @dataclass(frozen=True)
        class LogOptions:
            log: str = ""

        class Log(Stage):
            """Append which object in which process ran."""
            name = "log-object"
            kind = "image"
            inputs = ("features",)
            outputs = ()
            Options = LogOptions

            def run(self, context):
                self.count = getattr(self, "count", 0) + 1  # items this object has run
                with open(self.options.log, "a") as fh:
                    fh.write(f"{os.getpid()} {self.count}\\n")
                return {}
    ''',
        {"pairs-star": "vt_pairs_demo:Star", "log-object": "vt_pairs_demo:Log"},
        monkeypatch,
    )
    registry.refresh()
    try:
        log = tmp_path / "log.txt"
        p = Pipeline.from_spec(
            [
                {"name": "load"},
                {"name": "sift", "max_features": 100},
                {"name": "log-object", "log": str(log)},
                {"name": "pairs-star", "hub": "coffee.png"},
                {"name": "match"},
            ]
        )
        r = p.run(folder, tmp_path / "out", workers=1, quiet=True)
        assert r.ok and r.pairs == r.images - 1
        with h5py.File(r.matches_path) as h5:
            assert all(g.startswith("coffee.png|") for g in h5)
        seen = [line.split() for line in log.read_text().splitlines()]
        assert len({pid for pid, _ in seen}) == 1  # one worker ...
        assert sorted(int(n) for _, n in seen) == list(range(1, r.images + 1))  # one object
    finally:
        registry.refresh()


def test_workers_default_to_the_cores_but_never_more_than_the_images(
    samples, tmp_path, monkeypatch
):
    import os

    from visiontk.pipeline import executors

    one = tmp_path / "one"
    one.mkdir()
    (one / "coffee.png").write_bytes((samples / "coffee.png").read_bytes())
    spec = [{"name": "load"}, {"name": "sift", "max_features": 200}]
    # one image: one worker, however many cores (each worker pays its start-up)
    assert Pipeline.from_spec(spec).run(one, tmp_path / "a", quiet=True).workers == 1
    # more images than cores: one worker per core, so a 1-core machine runs one
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert executors.auto_workers(500) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert executors.auto_workers(500) == executors.AUTO_WORKERS_MAX
    assert executors.auto_workers(3) == 3
    # and a number given is used as given, up to one per image
    monkeypatch.undo()
    result = Pipeline.from_spec(spec).run(samples, tmp_path / "b", workers=2, quiet=True)
    assert result.workers == 2 and result.ok
    assert Pipeline.from_spec(spec).run(one, tmp_path / "c", workers=2, quiet=True).workers == 1


def test_cli_run_uses_the_default_workers(samples, tmp_path):
    import subprocess

    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "visiontk_cli.main",
            "run",
            "sift",
            "--images",
            str(samples / "coffee.png"),
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "images: 1/1 done" in p.stdout
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["workers"] == 1
