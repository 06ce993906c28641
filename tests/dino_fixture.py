"""Tiny DINO-layout ViTs with seeded random weights, and seeded input pixels.

Shared by tests/fixtures/make_dino_fixture.py (which runs a PyTorch reference once and commits
its outputs) and tests/test_vit.py (which rebuilds the same weights without PyTorch).
Width 128 with 64-dimensional heads (2 heads, as DINO's ViTs use 64), depth 2, MLP ratio 1 to
keep the committed checkpoint small, positional grid 6×6.
"""

import numpy as np

DIM, HEADS, DEPTH, GRID, MLP = 128, 2, 2, 6, 128
#: (patch, height, width) inputs: the training grid (no interpolation), non-square, larger.
INPUTS = [(16, 96, 96), (16, 64, 112), (16, 128, 160), (8, 48, 48), (8, 40, 64), (8, 72, 56)]


def tiny_state(patch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed + patch)

    def w(*shape, scale=0.05):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    state = {
        "cls_token": w(1, 1, DIM, scale=0.5),
        "pos_embed": w(1, 1 + GRID * GRID, DIM, scale=0.5),
        "patch_embed.proj.weight": w(DIM, 3, patch, patch, scale=0.03),
        "patch_embed.proj.bias": w(DIM),
    }
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
                b + "norm2.weight": 1 + w(DIM, scale=0.1),
                b + "norm2.bias": w(DIM),
                b + "mlp.fc1.weight": w(MLP, DIM, scale=0.1),
                b + "mlp.fc1.bias": w(MLP),
                b + "mlp.fc2.weight": w(DIM, MLP, scale=0.1),
                b + "mlp.fc2.bias": w(DIM),
            }
        )
    state["norm.weight"] = 1 + w(DIM, scale=0.1)
    state["norm.bias"] = w(DIM)
    return state


def pixels(height: int, width: int, seed: int = 7) -> np.ndarray:
    """ImageNet-normalised-looking 3×H×W float32 input."""
    rng = np.random.default_rng(seed + height * 1000 + width)
    return rng.standard_normal((3, height, width)).astype(np.float32)
