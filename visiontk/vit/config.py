"""A ViT's architecture, read from its weights: :class:`ViTConfig` and :func:`infer_config`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import WeightsError
from . import dinov3
from .ops import LAYER_NORM_EPS


@dataclass(frozen=True)
class ViTConfig:
    patch: int
    dim: int
    heads: int
    depth: int
    grid: int  # side of the positional-embedding grid the model was trained at (0: RoPE)
    registers: int = 0  # DINOv2 registers, DINOv3 storage tokens (after CLS, no positions)
    layer_scale: bool = False  # DINOv2: x + γ·branch(x)
    swiglu: bool = False  # DINOv2 giant's and DINOv3's larger MLPs (mlp.w12, mlp.w3)
    rope: bool = False  # DINOv3: rotary positions (rope_embed.periods), no pos_embed
    eps: float = LAYER_NORM_EPS  # LayerNorm eps: 1e-6 (DINO, DINOv2), 1e-5 (DINOv3)

    @property
    def interpolation(self) -> str:
        """How positional embeddings are resized: "offset" (DINO and DINOv2 without registers:
        bicubic with scale factors (n + 0.1)/grid) or "antialias" (DINOv2 with registers:
        bicubic to the target size with PyTorch's antialias filter)."""
        return "antialias" if self.registers else "offset"

    @property
    def first_patch(self) -> int:
        """Index of the first patch token: after CLS and the registers."""
        return 1 + self.registers

    @property
    def family(self) -> str:
        """ "dinov3" (RoPE), "dinov2" (LayerScale) or "dino"."""
        return "dinov3" if self.rope else "dinov2" if self.layer_scale else "dino"

    @property
    def name(self) -> str:
        size = {384: "S", 768: "B", 1024: "L", 1280: "H", 1536: "g", 4096: "7B"}.get(
            self.dim, f"D{self.dim}"
        )
        extra = f"+{self.registers} registers" if self.registers and not self.rope else ""
        return f"{self.family} ViT-{size}/{self.patch}{extra}"


def infer_config(state: dict, name: str = "weights") -> ViTConfig:
    """Patch size, width, depth, heads and training grid from the weights' shapes, after
    checking that every array the forward pass reads is present with the shape it expects."""
    proj = state["patch_embed.proj.weight"]
    if (
        proj.ndim != 4
        or proj.shape[1] != 3
        or proj.shape[2] != proj.shape[3]
        or min(proj.shape) < 1
    ):
        raise WeightsError(
            f"{name}: patch_embed.proj.weight has shape {proj.shape}, expected (D, 3, P, P)"
        )
    dim, _, patch, _ = (int(v) for v in proj.shape)
    rope = "rope_embed.periods" in state
    grid = 0 if rope else _position_grid(state["pos_embed"], dim, name)
    blocks = {k.split(".")[1] for k in state if k.startswith("blocks.")}
    if not all(b.isdigit() for b in blocks):
        raise WeightsError(f"{name}: block names {sorted(blocks)[:3]} are not numbers")
    depth = len(blocks)
    if depth == 0:
        raise WeightsError(f"{name}: no transformer blocks (blocks.0...)")
    if {int(b) for b in blocks} != set(range(depth)):
        raise WeightsError(f"{name}: blocks are not numbered 0..{depth - 1}")
    # DINO's ViTs all use 64-dimensional heads (ViT-S: 6 heads, ViT-B: 12); smaller test models
    # declare theirs in an optional "num_heads" entry.
    heads = max(1, dim // 64)
    if rope:  # DINOv3 stores head_dim/4 RoPE periods: the head count follows
        periods = state["rope_embed.periods"].reshape(-1)
        if periods.size < 1 or dim % (4 * periods.size) or not (periods > 0).all():
            raise WeightsError(
                f"{name}: rope_embed.periods holds {periods.size} values: not a quarter of "
                f"a head dimension that divides the width {dim}, or not positive"
            )
        heads = dim // (4 * periods.size)
    if "num_heads" in state:
        value = state["num_heads"]
        if value.size != 1 or value.reshape(-1)[0] != int(value.reshape(-1)[0]):
            raise WeightsError(f"{name}: num_heads is not one integer")
        heads = int(value.reshape(-1)[0])
    if heads < 1 or dim % heads or (rope and (dim // heads) % 4):
        raise WeightsError(f"{name}: {heads} heads do not divide the width {dim}")
    swiglu = "blocks.0.mlp.w12.weight" in state
    layer_scale = "blocks.0.ls1.gamma" in state
    registers = 0
    if "register_tokens" in state:
        tokens = state["register_tokens"]
        registers = tokens.shape[-2] if tokens.ndim >= 2 else 0
        label = "storage_tokens" if rope else "register_tokens"  # the name in the user's file
        if tokens.ndim not in (2, 3) or tokens.shape[-1] != dim or tokens.size != registers * dim:
            raise WeightsError(
                f"{name}: {label} has shape {tokens.shape}, expected (1, R, {dim}) with R >= 1"
            )
        if registers < 1:
            raise WeightsError(f"{name}: {label} hold no tokens (shape {tokens.shape})")
    first = "blocks.0.mlp.w12.weight" if swiglu else "blocks.0.mlp.fc1.weight"
    hidden = state[first].shape[0] if first in state else 0
    expected: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.bias": (dim,),
        "cls_token": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    for i in range(depth):
        pre = f"blocks.{i}."
        expected.update(
            {
                pre + "norm1.weight": (dim,),
                pre + "norm1.bias": (dim,),
                pre + "norm2.weight": (dim,),
                pre + "norm2.bias": (dim,),
                pre + "attn.qkv.weight": (3 * dim, dim),
                pre + "attn.qkv.bias": (3 * dim,),
                pre + "attn.proj.weight": (dim, dim),
                pre + "attn.proj.bias": (dim,),
            }
        )
        if swiglu:  # w12 makes both halves (2·hidden), w3 reads one
            expected.update(
                {
                    pre + "mlp.w12.weight": (hidden, dim),
                    pre + "mlp.w12.bias": (hidden,),
                    pre + "mlp.w3.weight": (dim, hidden // 2),
                    pre + "mlp.w3.bias": (dim,),
                }
            )
        else:
            expected.update(
                {
                    pre + "mlp.fc1.weight": (hidden, dim),
                    pre + "mlp.fc1.bias": (hidden,),
                    pre + "mlp.fc2.weight": (dim, hidden),
                    pre + "mlp.fc2.bias": (dim,),
                }
            )
        if layer_scale:
            expected.update({pre + "ls1.gamma": (dim,), pre + "ls2.gamma": (dim,)})
    for key, shape in expected.items():
        if key not in state:
            raise WeightsError(f"{name}: {key} is missing")
        got = state[key].shape
        # cls_token is stored (1, 1, D) officially; any shape with the right element count
        if (got if len(shape) > 1 else (int(np.prod(got)),)) != shape:
            raise WeightsError(f"{name}: {key} has shape {got}, expected {shape}")
    if hidden < 1 or (swiglu and hidden % 2):
        raise WeightsError(f"{name}: {first} has {hidden} rows")
    return ViTConfig(
        patch=patch,
        dim=dim,
        heads=heads,
        depth=depth,
        grid=grid,
        registers=registers,
        layer_scale=layer_scale,
        swiglu=swiglu,
        rope=rope,
        eps=dinov3.LAYER_NORM_EPS if rope else LAYER_NORM_EPS,
    )


def _position_grid(pos_embed: np.ndarray, dim: int, name: str) -> int:
    """Side of the square patch grid of DINO's and DINOv2's learned positional embeddings."""
    tokens = pos_embed.size // dim - 1
    grid = int(round(math.sqrt(max(tokens, 0))))
    if pos_embed.size != (tokens + 1) * dim or tokens < 1 or grid * grid != tokens:
        raise WeightsError(
            f"{name}: pos_embed has shape {pos_embed.shape}: not "
            f"1 + a square grid of patches of width {dim}"
        )
    return grid
