"""Shared fixtures: the repository's sample photos and OpenCV's SIFT on them."""

from pathlib import Path

import cv2
import numpy as np
import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


def read_rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(SAMPLES / name)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session", autouse=True)
def _kernels_compiled():
    """Compile the CPU kernels once, before any test: a command started by a test then never
    prints the first use's notice, and the compile is paid once, not by the first of each
    kind of process (tests that check that notice use a cache folder of their own)."""
    from visiontk._numba_cache import compile_kernels

    compile_kernels()


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture
def photo_folder(tmp_path):
    """``photo_folder(name, ...)``: a new folder under tmp_path holding copies of those
    sample photos (each call a folder of its own)."""
    made = []

    def make(*names: str) -> Path:
        folder = tmp_path / f"photos{len(made)}"
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes((SAMPLES / name).read_bytes())
        made.append(folder)
        return folder

    return make


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return read_rgb("astronaut.png")


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    return read_rgb("coffee.png")


def opencv_sift(rgb: np.ndarray, **kwargs):
    """cv2.SIFT with its default (linear, centre-aligned) upscale, keypoints moved by the
    quarter pixel that upscale shifts them (visiontk reports unbiased positions)."""
    import visiontk
    from visiontk._sift.scale_space import UPSAMPLE_SHIFT

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    keypoints, descriptors = cv2.SIFT_create(**kwargs).detectAndCompute(gray, None)
    feats = visiontk.Features.from_keypoints(keypoints, descriptors, gray.shape)
    feats.xy += UPSAMPLE_SHIFT
    return feats
