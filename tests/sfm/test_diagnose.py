"""Why an image is not in the main model, scene warnings, and the exit status of a run that
makes no model (visiontk.sfm.diagnose), on rendered scenes with bad images added."""

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from browser import browser, screenshot
from skimage import data

from visiontk.pipeline import Pipeline
from visiontk.sfm.diagnose import ADVICE, REASONS, diagnose
from visiontk.testing.scene import make_scene, make_turning_scene

pycolmap = pytest.importorskip("pycolmap")
#: A photo of something else, under a name whose escaped form passes 255 bytes.
OTHER = "写真" * 40 + ".png"


def run_cli(images, out):
    return subprocess.run(
        [
            *(sys.executable, "-m", "visiontk_cli.main", "run", "sfm"),
            *("--images", str(images), "--out", str(out), "--quiet"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def spoiled(tmp_path_factory, samples):
    """Ten good views, an all-black image, a photo of something else, a broken file, and four
    views of a poster (a group of their own): mapped once from the command line. (The scene's
    boxes and floor are astronaut, chelsea, rocket, coffee, immunohistochemistry, hubble.)"""
    root = tmp_path_factory.mktemp("spoiled")
    folder = root / "photos"
    make_scene(views=10, size=(640, 480)).write(folder)
    cv2.imwrite(str(folder / "black.png"), np.zeros((480, 640, 3), np.uint8))
    cv2.imwrite(str(folder / OTHER), data.camera())  # none of the scene's photos
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not a JPEG" * 20)
    poster = cv2.imread(str(samples / "motorcycle_left.png"))
    h, w = poster.shape[:2]
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    rng = np.random.default_rng(0)
    for k in range(4):  # a flat poster seen from four spots: matches itself, not the boxes
        moved = corners + rng.uniform(-40, 40, corners.shape).astype(np.float32)
        warped = cv2.warpPerspective(poster, cv2.getPerspectiveTransform(corners, moved), (w, h))
        cv2.imwrite(str(folder / f"zz_poster_{k}.png"), warped)
    out = root / "out"
    return run_cli(folder, out), out


def test_each_bad_image_gets_its_reason_and_the_good_views_all_register(spoiled):
    p, out = spoiled
    summary = json.loads((out / "summary.json").read_text())["models"]["reconstruct"]
    entries = {e["image"]: e for e in summary["not_registered"]}
    assert summary["per_model"][0]["registered"] == [f"view_{i:02d}.png" for i in range(10)]
    assert {n: e["reason"] for n, e in entries.items()} == {
        "black.png": "too few keypoints",
        OTHER: "no verified pairs",
        "broken.jpg": "unreadable",
        **{f"zz_poster_{k}.png": "in another model" for k in range(4)},
    }
    assert all(set(e) == {"image", "reason", "detail"} for e in entries.values())
    assert entries["black.png"]["detail"].startswith("0 keypoints")
    assert "a pair needs 15 inliers" in entries[OTHER]["detail"]
    assert "broken.jpg" in entries["broken.jpg"]["detail"]
    assert "in model 2 of 2 (4 images, sparse/1)" in entries["zz_poster_0.png"]["detail"]
    assert summary["images"] == 17 and summary["warnings"] == []
    # the console: one line naming them (a broken file also fails the run: exit 1)
    assert p.returncode == 1
    assert (
        "reconstruct: not in the main model: black.png (too few keypoints); broken.jpg "
        "(unreadable); zz_poster_0.png (in another model); zz_poster_1.png (in another model); "
        "zz_poster_2.png (in another model); and 2 more"
    ) in p.stdout
    assert "and 2 more (summary.json, report)" in p.stdout


def test_the_report_shows_each_reason_beside_its_thumbnail_with_advice(spoiled):
    _, out = spoiled
    page = (out / "index.html").read_text()
    assert "<h3>Not registered (7)</h3>" in page
    for reason in ("too few keypoints", "no verified pairs", "unreadable", "in another model"):
        assert f"<b>{reason}</b>" in page
        assert ADVICE[reason].split(":")[0].replace("'", "&#x27;") in page
    summary = json.loads((out / "summary.json").read_text())["models"]["reconstruct"]
    thumbs = summary["thumbnails"]
    assert "broken.jpg" not in thumbs and set(thumbs) == {
        e["image"] for e in summary["not_registered"] if e["image"] != "broken.jpg"
    }
    for name, thumb in thumbs.items():
        assert f'src="{thumb}"' in page
        picture = cv2.imread(str(out / thumb))
        assert picture is not None and picture.shape[1] == 200, name
    assert cv2.imread(str(out / thumbs["black.png"])).max() == 0  # its own picture
    assert 'class="unregistered"' in page  # and marked in the grid of images


def test_a_rotation_only_set_warns_in_console_summary_and_report(tmp_path):
    folder = tmp_path / "turn"
    make_turning_scene(views=7).write(folder)
    p = run_cli(folder, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    warnings = summary["models"]["reconstruct"]["warnings"]
    assert any(w.startswith("planar or rotation-only: 100% of 21") for w in warnings), warnings
    stderr = [line for line in p.stderr.splitlines() if line.startswith("warning: reconstruct")]
    assert len(stderr) == len(warnings) >= 1
    page = (tmp_path / "out" / "index.html").read_text()
    assert '<p class="warn">warning: planar or rotation-only' in page


def test_a_good_scene_gives_no_warning(tmp_path):
    """A set with a baseline keeps quiet: the warnings are only worth reading if they are
    rare."""
    folder = tmp_path / "good"
    make_scene(views=8, size=(640, 480), arc_degrees=90.0, seed=3).write(folder)
    result = Pipeline.from_file("sfm").run(folder, tmp_path / "out", quiet=True)
    summary = result.models["reconstruct"]
    assert summary["registered"] == 8 and summary["warnings"] == []
    assert summary["not_registered"] == []


def test_diagnose_from_a_database_and_no_model(spoiled, tmp_path):
    """Without models every image is judged on its pairs alone: the good views have verified
    pairs, so the mapper (which found no initial pair) rejected them; unknown names and
    failures are listed too."""
    _, out = spoiled
    names = [f"view_{i:02d}.png" for i in range(10)] + ["black.png", "gone.png"]
    entries, warnings = diagnose(out / "database.db", [], names, {"gone.png": "gone.png: gone"})
    reasons = {e["image"]: e["reason"] for e in entries}
    assert reasons["gone.png"] == "unreadable" and reasons["black.png"] == "too few keypoints"
    assert {reasons[f"view_{i:02d}.png"] for i in range(10)} == {"rejected by the mapper"}
    assert set(reasons.values()) <= set(REASONS) and warnings == []


def test_a_pair_of_something_else_has_weak_links(tmp_path, samples):
    """Two photos of another thing verify each other, but never the model's images."""
    folder = tmp_path / "photos"
    make_scene(views=8, size=(640, 480), arc_degrees=90.0, seed=3).write(folder)
    for name in ("motorcycle_left.png", "motorcycle_right.png"):
        shutil.copy(samples / name, folder / f"zz_{name}")
    result = Pipeline.from_file("sfm").run(folder, tmp_path / "out", quiet=True)
    entries = result.models["reconstruct"]["not_registered"]
    assert [(e["image"], e["reason"]) for e in entries] == [
        ("zz_motorcycle_left.png", "weak links"),
        ("zz_motorcycle_right.png", "weak links"),
    ]
    assert "all with images outside the model (zz_motorcycle_right.png)" in entries[0]["detail"]


# --- the interactive 3-D view ---------------------------------------------------------------


def test_the_3d_view_is_one_offline_page_with_every_cameras_photo(spoiled):
    pytest.importorskip("plotly")
    _, out = spoiled
    summary = json.loads((out / "summary.json").read_text())["models"]["reconstruct"]
    assert summary["viewer"] == "model.html" and "model.html" in summary["files"]
    page = (out / "model.html").read_text()
    assert "<script src=" not in page  # plotly inlined: nothing fetched, it opens offline
    photos = json.loads(page.split("const photos = ", 1)[1].split(";\n", 1)[0])
    assert sorted(photos) == [f"view_{i:02d}.png" for i in range(10)]  # the registered ones
    assert all(url.startswith("data:image/jpeg;base64,") for url in photos.values())
    index = (out / "index.html").read_text()
    assert '<iframe class="viewer" src="model.html"' in index


def test_without_plotly_no_view_and_the_report_says_how(spoiled, tmp_path, monkeypatch):
    from visiontk.pipeline.report import _viewer
    from visiontk.sfm import viewer

    _, out = spoiled
    monkeypatch.setattr(viewer, "available", lambda: False)
    model = pycolmap.Reconstruction(out / "sparse" / "0")
    assert viewer.write_viewer(model, tmp_path / "model.html") is None
    assert not (tmp_path / "model.html").exists()
    shown = _viewer(tmp_path, {"models": 1, "viewer": None})
    assert shown == [f"<p>{viewer.MISSING.replace(chr(39), '&#x27;')}</p>"]


@pytest.mark.skipif(browser() is None, reason="no Chromium here (CI installs it: .ci/run)")
def test_a_real_browser_draws_the_3d_view(spoiled, tmp_path):
    pytest.importorskip("plotly")
    _, out = spoiled
    shot = screenshot(out / "model.html", tmp_path / "view.png", (1000, 800))
    picture = cv2.imread(str(shot))
    assert picture.shape[:2] == (800, 1000)
    drawn = (picture.min(axis=2) < 200).mean()  # not a blank page: points and frusta
    red = (picture[:, :, 2] > 180) & (picture[:, :, 1] < 90) & (picture[:, :, 0] < 90)
    assert drawn > 0.005 and red.sum() > 300, (drawn, red.sum())
