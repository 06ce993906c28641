"""Shared fixtures: the repository's sample photos, OpenCV's SIFT on them, and ``device``: each
test that takes it runs once per device (the CPU, the CUDA kernels emulated on the CPU, an
NVIDIA GPU), as kornia's tests do."""

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from visiontk import devices
from visiontk._sift.backends import CudaBackend, SiftBackend, for_device

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


# -- the device fixture ----------------------------------------------------------------------

#: What the ``device`` fixture runs a test on, in this order; ``@pytest.mark.devices(...)`` on a
#: test (or ``pytestmark`` on a module) names fewer.
DEVICES = ("cpu", "emulated-cuda", "cuda")


@dataclass(frozen=True)
class SiftDevice:
    """One device a test runs on. ``name``: "cpu", "emulated-cuda" or "cuda" ("cpu" and "cuda"
    are also the public API's names); ``xp``: the array module of its arrays (numpy for the
    emulator, whose kernels run on host memory); ``backend``: a SIFT backend for
    :func:`visiontk._sift.extraction.extract` on it; ``to_device`` and ``to_host`` move an
    array there and back."""

    name: str
    xp: ModuleType
    #: kernels/sift.cu compiled for this device (a cupy.RawModule, or the emulator's
    #: EmulatedModule); None on the CPU.
    cuda_module: object = None

    def kernels(self, **launch):
        """A new :class:`~visiontk._sift._gpu_kernels.CudaSift` on this device (``launch``: its
        ``block`` and ``initial_capacity``)."""
        from visiontk._sift._gpu_kernels import CudaSift

        if self.cuda_module is None:
            raise TypeError(f"device {self.name} runs no CUDA kernels")
        return CudaSift(self.cuda_module, self.xp, **launch)

    def new_backend(self, **launch) -> SiftBackend:
        """A new SIFT backend; ``launch`` tunes the CUDA kernels (the CPU has none to tune)."""
        if self.cuda_module is None:
            return for_device("cpu")
        return CudaBackend(self.kernels(**launch))

    @functools.cached_property
    def backend(self) -> SiftBackend:
        return self.new_backend()

    def to_device(self, array):
        return self.xp.asarray(array)

    def to_host(self, array) -> np.ndarray:
        return devices.to_host(array)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "devices(*names): the devices the device fixture runs "
        f"the test on (default: all of {', '.join(DEVICES)})",
    )


def _unavailable(name: str) -> str | None:
    """Why ``name`` cannot run here, or None."""
    if name == "emulated-cuda" and shutil.which("g++") is None:
        return "g++ is needed to emulate the CUDA kernels"
    if name == "cuda":
        usable, why = devices.cuda_status()
        if not usable:
            return f"no NVIDIA GPU: {why}"
    return None


def pytest_generate_tests(metafunc):
    """A test that takes ``device`` runs on each of DEVICES, or of those its ``devices`` mark
    names; one that cannot run here is skipped, saying why."""
    if "device" not in metafunc.fixturenames:
        return
    mark = metafunc.definition.get_closest_marker("devices")
    names = mark.args if mark else DEVICES
    unknown = [n for n in names if n not in DEVICES]
    if unknown or not names:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: devices mark names {unknown}; "
            f"the devices are {', '.join(DEVICES)}"
        )
    params = []
    for name in names:
        why = _unavailable(name)
        params.append(
            pytest.param(name, id=name, marks=[pytest.mark.skip(reason=why)] if why else [])
        )
    metafunc.parametrize("device", params, indirect=True)


@pytest.fixture(scope="session")
def emulated_cuda_module(tmp_path_factory):
    """kernels/sift.cu built by g++ for the emulator, once per session."""
    from visiontk._sift._gpu_kernels import NVRTC_OPTIONS, SOURCE
    from visiontk.testing.cuda_emulator import EmulatedModule

    return EmulatedModule(SOURCE, tmp_path_factory.mktemp("cuda_emulator"), NVRTC_OPTIONS)


@pytest.fixture
def device(request) -> SiftDevice:
    """The device this run of the test is on (see :class:`SiftDevice`)."""
    if request.param == "cpu":
        return SiftDevice("cpu", np)
    if request.param == "emulated-cuda":
        return SiftDevice("emulated-cuda", np, request.getfixturevalue("emulated_cuda_module"))
    import cupy

    from visiontk._sift._gpu_kernels import cupy_module

    return SiftDevice("cuda", cupy, cupy_module())
