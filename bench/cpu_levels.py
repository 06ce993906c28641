"""Where a benchmark ran, and ``--simd avx2``: the same bench with visiontk and its anchors held
to AVX2, so an AVX-512 machine measures what an AVX2 laptop or desktop runs.

Held to AVX2 (no AVX-512, no AVX-VNNI), each through its own switch, set before anything loads:

- visiontk's own dispatch: ``VISIONTK_SIMD=avx2`` (visiontk/simd.py);
- code numba generates (visiontk's kernels): ``NUMBA_CPU_NAME=haswell`` with
  ``NUMBA_CPU_FEATURES=+avx2,+fma`` (the name alone keeps this CPU's features), its own cache;
- OpenBLAS (numpy's and FAISS's): ``OPENBLAS_CORETYPE=Haswell``;
- numpy's own loops: ``NPY_DISABLE_CPU_FEATURES``;
- OpenCV: ``OPENCV_CPU_DISABLE`` (the AVX-512 and AVX-VNNI names it reports);
- FAISS: ``FAISS_SIMD_LEVEL=AVX2`` (``FAISS_OPT_LEVEL=avx2`` for builds without dynamic dispatch);
- torch: ``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``.

COLMAP's SIFT (pycolmap) has no switch: it runs as built, which the table says.
"""

from __future__ import annotations

import argparse
import os
import sys

from visiontk import simd

LEVELS = ("native", "avx2")
#: set in the environment of a bench held to AVX2 (and so of every process it starts)
AVX2_ENV = {
    simd.ENV: "avx2",
    **simd.AVX2_NUMBA,
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL "
    "AVX512_ICL AVX512_SPR",
    "FAISS_SIMD_LEVEL": "AVX2",
    "FAISS_OPT_LEVEL": "avx2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
HELD = "held"


def add_simd_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--simd",
        choices=LEVELS,
        default="native",
        help="native: what this CPU has; avx2: visiontk and the anchors held to AVX2 "
        "(see bench/cpu_levels.py)",
    )


def apply(args: argparse.Namespace) -> None:
    """With ``--simd avx2``, start this bench again with the AVX2 environment (the switches
    are read once, when each library loads)."""
    if args.simd != "avx2" or os.environ.get("VISIONTK_BENCH_SIMD") == HELD:
        return
    env = {**os.environ, **AVX2_ENV, "VISIONTK_BENCH_SIMD": HELD}
    env["OPENCV_CPU_DISABLE"] = ",".join(_opencv_above_avx2())
    # numba keeps code per CPU target in its index, but a separate folder keeps both warm
    env["NUMBA_CACHE_DIR"] = os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "visiontk", "numba-avx2"
    )
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def suffix() -> str:
    """The suffix of a published table's name at this level (``""`` native, ``"_avx2"``)."""
    return "_avx2" if os.environ.get("VISIONTK_BENCH_SIMD") == HELD else ""


def where() -> str:
    """One line naming the CPU and the SIMD level each side ran at."""
    cpu = f"{simd.cpu_model()}, {os.cpu_count()} cores"
    if os.environ.get("VISIONTK_BENCH_SIMD") == HELD:
        return (
            f"{cpu}; held to AVX2 (`--simd avx2`): visiontk {simd.describe()}, numba, OpenBLAS, "
            "numpy, OpenCV, FAISS and torch at AVX2; COLMAP as built"
        )
    return f"{cpu}; native SIMD: visiontk {simd.describe()}; anchors use what this CPU has"


def _opencv_above_avx2() -> list[str]:
    """OpenCV's names (as this build spells them) for what lies above AVX2."""
    try:
        import cv2
    except ImportError:
        return []
    names = [f.strip("*?") for f in cv2.getCPUFeaturesLine().split()]
    return [n for n in names if n.startswith("AVX512") or "VNNI" in n]
