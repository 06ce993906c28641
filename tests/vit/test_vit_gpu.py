"""The ViT forward pass on each device with an array module of its own (the ``device`` fixture's
"cpu" and "cuda", CuPy) against the CPU path. The CUDA parameter is skipped, with the reason,
where no GPU exists (`bash bench/gpu_check.sh` runs it on one); the CPU one is the reference
against itself, and keeps this test's code running where there is no GPU."""

import numpy as np
import pytest
from dino_fixture import pixels, tiny_state
from dinov2_fixture import tiny_state as tiny_v2_state
from dinov3_fixture import tiny_state as tiny_v3_state

from visiontk.vit import ViT
from visiontk.vit.checkpoints import normalise_state_dict

pytestmark = pytest.mark.devices("cpu", "cuda")


@pytest.mark.parametrize("variant", ["dino", "v2reg4", "v2swiglu", "v3", "v3swiglu"])
def test_vit_on_each_device_equals_cpu_single_and_batched(device, variant):
    if variant == "dino":
        state, size = tiny_state(patch=8), (40, 24)
    elif variant.startswith("v3"):  # RoPE, storage tokens, masked k bias
        state, size = normalise_state_dict(tiny_v3_state(variant)), (48, 80)
    else:
        state, size = tiny_v2_state(variant), (42, 70)
    batch = np.stack([pixels(*size, seed=s) for s in range(3)])
    cpu, on_device = ViT(state), ViT(state, xp=device.xp)
    for x in (batch[0], batch):
        want = cpu.last_block(x, features=True)
        got = on_device.last_block(device.to_device(x), features=True)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(device.to_host(g), w, rtol=1e-4, atol=1e-5)
