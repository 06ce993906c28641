"""Every CUDA source compiles with nvcc, so a syntax error cannot land unseen (no GPU needed)."""

import shutil
import subprocess
from pathlib import Path

import pytest

SOURCES = sorted((Path(__file__).resolve().parent.parent / "visiontk").rglob("*.cu"))
NVCC = shutil.which("nvcc")


def test_there_are_cuda_sources():
    assert SOURCES, "visiontk ships its GPU kernels as .cu files"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles(source, tmp_path):
    # sm_80 (A100) and sm_90 (H100/H200): the architectures the GPU benchmark targets.
    for arch in ("sm_80", "sm_90"):
        p = subprocess.run([NVCC, f"-arch={arch}", "--std=c++14", "-c", str(source), "-o",
                            str(tmp_path / f"{source.stem}.{arch}.o")],
                           capture_output=True, text=True, check=False)
        assert p.returncode == 0, p.stderr
        assert "warning" not in p.stderr.lower(), p.stderr
