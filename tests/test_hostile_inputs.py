"""Inputs that used to give wrong answers or unhelpful messages: features files and arrays that
do not fit together, correspondences of unequal length, huge image headers, attention on tiny
grids, and file names with control characters."""

from __future__ import annotations

import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import visiontk
from visiontk.errors import FeaturesError, FeaturesFileError, ImageError, OptionError

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def visiontk_command() -> str:
    return str(Path(sys.executable).parent / "visiontk")


def saved(tmp_path, **changes) -> Path:
    """A features file as Features.save writes it, with some arrays replaced."""
    n = 5
    arrays = {
        "xy": np.zeros((n, 2), np.float32),
        "size": np.ones(n, np.float32),
        "angle": np.zeros(n, np.float32),
        "response": np.ones(n, np.float32),
        "octave": np.zeros(n, np.int32),
        "descriptors": np.zeros((n, 128), np.uint8),
        "image_size": np.array([100, 200]),
        "convention": np.asarray("opencv"),
        "version": np.asarray(1),
    }
    arrays.update(changes)
    path = tmp_path / "f.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"descriptors": np.zeros((4, 128), np.uint8)}, "descriptors has shape (4, 128)"),
        ({"descriptors": np.zeros((5, 64), np.uint8)}, "expected 5×128"),
        ({"descriptors": np.full((5, 128), 300.7)}, "float64 values, expected uint8"),
        ({"descriptors": np.full((5, 128), -1, np.int16)}, "expected uint8"),
        ({"descriptors": np.full((5, 128), 300, np.uint16)}, "outside 0..255"),
        ({"xy": np.full((5, 2), np.nan, np.float32)}, "NaN"),
        ({"xy": np.zeros((5, 3), np.float32)}, "expected N×2"),
        ({"image_size": np.array([1, 2, 3])}, "image_size"),
        ({"octave": np.zeros(5, np.float32)}, "octave holds float32"),
    ],
)
def test_features_files_that_do_not_fit_together(tmp_path, changes, words):
    with pytest.raises(FeaturesFileError) as caught:
        visiontk.Features.load(saved(tmp_path, **changes))
    message = str(caught.value)
    assert words in message and "f.npz" in message and "\n" not in message


def test_broken_features_files(tmp_path):
    good = saved(tmp_path)
    assert len(visiontk.Features.load(good)) == 5
    blob = good.read_bytes()
    cases = {"empty.npz": b"", "cut.npz": blob[: len(blob) // 2], "text.npz": b"xy = 1, 2\n" * 20}
    with zipfile.ZipFile(tmp_path / "deflated.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("xy.npy", blob)
    crc = bytearray((tmp_path / "deflated.npz").read_bytes())
    crc[40] ^= 0xFF
    cases["crc.npz"] = bytes(crc)
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(FeaturesFileError) as caught:
            visiontk.Features.load(tmp_path / name)
        message = str(caught.value)
        assert name in message and "pickle" not in message and "\n" not in message
    with pytest.raises(FeaturesFileError, match="no xy"):
        np.savez(tmp_path / "other.npz", a=np.zeros(3))
        visiontk.Features.load(tmp_path / "other.npz")


def test_features_refuse_mismatched_arrays_when_built():
    n = 4
    with pytest.raises(FeaturesError, match="descriptors"):
        visiontk.Features(
            np.zeros((n, 2)),
            np.ones(n),
            np.zeros(n),
            np.ones(n),
            np.zeros(n, np.int32),
            np.zeros((n + 1, 128), np.uint8),
        )
    f = visiontk.Features(
        np.zeros((n, 2), np.float64),
        np.ones(n),
        np.zeros(n),
        np.ones(n),
        np.zeros(n, np.int64),
        np.zeros((n, 128), np.uint8),
        (10, 20),
    )
    assert f.xy.dtype == np.float32 and f.octave.dtype == np.int32 and f.image_size == (10, 20)


def test_correspondences_of_unequal_length():
    with pytest.raises(OptionError, match="20 points but xy_b has 19"):
        visiontk.estimate_homography(np.zeros((20, 2)), np.zeros((19, 2)))
    with pytest.raises(OptionError, match="N×2"):
        visiontk.estimate_fundamental(np.zeros((20, 3)), np.zeros((20, 3)))
    with pytest.raises(OptionError, match="NaN"):
        visiontk.estimate_homography(np.full((20, 2), np.nan), np.zeros((20, 2)))
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 100, (30, 1, 2))  # OpenCV's N×1×2 still works
    g = visiontk.estimate_homography(a, a + 5)
    np.testing.assert_allclose(g.model, [[1, 0, 5], [0, 1, 5], [0, 0, 1]], atol=1e-6)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says width×height and that holds no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_one_size_limit_with_exact_pixel_counts(tmp_path):
    huge = png_header_only(tmp_path / "huge.png", 20000, 10000)  # 200 MP: past Pillow's limit
    with pytest.raises(ImageError) as caught:
        visiontk.sift(huge)
    assert "20000×10000 = 200,000,000 pixels, over the limit of 40,000,000" in str(caught.value)
    with pytest.raises(ImageError) as caught:  # allowed by our limit: now it is only truncated
        visiontk.sift(huge, max_pixels=500_000_000)
    assert "truncated" in str(caught.value) and "too large" not in str(caught.value)
    edge = png_header_only(tmp_path / "edge.png", 8000, 5001)
    with pytest.raises(ImageError, match="40,008,000 pixels, over the limit of 40,000,000"):
        visiontk.sift(edge)


def test_attention_on_grids_too_small(tmp_path):
    from visiontk.vit.attention import dino_attention

    weights = FIXTURES / "dino_tiny_p16.pth"
    small = np.full((20, 20, 3), 128, np.uint8)
    with pytest.raises(ImageError, match="1×1 patch grid") as caught:
        dino_attention(small, weights=weights, image_size=0)
    assert "SIFT" not in str(caught.value)
    p = subprocess.run(
        [
            visiontk_command(),
            "attention",
            str(SAMPLES / "coffee.png"),
            "--weights",
            str(weights),
            "--image-size",
            "16",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 2 and "--image-size 16" in p.stderr and "Traceback" not in p.stderr
    r = dino_attention(small, weights=weights, image_size=32)  # 2×2 patches: a result
    assert r.tokencut.shape == (2, 2)


def test_control_characters_in_file_names(tmp_path):
    odd = tmp_path / "a\nb.png"
    odd.write_bytes((SAMPLES / "coffee.png").read_bytes())
    p = subprocess.run(
        [
            visiontk_command(),
            "match",
            str(odd),
            str(SAMPLES / "coffee_warped.png"),
            "--model",
            "none",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "a\\nb.png" in p.stdout and not any(
        line.startswith("b.png") for line in p.stdout.splitlines()
    )
    assert (tmp_path / "matches_a_b_coffee_warped.png").exists()
    (tmp_path / "bad\nname.png").write_text("not an image")
    p = subprocess.run(
        [visiontk_command(), "match", str(tmp_path / "bad\nname.png"), str(odd)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert "bad\\nname.png" in p.stderr
