"""Every CUDA source compiles, so a syntax error cannot land unseen (no GPU needed): with nvcc
where it is installed, and with NVRTC, the compiler CuPy's RawModule uses at run time, with the
options visiontk passes it (NVRTC sees no host headers, so it can refuse what nvcc accepts)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from visiontk._sift._gpu_kernels import NVRTC_OPTIONS

SOURCES = sorted((Path(__file__).resolve().parent.parent / "visiontk").rglob("*.cu"))
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
        p = subprocess.run([NVCC, f"-arch=sm_{arch}", "--std=c++14", "-c", str(source), "-o",
                            str(tmp_path / f"{source.stem}.sm_{arch}.o")],
                           capture_output=True, text=True, check=False)
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


def test_launch_constants_agree_with_the_source():
    """The host side sizes the blur's grid and taps table from constants the kernel defines."""
    import re

    from visiontk._sift import _gpu_kernels as host

    text = host.SOURCE.read_text()
    defined = {m[0]: int(m[1]) for m in re.findall(r"#define (BLUR_\w+) (\d+)\b", text)}
    assert (defined["BLUR_TILE_W"], defined["BLUR_TILE_H"]) == host.BLUR_TILE
    assert defined["BLUR_MAX_RADIUS"] == host.BLUR_MAX_RADIUS
    threads = host.BLUR_BLOCK[0] * host.BLUR_BLOCK[1]
    assert threads * defined["BLUR_MAX_PER_THREAD"] >= host.BLUR_TILE[0] * host.BLUR_TILE[1]
