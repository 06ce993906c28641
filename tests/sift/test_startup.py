"""Loading the CPU kernels in a fresh process: in visiontk's own processes (the CLI, pipeline
workers) without numba's probe for SciPy's BLAS, with the same keypoints; in a user's process
untouched."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("numba")

SCRIPT = """
import hashlib, json, sys
if sys.argv[1] == "own":
    from visiontk._sift.backends import own_process
    own_process()
import numpy as np, visiontk  # not skimage: it imports scipy.linalg itself
f = visiontk.sift(sys.argv[2], device="cpu")
linalg_by_sift = "scipy.linalg" in sys.modules
digest = hashlib.sha256(f.xy.tobytes() + f.descriptors.tobytes()).hexdigest()
import numba
@numba.njit
def product(a, b):
    return np.dot(a, b)
m = np.arange(9.0).reshape(3, 3)
print(json.dumps({"keypoints": len(f.xy), "digest": digest, "linalg_by_sift": linalg_by_sift,
                  "dot": bool(np.allclose(product(m, m), m @ m)),
                  "marker_left": sys.modules.get("scipy.linalg.cython_blas", 0) is None}))
"""


def _fresh(mode: str, image) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(image)], capture_output=True, text=True, check=True
    )
    return json.loads(p.stdout.splitlines()[-1])


def test_own_process_loads_kernels_without_scipy_linalg_and_finds_the_same_keypoints(samples):
    own, user = _fresh("own", samples / "coffee.png"), _fresh("user", samples / "coffee.png")
    assert own["keypoints"] > 100 and own["digest"] == user["digest"]
    assert not own["linalg_by_sift"]  # numba's BLAS probe skipped: 0.1 s of a worker's start
    assert own["dot"] and user["dot"]  # numba code compiled later still gets BLAS
    assert not own["marker_left"] and not user["marker_left"]


def test_cli_marks_its_process_as_its_own():
    code = (
        "import sys; from click.testing import CliRunner; import visiontk_cli.main as m; "
        "from visiontk._sift import backends; "
        "CliRunner().invoke(m.main, ['stages']); print(backends._OWN_PROCESS[0])"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.split()[-1] == "True"
