"""The example plugin (examples/grid_sift) is a stage built only from visiontk's public names:
it imports nothing private, and it runs in a real pipeline, in worker processes."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
from plugins import install_plugin

from visiontk.pipeline import Pipeline, registry
from visiontk.pipeline.store import read_features_h5, read_pair

EXAMPLE = Path(__file__).parent.parent / "examples" / "grid_sift" / "grid_sift.py"


def test_the_example_plugin_uses_only_public_names():
    imported = []
    for node in ast.walk(ast.parse(EXAMPLE.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
    visiontk = [m for m in imported if m.split(".")[0] == "visiontk"]
    assert visiontk, "the example should build on visiontk"
    private = [m for m in visiontk if any(part.startswith("_") for part in m.split("."))]
    assert not private, f"the example imports private names: {private}"


def test_the_example_plugin_runs_in_a_pipeline(tmp_path, monkeypatch, photo_folder):
    site = install_plugin(
        tmp_path,
        "grid_sift",
        EXAMPLE.read_text(),
        {"sift-grid": "grid_sift:GridSiftStage"},
        monkeypatch,
    )
    registry.refresh()
    try:
        images = photo_folder("coffee.png", "coffee_warped.png")
        cells, per_cell, max_side = 4, 12, 320
        spec = [
            {"name": "load", "max_side": max_side},
            {"name": "sift-grid", "cells": cells, "per_cell": per_cell, "device": "cpu"},
            {"name": "match"},
            {"name": "verify"},
        ]
        result = Pipeline.from_spec(spec).run(images, out=tmp_path / "grid", workers=2, quiet=True)
        assert result.failures == [] and result.pairs_done == 1
        plain = Pipeline.from_spec([{"name": "load", "max_side": max_side}, {"name": "sift"}])
        plain.run(images, out=tmp_path / "plain", workers=1, quiet=True)
        grid = read_features_h5(tmp_path / "grid" / "features.h5")
        every = read_features_h5(tmp_path / "plain" / "features.h5")
        for name, feats in grid.items():
            h, w = feats.image_size  # original pixels, as the built-in stage reports them
            f = max_side / max(h, w)  # the grid was the resized image's (the load stage's)
            size = np.array([round(w * f), round(h * f)])
            resized = (feats.xy + 0.5) * size / [w, h] - 0.5
            column, row = np.clip((resized * cells / size).astype(int), 0, cells - 1).T
            cell = row * cells + column
            counts = np.bincount(cell, minlength=cells * cells)
            assert counts.max() <= per_cell and (counts > 0).sum() > cells
            assert len(feats) < len(every[name])
            # the kept keypoints are the built-in stage's, the strongest of each cell
            known = {tuple(p) for p in np.round(every[name].xy, 3)}
            assert all(tuple(p) in known for p in np.round(feats.xy, 3))
            assert feats.image_size == every[name].image_size
        matches, geometry = read_pair(next((tmp_path / "grid" / ".cache" / "pairs").iterdir()))
        assert len(matches) > 20 and geometry is not None and geometry.n_inliers > 20
        again = Pipeline.from_spec(spec).run(images, out=tmp_path / "grid", workers=1, quiet=True)
        assert again.images_cached == 2
        # an edited (or upgraded) plugin's results are made again, never served from the cache
        source = site / "grid_sift" / "__init__.py"
        source.write_text(source.read_text() + "\n# edited\n")
        edited = Pipeline.from_spec(spec).run(images, out=tmp_path / "grid", workers=1, quiet=True)
        assert edited.images_done == 2 and edited.images_cached == 0
    finally:
        monkeypatch.undo()
        registry.refresh()
