"""Direct tests of small pure functions other tests only reach through whole runs: octave
counts, layer blurs, the two upsampling forms, nearest neighbours, pairs files, config hashes and
input resolution."""

from __future__ import annotations

import math

import numpy as np
import pytest

from visiontk import devices
from visiontk._sift.scale_space import layer_sigmas, octave_count, upsample_2x
from visiontk.errors import ImageError, OptionError
from visiontk.io.inputs import resolve_images
from visiontk.matching import nearest_neighbours
from visiontk.pipeline.store import config_hash
from visiontk.stages.pairs import read_pairs_file


@pytest.mark.parametrize(("h", "w", "upsample", "expected"), [
    # OpenCV: round(log2(min side of the doubled image) − 2) + 1 with the doubled octave
    (512, 512, True, round(math.log2(1024) - 2) + 1),
    (400, 600, True, round(math.log2(800) - 2) + 1),
    (400, 600, False, round(math.log2(400) - 2)),
    (1080, 1920, True, round(math.log2(2160) - 2) + 1),
    (16, 16, False, 2),
    (4, 4, False, 1),  # never fewer than one octave
])
def test_octave_count(h, w, upsample, expected):
    assert octave_count(h, w, upsample) == expected


def test_layer_sigmas_compose_to_each_layers_blur():
    sigma, s = 1.6, 3
    k = 2 ** (1 / s)
    sig = layer_sigmas(sigma, s)
    assert len(sig) == s + 3 and sig[0] == sigma
    total = sigma
    for i in range(1, s + 3):  # blurring by sig[i] takes sigma·k^(i−1) to sigma·k^i
        total = math.sqrt(total ** 2 + sig[i] ** 2)
        assert total == pytest.approx(sigma * k ** i, rel=1e-12)


def test_the_two_upsampling_forms_agree():
    """cv2's form (the CPU's) and the xp definition (the GPU's) to float rounding."""
    image = np.random.default_rng(0).uniform(0, 255, (37, 53)).astype(np.float32)
    fast = devices.upsample_2x(image)
    definition = upsample_2x(image, np)
    assert fast.shape == definition.shape == (74, 106)
    np.testing.assert_allclose(fast, definition, atol=1e-3)
    row = upsample_2x(np.array([[0.0, 4.0]], np.float32), np)[0]
    np.testing.assert_allclose(row, [0, 1, 3, 4])  # 3:1 mixes of neighbouring samples


def test_nearest_neighbours_against_brute_force():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (300, 128)).astype(np.uint8)
    b = rng.integers(0, 256, (250, 128)).astype(np.uint8)
    b[:40] = a[:40]  # exact partners
    idx, d1, d2, mutual = nearest_neighbours(a, b)
    d = np.linalg.norm(a[:, None].astype(float) - b[None].astype(float), axis=2)
    order = np.argsort(d, axis=1, kind="stable")
    np.testing.assert_array_equal(idx, order[:, 0])
    np.testing.assert_allclose(d1, d[np.arange(300), order[:, 0]], rtol=1e-6)
    np.testing.assert_allclose(d2, d[np.arange(300), order[:, 1]], rtol=1e-6)
    back = np.argmin(d, axis=0)
    np.testing.assert_array_equal(mutual, back[idx] == np.arange(300))
    assert mutual[:40].all() and (d1[:40] == 0).all()
    _, _, second, _ = nearest_neighbours(a[:5], b[:1])
    assert np.isinf(second).all()


def test_read_pairs_file(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("# hloc's format\na.png b.png\n\nb.png a.png  # the same pair again\n"
                    "c.png c.png\nb.png c.png\n")
    assert read_pairs_file(path) == [("a.png", "b.png"), ("b.png", "c.png")]
    assert read_pairs_file(path, ["a.png", "b.png", "c.png"]) == [("a.png", "b.png"),
                                                                    ("b.png", "c.png")]
    with pytest.raises(OptionError, match=r"pairs.txt:2: 'a.png' is not one of"):
        read_pairs_file(path, ["b.png", "c.png"])
    path.write_text("a.png\n")
    with pytest.raises(OptionError, match=r"pairs\.txt:1: expected two image names"):
        read_pairs_file(path)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(OptionError, match="not UTF-8"):
        read_pairs_file(path)


def test_config_hash_is_stable_and_sensitive():
    specs = [("load", {"max_side": 0}), ("sift", {"max_features": 100})]
    assert config_hash(specs) == config_hash([("load", {"max_side": 0}),
                                              ("sift", {"max_features": 100})])
    assert len(config_hash(specs)) == 16
    assert config_hash(specs) != config_hash([("load", {"max_side": 0}),
                                              ("sift", {"max_features": 101})])
    assert config_hash(specs) != config_hash(specs[::-1])


def test_resolve_images(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "sub/c.png", "notes.txt", "w.pth"):
        (tmp_path / name).write_bytes(b"x")
    named = resolve_images(tmp_path)
    assert [n for n, _ in named] == ["a.JPG", "b.png", "sub/c.png"]
    assert [n for n, _ in resolve_images(tmp_path, frozenset({".pth"}))] == ["w.pth"]
    listing = tmp_path / "list.txt"
    listing.write_text("# two of them\nb.png\nsub/c.png\n")
    assert [n for n, _ in resolve_images(listing)] == ["b.png", "sub/c.png"]
    assert [n for n, _ in resolve_images(str(tmp_path / "*.png"))] == ["b.png"]
    with pytest.raises(ImageError, match="no such folder"):
        resolve_images(tmp_path / "missing")
    with pytest.raises(ImageError, match="nothing to process"):
        resolve_images(tmp_path / "sub", frozenset({".tif"}))
    with pytest.raises(OptionError, match="both named"):
        resolve_images([tmp_path / "b.png", tmp_path / "b.png"])
