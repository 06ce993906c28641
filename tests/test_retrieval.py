"""Retrieval pairs: VLAD of SIFT descriptors finds the images that show the same things."""

import shutil

import numpy as np
import pytest

import visiontk
from visiontk.errors import OptionError
from visiontk.pipeline import Pipeline
from visiontk.retrieval import nearest_images, vlad, vocabulary
from visiontk.stages.pairs import RetrievalOptions, RetrievalPairs
from visiontk.testing.scene import make_scene


@pytest.fixture(scope="module")
def views(tmp_path_factory, samples):
    """12 views around the boxes, and a stereo pair of something else."""
    folder = tmp_path_factory.mktemp("views")
    make_scene(views=12, size=(320, 240), focal=260.0, arc_degrees=150.0).write(folder)
    for name in ("motorcycle_left.png", "motorcycle_right.png"):
        shutil.copy(samples / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def features(views):
    return {p.name: visiontk.sift(p, max_features=1500) for p in sorted(views.glob("*.png"))}


def test_each_image_finds_its_neighbours(features):
    names = sorted(features)
    pairs = nearest_images(names, features.__getitem__, neighbours=2)
    partners = {n: set() for n in names}
    for a, b in pairs:
        assert a < b
        partners[a].add(b)
        partners[b].add(a)
    assert "motorcycle_right.png" in partners["motorcycle_left.png"]
    views = [n for n in names if n.startswith("view_")]
    for i, name in enumerate(views):  # its two picks include a view next to it on the arc
        adjacent = {views[j] for j in (i - 1, i + 1) if 0 <= j < len(views)}
        assert partners[name] & adjacent, (name, partners[name])
    assert len(pairs) < len(names) * (len(names) - 1) / 2 / 2  # far fewer than every pair


def test_vlad_is_unit_length_and_tells_images_apart(features):
    centres = vocabulary([f.descriptors for f in features.values()], 16)
    a, b, c = (
        vlad(features[n].descriptors, centres)
        for n in ("view_03.png", "view_04.png", "motorcycle_left.png")
    )
    assert np.isclose(np.linalg.norm(a), 1) and a.shape == (16 * 128,)
    assert a @ b > a @ c
    assert not vlad(np.zeros((0, 128), np.uint8), centres).any()


def test_small_sets_get_every_pair_and_options_are_checked():
    names = ["a", "b", "c", "d"]
    stage = RetrievalPairs(RetrievalOptions(neighbours=3))
    assert stage.select(names, None) == [
        (a, b) for i, a in enumerate(names) for b in names[i + 1 :]
    ]
    with pytest.raises(OptionError, match="neighbours must be >= 1"):
        Pipeline.from_spec(
            [
                {"name": "load"},
                {"name": "sift"},
                {"name": "pairs-retrieval", "neighbours": 0},
                {"name": "match"},
            ]
        )


def test_retrieval_in_a_run(views, tmp_path):
    spec = [
        {"name": "load"},
        {"name": "sift", "max_features": 1000},
        {"name": "pairs-retrieval", "neighbours": 3},
        {"name": "match"},
    ]
    result = Pipeline.from_spec(spec).run(views, tmp_path, quiet=True)
    assert result.ok and 14 * 3 / 2 <= result.pairs <= 14 * 3
