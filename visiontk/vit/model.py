"""The DINO Vision Transformer forward pass, written with the project's array module.

It reproduces the official DINO ViT (facebookresearch/dino ``vision_transformer.py``):
patch embedding, CLS token, positional embeddings interpolated bicubically with the official
scale factors, pre-norm blocks (LayerNorm eps 1e-6, exact-erf GELU, attention scaled by
head_dim^-0.5, qkv laid out (N, 3, heads, head_dim)). Attention is computed in blocks of query
rows, so thousands of tokens (ViT-S/8 at 480², 3601 tokens) fit in a few hundred MB.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from .checkpoints import WeightsError, find_weights, read_weights

LAYER_NORM_EPS = 1e-6  # official DINO (Hugging Face's config says 1e-12)
#: Query rows per attention block: memory ≈ heads × rows × tokens × 4 bytes.
ATTENTION_ROWS = 512
BICUBIC_A = -0.75  # PyTorch's bicubic kernel


@dataclass(frozen=True)
class ViTConfig:
    patch: int
    dim: int
    heads: int
    depth: int
    grid: int  # side of the positional-embedding grid the model was trained at

    @property
    def name(self) -> str:
        size = {384: "S", 768: "B"}.get(self.dim, f"D{self.dim}")
        return f"ViT-{size}/{self.patch}"


class ViT:
    """A DINO ViT backbone.

    Example
    -------
    >>> model = ViT.from_weights("dino_deitsmall8_pretrain.pth")  # doctest: +SKIP
    >>> model.last_attention(pixels).shape   # doctest: +SKIP
    (6, H // 8, W // 8)
    """

    def __init__(self, state: dict, xp=np, name: str = "weights"):
        self.xp = xp
        self.config = infer_config(state, name)
        self.w = {k: xp.asarray(v) for k, v in state.items()}

    @classmethod
    def from_weights(cls, path=None, *, model: str = "dino_vits8", device: str = "auto",
                     hint: str = "pass --weights PATH"):
        """Load from a .pth / .safetensors file (official, timm or Hugging Face layout);
        ``path=None`` looks ``model`` up (see :func:`find_weights`; ``hint`` ends its error
        when nothing is found)."""
        from .. import backend

        xp = backend.array_module(backend.resolve_device(device))
        found = find_weights(path, model, hint)
        return cls(read_weights(found), xp, str(found))

    # -- pieces of the forward pass ------------------------------------------------------------

    def tokens(self, pixels):
        """Patch embeddings with the CLS token and positional embeddings: (1 + h·w, D)."""
        xp, c = self.xp, self.config
        pixels = xp.asarray(pixels, dtype=xp.float32)
        if pixels.ndim != 3 or pixels.shape[0] != 3:
            raise WeightsError(f"pixels must be 3×H×W, got shape {tuple(pixels.shape)}")
        _, height, width = pixels.shape
        p = c.patch
        if height % p or width % p or height < p or width < p:
            raise WeightsError(f"image {width}×{height} is not a positive multiple of the "
                               f"patch size {p}; crop or pad it first")
        h, w = height // p, width // p
        patches = pixels.reshape(3, h, p, w, p).transpose(1, 3, 0, 2, 4).reshape(h * w, -1)
        weight = self.w["patch_embed.proj.weight"].reshape(c.dim, -1)
        x = patches @ weight.T + self.w["patch_embed.proj.bias"]
        x = xp.concatenate([self.w["cls_token"].reshape(1, c.dim), x], axis=0)
        return x + self.position_embedding(h, w)

    def position_embedding(self, h: int, w: int):
        """Positional embeddings for an h×w patch grid, as the official code interpolates them:
        PyTorch bicubic with scale factors ((h + 0.1)/√N, (w + 0.1)/√N)."""
        xp, c = self.xp, self.config
        pos = self.w["pos_embed"].reshape(-1, c.dim)
        if h == w == c.grid:
            return pos
        grid = pos[1:].reshape(c.grid, c.grid, c.dim)
        rows = bicubic_matrix(c.grid, (h + 0.1) / c.grid, h)
        cols = bicubic_matrix(c.grid, (w + 0.1) / c.grid, w)
        resized = xp.einsum("ij,jkd,lk->ild", xp.asarray(rows), grid, xp.asarray(cols))
        return xp.concatenate([pos[:1], resized.reshape(h * w, c.dim)], axis=0)

    def block(self, x, i: int, *, last: bool = False):
        """Block ``i``; with ``last``, return (CLS attention (heads, N), keys (N, D)) instead."""
        xp, c, w = self.xp, self.config, self.w
        pre = f"blocks.{i}."
        y = layer_norm(x, w[pre + "norm1.weight"], w[pre + "norm1.bias"], xp)
        qkv = (y @ w[pre + "attn.qkv.weight"].T + w[pre + "attn.qkv.bias"])
        n = x.shape[0]
        hd = c.dim // c.heads
        # (3, heads, N, hd), made contiguous: batched matmul on strided views is far slower
        qkv = xp.ascontiguousarray(qkv.reshape(n, 3, c.heads, hd).transpose(1, 2, 0, 3))
        q, k, v = qkv[0] * (hd ** -0.5), qkv[1], qkv[2]
        k_t = xp.ascontiguousarray(k.transpose(0, 2, 1))
        if last:
            cls_attn = softmax(q[:, :1] @ k_t, xp)[:, 0]
            return cls_attn, k.transpose(1, 0, 2).reshape(n, c.dim)
        out = xp.empty_like(q)
        for start in range(0, n, ATTENTION_ROWS):
            rows = slice(start, min(start + ATTENTION_ROWS, n))
            out[:, rows] = softmax(q[:, rows] @ k_t, xp) @ v
        y = out.transpose(1, 0, 2).reshape(n, c.dim)
        x = x + (y @ w[pre + "attn.proj.weight"].T + w[pre + "attn.proj.bias"])
        y = layer_norm(x, w[pre + "norm2.weight"], w[pre + "norm2.bias"], xp)
        y = gelu(y @ w[pre + "mlp.fc1.weight"].T + w[pre + "mlp.fc1.bias"], xp)
        return x + (y @ w[pre + "mlp.fc2.weight"].T + w[pre + "mlp.fc2.bias"])

    def last_block(self, pixels):
        """(CLS-row attention of the last block (heads, 1 + h·w), its keys (1 + h·w, D))."""
        x = self.tokens(pixels)
        for i in range(self.config.depth - 1):
            x = self.block(x, i)
        return self.block(x, self.config.depth - 1, last=True)

    def last_attention(self, pixels):
        """Attention of the CLS query in the last block over the patches.

        ``pixels``: 3×H×W float32, ImageNet-normalised, H and W multiples of the patch size.
        Returns heads × (H/P) × (W/P) float32 (the CLS column dropped), on the model's device.
        """
        attn, _ = self.last_block(pixels)
        p = self.config.patch
        h, w = pixels.shape[1] // p, pixels.shape[2] // p
        return attn[:, 1:].reshape(-1, h, w).astype(self.xp.float32)


def infer_config(state: dict, name: str = "weights") -> ViTConfig:
    """Patch size, width, depth, heads and training grid from the weights' shapes, after
    checking that every array the forward pass reads is present with the shape it expects."""
    proj = state["patch_embed.proj.weight"]
    if proj.ndim != 4 or proj.shape[1] != 3 or proj.shape[2] != proj.shape[3] or \
            min(proj.shape) < 1:
        raise WeightsError(f"{name}: patch_embed.proj.weight has shape {proj.shape}, expected "
                           "(D, 3, P, P)")
    dim, _, patch, _ = (int(v) for v in proj.shape)
    tokens = state["pos_embed"].size // dim - 1
    grid = int(round(math.sqrt(max(tokens, 0))))
    if state["pos_embed"].size != (tokens + 1) * dim or tokens < 1 or grid * grid != tokens:
        raise WeightsError(f"{name}: pos_embed has shape {state['pos_embed'].shape}: not "
                           f"1 + a square grid of patches of width {dim}")
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
    if "num_heads" in state:
        value = state["num_heads"]
        if value.size != 1 or value.reshape(-1)[0] != int(value.reshape(-1)[0]):
            raise WeightsError(f"{name}: num_heads is not one integer")
        heads = int(value.reshape(-1)[0])
    if heads < 1 or dim % heads:
        raise WeightsError(f"{name}: {heads} heads do not divide the width {dim}")
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in state \
        else 0
    expected = {"patch_embed.proj.bias": (dim,), "cls_token": (dim,), "norm.weight": (dim,),
                "norm.bias": (dim,)}
    for i in range(depth):
        pre = f"blocks.{i}."
        expected.update({
            pre + "norm1.weight": (dim,), pre + "norm1.bias": (dim,),
            pre + "norm2.weight": (dim,), pre + "norm2.bias": (dim,),
            pre + "attn.qkv.weight": (3 * dim, dim), pre + "attn.qkv.bias": (3 * dim,),
            pre + "attn.proj.weight": (dim, dim), pre + "attn.proj.bias": (dim,),
            pre + "mlp.fc1.weight": (hidden, dim), pre + "mlp.fc1.bias": (hidden,),
            pre + "mlp.fc2.weight": (dim, hidden), pre + "mlp.fc2.bias": (dim,)})
    for key, shape in expected.items():
        if key not in state:
            raise WeightsError(f"{name}: {key} is missing")
        got = state[key].shape
        # cls_token is stored (1, 1, D) officially; any shape with the right element count
        if (got if len(shape) > 1 else (int(np.prod(got)),)) != shape:
            raise WeightsError(f"{name}: {key} has shape {got}, expected {shape}")
    if hidden < 1:
        raise WeightsError(f"{name}: blocks.0.mlp.fc1.weight has no rows")
    return ViTConfig(patch=patch, dim=dim, heads=heads, depth=depth, grid=grid)


def layer_norm(x, weight, bias, xp):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / xp.sqrt(var + LAYER_NORM_EPS) * weight + bias


def softmax(x, xp):
    x = x - x.max(axis=-1, keepdims=True)
    e = xp.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def gelu(x, xp):
    """Exact GELU: x · Φ(x) with the error function (not the tanh approximation); compiled
    on the CPU when numba is present."""
    if xp is np and x.dtype == np.float32 and os.environ.get("VISIONTK_KERNELS") != "xp":
        try:
            from ._cpu_kernels import gelu as compiled
        except ImportError:
            compiled = None
        if compiled is not None:
            return compiled(x)
    return gelu_definition(x, xp)


def gelu_definition(x, xp):
    if xp is np:
        from scipy.special import erf
    else:
        from cupyx.scipy.special import erf
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)).astype(x.dtype))


def bicubic_matrix(size_in: int, scale: float, size_out: int) -> np.ndarray:
    """Matrix M (size_out × size_in) doing PyTorch's bicubic resize along one axis with
    ``scale_factor``: source = (dst + 0.5) / scale − 0.5, A = −0.75, edges clamped."""
    m = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        src = (i + 0.5) / scale - 0.5
        base = math.floor(src)
        t = src - base
        weights = _cubic_weights(t)
        for offset, weight in zip(range(-1, 3), weights, strict=True):
            m[i, min(max(base + offset, 0), size_in - 1)] += weight
    return m.astype(np.float32)


def _cubic_weights(t: float) -> list[float]:
    a = BICUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]
