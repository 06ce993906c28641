"""Reading images (visiontk.io): bad input is refused with one line that names the file and the
problem; EXIF orientation is honoured wherever an image is read; inputs resolve to named
images (visiontk.io.inputs)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import visiontk
from visiontk.errors import ImageError, OptionError
from visiontk.io import load_gray, read_image
from visiontk.io.inputs import resolve_images
from visiontk.pipeline import Pipeline
from visiontk.pipeline.store import read_features_h5


def visiontk_command() -> str:
    return str(Path(sys.executable).parent / "visiontk")


def one_line(exc_info, *words):
    message = str(exc_info.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message


def test_missing_file(tmp_path):
    with pytest.raises(ImageError) as e:
        read_image(tmp_path / "nope.png")
    one_line(e, "nope.png", "no such file")


def test_directory(tmp_path):
    with pytest.raises(ImageError) as e:
        read_image(tmp_path)
    one_line(e, str(tmp_path), "directory")


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("hello, not a picture")
    with pytest.raises(ImageError) as e:
        read_image(p)
    one_line(e, "notes.png", "not an image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, astronaut, fmt):
    full = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(astronaut).save(full, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageError) as e:
        read_image(cut)
    one_line(e, cut.name, "truncated")


@pytest.mark.parametrize("shape", [(1, 1), (0, 0), (5, 300)])
def test_too_small(tmp_path, shape):
    with pytest.raises(ImageError) as e:
        load_gray(np.zeros(shape, np.uint8))
    one_line(e, "pixels")
    if shape[0] > 0:
        p = tmp_path / "tiny.png"
        Image.fromarray(np.zeros(shape, np.uint8)).save(p)
        with pytest.raises(ImageError) as e:
            read_image(p)
        one_line(e, "tiny.png", "pixels")


def test_too_large_is_refused_before_decoding(tmp_path):
    p = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(p)
    with pytest.raises(ImageError) as e:
        read_image(p, max_pixels=100_000)
    one_line(e, "big.png", "limit", "max-pixels")
    assert read_image(p, max_pixels=120_000).shape == (300, 400)


def test_sixteen_bit_rgba_and_grey_alpha_files(tmp_path, astronaut):
    gray8 = np.asarray(Image.fromarray(astronaut).convert("L"))
    ref = visiontk.sift(gray8, max_features=200)
    p16 = tmp_path / "g16.png"
    Image.fromarray(gray8.astype(np.uint16) * 257).save(p16)
    assert read_image(p16).dtype == np.uint16
    pla = tmp_path / "la.png"
    Image.fromarray(np.dstack([gray8, np.full_like(gray8, 200)]), mode="LA").save(pla)
    prgba = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([astronaut, np.full(astronaut.shape[:2], 90, np.uint8)])).save(prgba)
    for p in (p16, pla):
        got = visiontk.sift(p, max_features=200)
        np.testing.assert_allclose(got.xy, ref.xy, atol=1e-3)
    rgb_ref = visiontk.sift(astronaut, max_features=200)
    np.testing.assert_allclose(visiontk.sift(prgba, max_features=200).xy, rgb_ref.xy, atol=1e-3)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.full((40, 40), 3.0, np.float32), ["[0, 1]"]),
        (np.full((40, 40), np.nan, np.float32), ["NaN"]),
        (np.zeros((40, 40, 5), np.uint8), ["shape"]),
        (np.zeros((40, 40), np.int8), ["pixel type"]),
        ([[1, 2], [3, 4]], ["numpy array"]),
    ],
)
def test_bad_arrays(array, words):
    with pytest.raises(ImageError) as e:
        load_gray(array)
    one_line(e, *words)


def test_mask_of_wrong_shape(astronaut):
    with pytest.raises(ImageError) as e:
        visiontk.sift(astronaut, mask=np.ones((10, 10), bool))
    one_line(e, "mask")


def test_exif_orientation_is_honoured_by_every_entry_point(tmp_path, coffee):
    """A phone photo stored sideways with an orientation tag: the library, `visiontk extract`
    and `visiontk run` all see it as a viewer shows it, and find the same keypoints."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    folder = tmp_path / "in"
    folder.mkdir()
    photo = folder / "phone.jpg"
    Image.fromarray(coffee).save(photo, exif=exif.tobytes(), quality=95)
    library = visiontk.sift(photo)
    assert library.image_size == (600, 400)  # turned: 400 wide, 600 high
    p = subprocess.run(
        [visiontk_command(), "extract", str(photo), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    extracted = visiontk.Features.load(tmp_path / "x" / "phone.jpg.npz")
    run = Pipeline.from_spec([{"name": "load"}, {"name": "sift"}]).run(
        folder, tmp_path / "r", quiet=True
    )
    piped = read_features_h5(run.features_path)["phone.jpg"]
    for other in (extracted, piped):
        assert other.image_size == library.image_size
        np.testing.assert_allclose(other.xy, library.xy, atol=1e-4)


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
