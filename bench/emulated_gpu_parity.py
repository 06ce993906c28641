"""CPU path against the GPU path run through the CPU emulation of its CUDA kernels, on the
sample images, for each SIFT preset: the parity table of docs/gpu.md, reproducible without a GPU
(needs g++).

    python bench/emulated_gpu_parity.py

The emulator shows that the kernels compute what the CPU computes; it says nothing of speed.
On a GPU, bench/gpu_bench.py prints the same table from the real device.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from doc_tables import add_docs_flag, markdown_table, parse_args, publish

from visiontk import io
from visiontk._sift._gpu_kernels import NVRTC_OPTIONS, SOURCE, CudaSift
from visiontk._sift.backends import CudaBackend, for_device
from visiontk._sift.extraction import extract
from visiontk._sift.options import SIFT_PRESETS, SiftOptions
from visiontk.testing.agreement import keypoint_agreement
from visiontk.testing.cuda_emulator import EmulatedModule

ROOT = Path(__file__).resolve().parent.parent

NAMES = [
    "astronaut.png",
    "coffee.png",
    "coffee_warped.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
]


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_docs_flag(parser, "emulated_gpu_parity")
    args = parse_args(parser)
    rows = []
    with tempfile.TemporaryDirectory() as build:
        emulated = CudaBackend(CudaSift(EmulatedModule(SOURCE, Path(build), NVRTC_OPTIONS), np))
        cpu = for_device("cpu")
        for preset in SIFT_PRESETS:
            opts = SiftOptions(preset=preset)
            for name in NAMES:
                gray = io.load_gray(ROOT / "sample_images" / name)
                a = keypoint_agreement(extract(gray, opts, cpu), extract(gray, opts, emulated))
                rows.append(
                    [
                        preset,
                        Path(name).stem,
                        a["reference"],
                        a["other"],
                        f"{a['same']:.2%}",
                        f"{a['octave_layer_share']:.2%}",
                        f"{a['angle_within_0.5']:.2%}",
                        f"{a['descriptor_l2_median']:.1f}",
                    ]
                )
    text = markdown_table(
        [
            "preset",
            "image",
            "CPU kp",
            "GPU kp",
            "same within 0.05 px",
            "same octave+layer",
            "angle ≤ 0.5°",
            "descriptor L2 median",
        ],
        rows,
    )
    print(text)
    if args.docs:
        publish("emulated_gpu_parity", text, command="python bench/emulated_gpu_parity.py --docs")


if __name__ == "__main__":
    main()
