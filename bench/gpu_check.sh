#!/usr/bin/env bash
# GPU checks in one command, for a machine with an NVIDIA GPU and CuPy installed: the CUDA
# tests (kernels vs xp definitions, emulated and on the GPU; CPU/GPU parity) and the GPU
# benchmark.
#   bash bench/gpu_check.sh [OUTDIR]        results in OUTDIR (default $OUT or bench/results)
# A machine without network (the lent device machine has CuPy, OpenCV and scikit-image but
# maybe not pytest or visiontk's small dependencies): fetch wheels first where there is
# network with `bash bench/gpu_wheels.sh`, and bring .wheels/ along; they are installed from it.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/results}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu.txt"
if [ -d .wheels ]; then
    "$py" -m pip install -q --no-index --find-links .wheels pytest click tqdm pyyaml h5py \
        matplotlib pillow 2>&1 | tail -3 | tee "$out/wheels.log"
fi
status=0
if "$py" -m pytest --version >/dev/null 2>&1; then
    "$py" -m pytest -q -rs -p no:cacheprovider tests/sift/test_cuda_kernels.py \
        tests/sift/test_gpu.py tests/sift/test_cuda_sources.py tests/vit/test_vit_gpu.py 2>&1 | tee "$out/gpu_tests.log" \
        || status=1
else
    echo "pytest is not installed for $py: GPU tests not run" | tee "$out/gpu_tests.log"
    status=1
fi
"$py" bench/gpu_bench.py --json "$out/gpu_bench.json" 2>&1 | tee "$out/gpu_bench.log" || status=1
exit $status
