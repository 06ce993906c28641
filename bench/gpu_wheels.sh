#!/usr/bin/env bash
# Fetch into .wheels/ (git-ignored, ~47 MB) the wheels bench/gpu_check.sh installs on a GPU
# machine without network: pytest and visiontk's small dependencies, for CPython 3.12 on
# x86-64 Linux (the lent device machine). Run where PyPI is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q -d .wheels --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any \
    pytest click tqdm pyyaml h5py matplotlib pillow
du -sh .wheels
