"""MaskCut on patch features whose objects are known (planted clusters), the eigensolvers
against each other, and MaskCut through the attention command and the pipeline stage on each
ViT family."""

import json

import numpy as np
import pytest

from visiontk.errors import OptionError
from visiontk.vit import cuts
from visiontk.vit.cuts import maskcut, second_eigenvector

GRID = (16, 20)
#: (row0, row1, col0, col1) of three objects away from each other and from the corners
BOXES = [(2, 7, 2, 8), (9, 14, 3, 7), (5, 12, 12, 18)]


def planted(boxes, grid=GRID, dims=32, noise=0.6, alike=False, seed=1):
    """Keys (h·w × dims): background around one direction, each object around its own (or,
    ``alike``, all around one), plus noise; and the objects' true masks."""
    rng = np.random.default_rng(seed)
    h, w = grid
    background = rng.standard_normal(dims)
    directions = [rng.standard_normal(dims) for _ in boxes]
    if alike:
        directions = [directions[0]] * len(boxes)
    keys = np.tile(background, (h * w, 1))
    truth = []
    for (r0, r1, c0, c1), direction in zip(boxes, directions, strict=True):
        mask = np.zeros(grid, bool)
        mask[r0:r1, c0:c1] = True
        keys[mask.reshape(-1)] = direction
        truth.append(mask)
    return keys + noise * rng.standard_normal(keys.shape), truth


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def assert_each_found_once(masks, truth):
    matched = [int(np.argmax([iou(m, t) for t in truth])) for m in masks]
    assert len(set(matched)) == len(masks), matched  # no object twice
    for m, i in zip(masks, matched, strict=True):
        assert iou(m, truth[i]) > 0.9, (i, iou(m, truth[i]))
    for i, a in enumerate(masks):  # disjoint, and never the background at the corners
        assert not a[[0, 0, -1, -1], [0, -1, 0, -1]].any()
        for b in masks[i + 1 :]:
            assert not (a & b).any()


@pytest.mark.parametrize("alike", [False, True], ids=["distinct objects", "objects alike"])
def test_maskcut_finds_each_planted_object(alike):
    keys, truth = planted(BOXES, alike=alike)
    masks = maskcut(keys, GRID, objects=3)
    assert len(masks) == 3 and all(m.shape == GRID and m.dtype == bool for m in masks)
    assert_each_found_once(masks, truth)


def test_maskcut_stops_at_the_asked_number_and_when_nothing_is_left():
    keys, truth = planted(BOXES)
    two = maskcut(keys, GRID, objects=2)
    assert len(two) == 2
    assert_each_found_once(two, truth)
    keys, truth = planted([(4, 11, 6, 13)])
    masks = maskcut(keys, GRID, objects=4)  # one object: the later cuts find nothing new
    assert len(masks) == 1 and iou(masks[0], truth[0]) > 0.95
    with pytest.raises(OptionError):
        maskcut(keys, GRID, objects=0)


def test_a_larger_grid_with_several_objects():
    grid = (60, 60)  # ViT-S/8 at 480 pixels: the Lanczos path
    boxes = [(5, 25, 5, 30), (30, 55, 35, 55), (35, 50, 5, 20)]
    keys, truth = planted(boxes, grid=grid, dims=64)
    masks = maskcut(keys, grid, objects=3)
    assert len(masks) == 3
    assert_each_found_once(masks, truth)


def test_lanczos_and_the_dense_solver_cut_alike(monkeypatch):
    keys, _ = planted(BOXES)
    assert keys.shape[0] >= cuts.LANCZOS_PATCHES
    fast = second_eigenvector(keys, 0.15)
    monkeypatch.setattr(cuts, "LANCZOS_PATCHES", 10**9)
    dense = second_eigenvector(keys, 0.15)
    fast, dense = fast / np.linalg.norm(fast), dense / np.linalg.norm(dense)
    assert abs(fast @ dense) > 0.999
    fast *= np.sign(fast @ dense)
    np.testing.assert_array_equal(fast > fast.mean(), dense > dense.mean())


def test_maskcut_through_the_command_on_each_family(tmp_path, samples):
    from click.testing import CliRunner
    from visiontk_cli.main import main

    fixtures = samples.parent / "tests" / "fixtures"
    for weights in ("dino_tiny_p16.pth", "dinov2_tiny_reg4.pth", "dinov3_tiny.pth"):
        out = tmp_path / weights
        res = CliRunner().invoke(
            main,
            [
                "attention",
                str(samples / "astronaut.png"),
                "--weights",
                str(fixtures / weights),
                "--out",
                str(out),
                "--image-size",
                "128",
                "--method",
                "maskcut",
                "--objects",
                "3",
            ],
        )
        assert res.exit_code == 0, res.output
        summary = json.loads((out / "astronaut.json").read_text())
        objects = summary["objects"]
        assert 1 <= len(objects) <= 3 and f"{len(objects)} object" in res.output
        union = np.zeros(summary["grid"], bool)
        for entry in objects:
            from visiontk.io import load_rgb

            mask = load_rgb(out / entry["mask"])[:, :, 0] > 127
            x0, y0, x1, y1 = entry["box_xyxy"]
            rows, cols = np.nonzero(mask)
            assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x0, y0, x1, y1)
            patches = mask[:: summary["patch"], :: summary["patch"]]
            assert not (patches & union).any()  # each patch in one object at most
            union |= patches
        whole = load_rgb(out / "astronaut_mask.png")[:: summary["patch"], :: summary["patch"], 0]
        np.testing.assert_array_equal(whole > 127, union)
        assert abs(summary["foreground_fraction"] - union.mean()) < 1e-9


def test_maskcut_in_the_pipeline_stage(tmp_path, samples):
    from visiontk.pipeline import Pipeline

    fixtures = samples.parent / "tests" / "fixtures"
    images = tmp_path / "images"
    images.mkdir()
    (images / "coffee.png").write_bytes((samples / "coffee.png").read_bytes())
    spec = {
        "name": "dino-attention",
        "weights": str(fixtures / "dinov3_tiny.pth"),
        "method": "maskcut",
        "objects": 2,
        "image_size": 96,
        "device": "cpu",
    }
    r = Pipeline.from_spec([spec]).run(images, tmp_path / "out", quiet=True)
    assert r.ok
    folder = tmp_path / "out" / "attention"
    summary = json.loads((folder / "coffee.png.json").read_text())
    assert 1 <= len(summary["objects"]) <= 2
    for entry in summary["objects"]:
        assert (folder / entry["mask"]).is_file()
    with pytest.raises(OptionError, match="maskcut"):
        Pipeline.from_spec([{**spec, "method": "cuts"}])


def test_grids_larger_than_the_graph_limit_are_cut_on_averaged_keys():
    grid = (100, 90)  # 9000 patches: above MAX_CUT_PATCHES, cut on 2 × 2 averages
    assert grid[0] * grid[1] > cuts.MAX_CUT_PATCHES
    boxes = [(10, 40, 10, 40), (60, 90, 50, 80)]
    keys, truth = planted(boxes, grid=grid, dims=32, noise=0.4)
    small, small_grid, f = cuts.coarse_grid(keys, grid)
    assert f == 2 and small_grid == (50, 45) and small.shape == (50 * 45, 32)
    np.testing.assert_allclose(small[0], keys.reshape(100, 90, 32)[:2, :2].mean(axis=(0, 1)))
    masks = maskcut(keys, grid, objects=2)
    assert [m.shape for m in masks] == [grid, grid]
    assert_each_found_once(masks, truth)
    mask, vec = cuts.tokencut(keys, grid)
    assert mask.shape == vec.shape == grid and max(iou(mask, t) for t in truth) > 0.9


def test_images_that_give_too_many_patches_are_refused_before_resizing():
    from visiontk.errors import ImageError
    from visiontk.vit.attention import MAX_PATCHES, preprocess

    panorama = np.zeros((4, 4000, 3), np.uint8)  # at 480 high: 480 × 480000 pixels
    with pytest.raises(ImageError, match="patches, at most") as e:
        preprocess(panorama, 16, 480, name="pano.png")
    assert str(e.value).startswith("pano.png: ") and "\n" not in str(e.value)
    big = np.zeros((2100, 2100, 3), np.uint8)  # kept at its size with patch 8: 262 × 262
    with pytest.raises(ImageError, match=f"{MAX_PATCHES:,}"):
        preprocess(big, 8, 0, name="big.png")
    pixels, _ = preprocess(big, 16, 0, name="big.png")  # 131 × 131 patches: allowed
    assert pixels.shape == (3, 2096, 2096)
