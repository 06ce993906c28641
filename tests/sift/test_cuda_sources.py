"""Every CUDA source compiles, so a syntax error cannot land unseen (no GPU needed): with nvcc
where it is installed, and with NVRTC, the compiler CuPy's RawModule uses at run time, with the
options visiontk passes it (NVRTC sees no host headers, so it can refuse what nvcc accepts)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from visiontk._sift._gpu_kernels import NVRTC_OPTIONS

SOURCES = sorted((Path(__file__).resolve().parents[2] / "visiontk" / "_sift").rglob("*.cu"))
NVCC = shutil.which("nvcc")
#: Architectures the GPU benchmark targets: A100 (sm_80) and H100/H200 (sm_90).
ARCHS = ("80", "90")


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # ImportError without CuPy, a loader error without libnvrtc
        return None, f"NVRTC is not available ({str(exc).splitlines()[0] if str(exc) else exc})"
    return nvrtc, ""


NVRTC, NO_NVRTC = _nvrtc()


def test_there_are_cuda_sources():
    assert SOURCES, "visiontk ships its GPU kernels as .cu files"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles_with_nvcc(source, tmp_path):
    for arch in ARCHS:
        p = subprocess.run(
            [
                NVCC,
                f"-arch=sm_{arch}",
                *NVRTC_OPTIONS,
                "-c",
                str(source),
                "-o",
                str(tmp_path / f"{source.stem}.sm_{arch}.o"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert p.returncode == 0, p.stderr
        assert "warning" not in p.stderr.lower(), p.stderr


@pytest.mark.skipif(NVRTC is None, reason=NO_NVRTC)
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles_with_nvrtc(source):
    for arch in ARCHS:
        program = NVRTC.createProgram(source.read_text(), source.name, [], [])
        try:
            NVRTC.compileProgram(program, [*NVRTC_OPTIONS, f"-arch=compute_{arch}"])
        except NVRTC.NVRTCError:
            pytest.fail(f"compute_{arch}: {NVRTC.getProgramLog(program)}")
        log = NVRTC.getProgramLog(program)
        assert "warning" not in log.lower(), log
        assert b".entry" in NVRTC.getPTX(program)  # kernels were emitted


def test_constants_come_from_python_not_from_copies_in_the_source():
    """sift.cu defines none of the constants it is given (-D from constants.py and the launch
    geometry), refuses to compile without them, and the blur's registers cover its tile."""
    import re

    from visiontk._sift import _gpu_kernels as host
    from visiontk._sift import constants

    text = host.SOURCE.read_text()
    given = host.defines()
    assert not [name for name in given if re.search(rf"#define\s+{name}\b", text)]
    assert float(given["ORI_RADIUS_FACTOR"].rstrip("f")) == constants.ORI_RADIUS_FACTOR
    assert int(given["ORI_BINS"]) == constants.ORI_BINS
    for literal in ("4.5f", "1.5f", "3.f", "57.28"):
        assert literal not in text
    threads = host.BLUR_BLOCK[0] * host.BLUR_BLOCK[1]
    assert threads * host.BLUR_MAX_PER_THREAD >= host.BLUR_TILE[0] * host.BLUR_TILE[1]


@pytest.mark.skipif(NVRTC is None, reason=NO_NVRTC)
def test_source_without_the_options_does_not_compile():
    source = SOURCES[0]
    program = NVRTC.createProgram(source.read_text(), source.name, [], [])
    with pytest.raises(NVRTC.NVRTCError):
        NVRTC.compileProgram(program, ["--std=c++14", "-arch=compute_80"])
    assert "compile_options" in NVRTC.getProgramLog(program)
