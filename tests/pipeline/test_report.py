"""The run report (OUT/index.html): what it shows, that every picture it links exists, and
what a browser makes of it."""

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import pytest
from browser import browser, screenshot
from click.testing import CliRunner
from visiontk_cli.main import main

from visiontk.pipeline import Pipeline


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "a":
            self.links.append(dict(attrs)["href"])

    def handle_data(self, data):
        self.text.append(data)


def read_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def run(tmp_path_factory, samples):
    folder = tmp_path_factory.mktemp("photos")
    for name in ("coffee.png", "coffee_warped.png", "astronaut.png"):
        shutil.copy(samples / name, folder / name)
    (folder / "broken.png").write_bytes(b"not a png <script>")
    (folder / "sub dir").mkdir()
    shutil.copy(samples / "motorcycle_left.png", folder / "sub dir" / "left #1.png")
    out = tmp_path_factory.mktemp("out")
    result = Pipeline.from_spec(
        [
            {"name": "load"},
            {"name": "sift", "max_features": 1500},
            {"name": "match"},
            {"name": "verify"},
        ]
    ).run(folder, out, quiet=True)
    return result, out


def test_page_shows_counts_failures_thumbnails_and_pairs(run):
    result, out = run
    assert [f["stage"] for f in result.failures] == ["load"]
    page = read_page(out / "index.html")
    text = " ".join(page.text)
    assert "4 of 5 done" in text and "6 of 6 done" in text
    assert "broken.png (failed)" in text and "not an image" in text
    for src in page.images:  # every picture it links is there, read as a browser reads URLs
        assert (out / unquote(src)).is_file(), src
    thumbs = [s for s in page.images if s.startswith("report/thumbs/")]
    assert len(thumbs) == 4
    # one pair of these holds a model (the coffee pair): it is shown once, as the strongest
    assert [s for s in page.images if "pair_" in s] == ["report/pair_strongest.jpg"]
    assert "strongest: coffee.png - coffee_warped.png" in text
    strongest = cv2.imread(str(out / "report/pair_strongest.jpg"))
    assert strongest.shape[1] > 600 and strongest.std() > 20
    assert "<script>" not in (out / "index.html").read_text()  # names and reasons are escaped


def test_every_run_kind_gets_a_page(tmp_path, samples):
    out = tmp_path / "out"
    Pipeline.from_file("sift").run(samples, out, quiet=True)
    page = read_page(out / "index.html")
    assert len([s for s in page.images if s.startswith("report/thumbs/")]) == 5
    assert "pairs" not in " ".join(page.text).split("Time per stage")[0]


def test_unrelated_pairs_pick_the_strongest_by_matches_and_time_counts_each_stage_once(
    tmp_path, photo_folder
):
    """Pairs without a model all have 0 inliers: the strongest is then the one with most
    matches (it was chosen by name), each picture captioned on the page; and the time per
    stage no longer counts the whole-run stages twice."""
    folder = photo_folder("astronaut.png", "coffee.png", "motorcycle_left.png")
    out = tmp_path / "out"
    result = Pipeline.from_spec(
        [
            {"name": "load", "max_side": 320},
            {"name": "sift"},
            {"name": "match"},
            {"name": "verify", "min_inliers": 10**6},
        ]
    ).run(folder, out, quiet=True)
    assert result.pairs_done == 3
    text = " ".join(read_page(out / "index.html").text)
    assert "3 of 3 done; median 0 inliers" in text
    found = dict(re.findall(r"(strongest|weakest): [^,]+, 0 inliers of (\d+) matches", text))
    assert set(found) == {"strongest", "weakest"}, text
    assert int(found["strongest"]) > int(found["weakest"])
    assert "report and whole-run stages" not in result.stage_seconds
    assert "report pictures" in result.stage_seconds


def test_one_verified_pair_is_shown_once(tmp_path, photo_folder):
    """With one pair holding a model, 'strongest' and 'weakest' were the same picture twice."""
    folder = photo_folder("coffee.png", "coffee_warped.png", "astronaut.png")
    out = tmp_path / "out"
    Pipeline.from_spec(
        [
            {"name": "load", "max_side": 320},
            {"name": "sift"},
            {"name": "match"},
            {"name": "verify", "model": "homography"},
        ]
    ).run(folder, out, quiet=True)
    pictures = [s for s in read_page(out / "index.html").images if "pair_" in s]
    assert pictures == ["report/pair_strongest.jpg"]


def test_identical_images_on_a_first_run_are_not_from_earlier_runs(tmp_path, samples):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(samples / "coffee.png", folder / name)
    pipeline = Pipeline.from_spec(
        [{"name": "load", "max_side": 256}, {"name": "sift"}, {"name": "match"}]
    )
    first = pipeline.run(folder, tmp_path / "out", quiet=True)
    assert (first.images_done, first.images_cached, first.pairs_cached) == (2, 0, 0)
    again = pipeline.run(folder, tmp_path / "out", quiet=True)
    assert (again.images_cached, again.pairs_cached) == (2, 1)


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_a_dino_run_shows_its_overlays_and_links_to_them(tmp_path, samples):
    """The page used to show the input thumbnails only: now each image's attention overlay,
    a click opens its heads picture, and the attention folder is linked."""
    images = tmp_path / "images"
    images.mkdir()
    for n in ("coffee.png", "astronaut.png"):
        shutil.copy(samples / n, images / n)
    out = tmp_path / "out"
    result = Pipeline.from_spec(
        [
            {
                "name": "dino-attention",
                "weights": str(FIXTURES / "dino_tiny_p16.pth"),
                "image_size": 96,
                "device": "cpu",
            }
        ]
    ).run(images, out, quiet=True)
    assert result.ok and result.folders == [out / "attention"]
    page = read_page(out / "index.html")
    thumbs = sorted(s for s in page.images if s.startswith("report/thumbs/"))
    assert len(thumbs) == 2
    for name in ("astronaut.png", "coffee.png"):
        overlay = cv2.imread(str(out / "attention" / f"{name}_overlay.png"))
        thumb = cv2.imread(str(out / "report" / "thumbs" / f"{name}.jpg"))
        # the overlay (at the ViT's 96-pixel size, under the thumbnail width), not the input
        assert overlay.shape[1] < 240 and thumb.shape == overlay.shape
        assert f"attention/{name}_heads.png" in page.links
    assert "attention/" in page.links
    for link in page.links:
        assert (out / unquote(link)).exists(), link


def test_a_branches_run_shows_and_links_each_report(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("a.pth", "b.pth"):
        shutil.copy(FIXTURES / "planted_alexnet.pth", models / name)
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main, ["run", "branches", "--images", str(models), "--out", str(out), "--quiet"]
    )
    assert r.exit_code == 0, r.output
    assert f"branches: {out / 'branches'}" in r.output.splitlines()  # the console says where
    page = read_page(out / "index.html")
    assert len([s for s in page.images if s.startswith("report/thumbs/")]) == 2
    assert {"branches/a.pth/report.html", "branches/b.pth/report.html", "branches/"} <= set(
        page.links
    )
    for link in page.links:
        assert (out / unquote(link)).exists(), link


@pytest.mark.skipif(browser() is None, reason="no Chromium here (CI installs it: .ci/run)")
def test_a_real_browser_renders_the_page(run, tmp_path):
    _, out = run
    shot = screenshot(out / "index.html", tmp_path / "page.png", (1300, 2400))
    picture = cv2.imread(str(shot))
    assert picture.shape[:2] == (2400, 1300)
    # the pair pictures (wide, photographic) fill rows of the page: a blank or unstyled page
    # (pictures missing) leaves most rows plain white
    rows_with_pictures = (picture.std(axis=(1, 2)) > 40).mean()
    assert rows_with_pictures > 0.3
    red = ((picture[:, :, 2] > 150) & (picture[:, :, 1] < 80) & (picture[:, :, 0] < 80)).sum()
    assert red > 500  # the failed image's red frame
