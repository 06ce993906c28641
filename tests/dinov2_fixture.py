"""Tiny DINOv2-layout ViTs (official hub key names) with seeded random weights.

Shared by tests/fixtures/make_dinov2_fixture.py (PyTorch reference, run once, outputs committed)
and tests/vit/test_dinov2.py (rebuilds the same weights without PyTorch). Patch 14, width 128
with 64-dimensional heads, depth 2, positional grid 4×4 (trained at 56 pixels), LayerScale;
variants with 0 and 4 registers, and one with the giant model's SwiGLU MLP.
"""

import numpy as np
from dino_fixture import pixels as dino_pixels

PATCH, DIM, HEADS, DEPTH, GRID, MLP = 14, 128, 2, 2, 4, 128
#: name -> (registers, swiglu)
VARIANTS = {"v2": (0, False), "v2reg4": (4, False), "v2swiglu": (0, True)}
#: (height, width): the training grid (no interpolation), non-square smaller, larger.
INPUTS = [(56, 56), (42, 70), (98, 84), (126, 126)]


def tiny_state(variant: str, seed: int = 0) -> dict:
    registers, swiglu = VARIANTS[variant]
    rng = np.random.default_rng(seed + 100 * registers + swiglu)

    def w(*shape, scale=0.05):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    state = {
        "cls_token": w(1, 1, DIM, scale=0.5),
        "pos_embed": w(1, 1 + GRID * GRID, DIM, scale=0.5),
        "mask_token": w(1, DIM),
        "patch_embed.proj.weight": w(DIM, 3, PATCH, PATCH, scale=0.03),
        "patch_embed.proj.bias": w(DIM),
    }
    if registers:
        state["register_tokens"] = w(1, registers, DIM, scale=0.5)
    for i in range(DEPTH):
        b = f"blocks.{i}."
        state.update(
            {
                b + "norm1.weight": 1 + w(DIM, scale=0.1),
                b + "norm1.bias": w(DIM),
                b + "attn.qkv.weight": w(3 * DIM, DIM, scale=0.15),
                b + "attn.qkv.bias": w(3 * DIM),
                b + "attn.proj.weight": w(DIM, DIM),
                b + "attn.proj.bias": w(DIM),
                b + "ls1.gamma": 0.5 + w(DIM, scale=0.2),
                b + "norm2.weight": 1 + w(DIM, scale=0.1),
                b + "norm2.bias": w(DIM),
                b + "ls2.gamma": 0.5 + w(DIM, scale=0.2),
            }
        )
        if swiglu:
            state.update(
                {
                    b + "mlp.w12.weight": w(2 * MLP, DIM, scale=0.1),
                    b + "mlp.w12.bias": w(2 * MLP),
                    b + "mlp.w3.weight": w(DIM, MLP, scale=0.1),
                    b + "mlp.w3.bias": w(DIM),
                }
            )
        else:
            state.update(
                {
                    b + "mlp.fc1.weight": w(MLP, DIM, scale=0.1),
                    b + "mlp.fc1.bias": w(MLP),
                    b + "mlp.fc2.weight": w(DIM, MLP, scale=0.1),
                    b + "mlp.fc2.bias": w(DIM),
                }
            )
    state["norm.weight"] = 1 + w(DIM, scale=0.1)
    state["norm.bias"] = w(DIM)
    return state


def pixels(height: int, width: int, seed: int = 11) -> np.ndarray:
    """As dino_fixture's inputs, from another seed."""
    return dino_pixels(height, width, seed)
