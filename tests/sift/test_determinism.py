"""SIFT gives the same bytes in every process: the numba kernels' vectorised loops and their
scalar remainders must round alike, whatever addresses the allocator hands out."""

import os
import subprocess
import sys

import numpy as np
import pytest

from visiontk import simd

SCRIPT = """
import sys, numpy as np, visiontk
junk = [np.ones(n, np.float32) for n in range({junk})]  # moves later allocations around
feats = visiontk.sift(sys.argv[1], preset=sys.argv[2])
np.save(sys.argv[3], np.c_[feats.xy.view(np.uint8).reshape(len(feats), -1),
                           feats.descriptors])
"""


def test_two_processes_give_identical_features(samples, tmp_path):
    for preset in ("accurate", "opencv"):
        runs = []
        for junk in (0, 37, 1001, 4099):
            out = tmp_path / f"{preset}{junk}.npy"
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    SCRIPT.format(junk=junk),
                    str(samples / "coffee.png"),
                    preset,
                    str(out),
                ],
                check=True,
            )
            runs.append(np.load(out))
        assert len(runs[0]) > 500
        for other in runs[1:]:
            np.testing.assert_array_equal(other, runs[0], err_msg=preset)


@pytest.mark.skipif(
    simd.machine_level() == "generic", reason=f"this CPU has no AVX2: {simd.describe()}"
)
def test_code_compiled_for_avx2_gives_identical_features(samples, tmp_path):
    """An AVX2 laptop's code (numba compiling every kernel for Haswell, run here) gives this
    machine's keypoints and descriptors byte for byte: vector width may change the speed,
    never the result."""
    runs = []
    haswell = {**simd.AVX2_NUMBA, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    for name, extra in (("host", {}), ("haswell", haswell)):
        env = {**os.environ, **extra}
        out = tmp_path / f"{name}.npy"
        subprocess.run(
            [
                sys.executable,
                "-c",
                SCRIPT.format(junk=0),
                str(samples / "coffee.png"),
                "opencv",
                str(out),
            ],
            env=env,
            check=True,
        )
        runs.append(np.load(out))
    assert len(runs[0]) > 500
    np.testing.assert_array_equal(runs[1], runs[0])
