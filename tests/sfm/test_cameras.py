"""Camera intrinsics for mapping: EXIF focal lengths, known-intrinsics files, one camera."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from visiontk.errors import OptionError
from visiontk.sfm.cameras import CameraChooser, camera_for, exif_focal, read_intrinsics

FOCAL_35MM, FOCAL_LENGTH, PLANE_X, PLANE_UNIT = 0xA405, 0x920A, 0xA20E, 0xA210


def photo(path, tags=None, size=(400, 300), make_model=None):
    exif = Image.Exif()
    if make_model:
        exif[0x010F], exif[0x0110] = make_model
    ifd = exif.get_ifd(0x8769)
    ifd.update(tags or {})
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path, exif=exif.tobytes())
    return path


def test_35mm_equivalent_as_colmap_reads_it(tmp_path):
    path = photo(tmp_path / "a.jpg", {FOCAL_35MM: 28})
    focal, source = exif_focal(path, 400, 300)
    assert focal == pytest.approx(28 / 35 * 400) and source == "exif 35mm"
    assert exif_focal(path, 300, 400)[0] == pytest.approx(28 / 35 * 400)  # turned: same focal


def test_focal_length_and_focal_plane_resolution(tmp_path):
    # 4.5 mm lens, 100 pixels per mm on the sensor: 450 pixels
    path = photo(tmp_path / "b.jpg", {FOCAL_LENGTH: 4.5, PLANE_X: 100.0, PLANE_UNIT: 4})
    focal, source = exif_focal(path, 400, 300)
    assert focal == pytest.approx(450) and source == "exif focal plane"
    inches = photo(tmp_path / "c.jpg", {FOCAL_LENGTH: 4.5, PLANE_X: 2540.0, PLANE_UNIT: 2})
    assert exif_focal(inches, 400, 300)[0] == pytest.approx(450)


def test_focal_plane_focal_scaled_to_the_size_shown(tmp_path):
    # a 400×300 photo shown at half its size: 450 px at full size is 225 px at half
    path = photo(tmp_path / "b.jpg", {FOCAL_LENGTH: 4.5, PLANE_X: 100.0, PLANE_UNIT: 4})
    assert exif_focal(path, 200, 150)[0] == pytest.approx(225)


def _chunks(data: bytes) -> list:
    chunks, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        chunks.append((kind, data[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def _png(chunks) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I4s", len(d), k) + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks
    )


@pytest.mark.parametrize("after_image_data", [False, True])
def test_png_exif_before_or_after_the_image_data(tmp_path, after_image_data):
    chunks = _chunks(photo(tmp_path / "p.png", {FOCAL_35MM: 28}).read_bytes())
    assert b"eXIf" in [k for k, _ in chunks]
    if after_image_data:  # allowed by the PNG spec; Pillow's writer puts it before
        exif = [c for c in chunks if c[0] == b"eXIf"]
        chunks = [c for c in chunks if c[0] != b"eXIf"]
        chunks[-1:-1] = exif
        (tmp_path / "p.png").write_bytes(_png(chunks))
        assert [k for k, _ in _chunks((tmp_path / "p.png").read_bytes())][-2:] == [b"eXIf", b"IEND"]
    assert exif_focal(tmp_path / "p.png", 400, 300) == (pytest.approx(28 / 35 * 400), "exif 35mm")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "none.png")
    assert exif_focal(tmp_path / "none.png", 40, 30) is None


@pytest.mark.parametrize(
    "tags",
    [{}, {FOCAL_35MM: 0}, {FOCAL_LENGTH: 4.5}, {FOCAL_LENGTH: 4.5, PLANE_X: 1e6, PLANE_UNIT: 4}],
)
def test_missing_or_implausible_exif_is_a_guess_not_an_error(tmp_path, tags):
    assert exif_focal(photo(tmp_path / "d.jpg", tags), 400, 300) is None
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe1garbage")
    assert exif_focal(tmp_path / "broken.jpg", 400, 300) is None


def test_colmaps_guess_and_models():
    camera = camera_for("SIMPLE_RADIAL", 640, 480, None)
    assert camera.params == (1.2 * 640, 320, 240, 0) and not camera.prior
    assert camera_for("OPENCV", 640, 480, 500.0, "file").params == (500, 500, 320, 240, 0, 0, 0, 0)
    with pytest.raises(OptionError, match="camera model must be one of"):
        camera_for("FISHEYE", 640, 480, None)


def test_chooser_prefers_the_file_then_exif_and_shares_one_camera(tmp_path):
    with_exif = photo(tmp_path / "e.jpg", {FOCAL_35MM: 35})
    plain = photo(tmp_path / "f.jpg")
    chooser = CameraChooser({"e.jpg": with_exif, "f.jpg": plain})
    assert chooser("e.jpg", (300, 400)).params[0] == pytest.approx(400)
    assert chooser("f.jpg", (300, 400)).params[0] == pytest.approx(480)
    assert chooser.sources == {"e.jpg": "exif 35mm", "f.jpg": "guess"}
    shared = CameraChooser({"e.jpg": with_exif, "f.jpg": plain}, single_camera=True)
    assert shared("e.jpg", (300, 400)) is shared("f.jpg", (300, 400))
    with pytest.raises(OptionError, match=r"single_camera: f.jpg is 300×400"):
        shared("f.jpg", (400, 300))
    (tmp_path / "k.txt").write_text("f.jpg PINHOLE 400 300 410 412 200 150\n")
    known = CameraChooser({"e.jpg": with_exif, "f.jpg": plain}, intrinsics=tmp_path / "k.txt")
    assert known("f.jpg", (300, 400)).params == (410, 412, 200, 150)
    assert known("e.jpg", (300, 400)).source == "exif 35mm"
    with pytest.raises(OptionError, match=r"the camera for f\.jpg is 400×300, the image 200×100"):
        known("f.jpg", (100, 200))


def test_one_camera_per_exif_make_model_focal_and_size_as_colmap(tmp_path):
    phone = ("Pixel", "Pixel 9")
    paths = {
        "a.jpg": photo(tmp_path / "a.jpg", {FOCAL_35MM: 26}, make_model=phone),
        "b.jpg": photo(tmp_path / "b.jpg", {FOCAL_35MM: 26}, make_model=phone),
        "zoom.jpg": photo(tmp_path / "zoom.jpg", {FOCAL_35MM: 77}, make_model=phone),
        "other.jpg": photo(
            tmp_path / "other.jpg", {FOCAL_35MM: 26}, make_model=("Pixel", "Pixel 8")
        ),
        "portrait.jpg": photo(
            tmp_path / "portrait.jpg", {FOCAL_35MM: 26}, (300, 400), make_model=phone
        ),
        "no_model.jpg": photo(tmp_path / "no_model.jpg", {FOCAL_35MM: 26}),
        "plain1.jpg": photo(tmp_path / "plain1.jpg"),
        "plain2.jpg": photo(tmp_path / "plain2.jpg"),
    }
    chooser = CameraChooser(paths)
    cams = {n: chooser(n, (400, 300) if n == "portrait.jpg" else (300, 400)) for n in paths}
    assert cams["a.jpg"] is cams["b.jpg"]  # one phone at one zoom: one set of intrinsics
    others = [cams[n] for n in paths if n not in ("a.jpg", "b.jpg")]
    assert len({id(c) for c in [cams["a.jpg"], *others]}) == len(others) + 1
    assert cams["zoom.jpg"].params[0] == pytest.approx(77 / 35 * 400)
    assert cams["portrait.jpg"].width == 300
    # without EXIF (exif=False) every image has its own camera, as before
    plain = CameraChooser(paths, exif=False)
    assert plain("a.jpg", (300, 400)) is not plain("b.jpg", (300, 400))


@pytest.mark.parametrize(
    "text, words",
    [
        ("a.jpg FISHEYE 4 3 1 1 1\n", "MODEL one of"),
        ("a.jpg PINHOLE 400 300 1 2 3\n", "PINHOLE takes 4 params"),
        ("a.jpg PINHOLE 400 x 1 2 3 4\n", "must be numbers"),
        ("a.jpg SIMPLE_PINHOLE 400 300 -5 200 150\n", "positive focal length"),
        ("# nothing\n", "no cameras"),
    ],
)
def test_intrinsics_file_errors_are_one_line(tmp_path, text, words):
    path = tmp_path / "cameras.txt"
    path.write_text(text)
    with pytest.raises(OptionError, match=words) as info:
        read_intrinsics(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
