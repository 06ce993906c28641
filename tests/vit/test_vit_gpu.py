"""The ViT forward pass on an NVIDIA GPU (CuPy) against the CPU path. Skipped, with the
reason, where no GPU exists (`bash bench/gpu_check.sh` runs it on one)."""

import numpy as np
import pytest
from dino_fixture import pixels, tiny_state
from dinov2_fixture import tiny_state as tiny_v2_state

from visiontk import devices
from visiontk.vit import ViT

USABLE, WHY = devices.cuda_status()
pytestmark = pytest.mark.skipif(not USABLE, reason=f"no GPU for the CUDA tests: {WHY}")


@pytest.mark.parametrize("variant", ["dino", "v2reg4", "v2swiglu"])
def test_vit_on_cuda_equals_cpu_single_and_batched(variant):
    import cupy as cp

    state = tiny_state(patch=8) if variant == "dino" else tiny_v2_state(variant)
    size = (40, 24) if variant == "dino" else (42, 70)
    batch = np.stack([pixels(*size, seed=s) for s in range(3)])
    cpu, gpu = ViT(state), ViT(state, xp=cp)
    for x in (batch[0], batch):
        want = cpu.last_block(x, features=True)
        got = gpu.last_block(cp.asarray(x), features=True)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(cp.asnumpy(g), w, rtol=1e-4, atol=1e-5)
