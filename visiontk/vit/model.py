"""The DINO Vision Transformer forward pass, written with the project's array module.

It reproduces the official DINO ViT (facebookresearch/dino ``vision_transformer.py``):
patch embedding, CLS token, positional embeddings interpolated bicubically with the official
scale factors, pre-norm blocks (LayerNorm eps 1e-6, exact-erf GELU, attention scaled by
head_dim^-0.5, qkv laid out (N, 3, heads, head_dim)). Attention is computed in blocks of query
rows (:data:`SCORE_BYTES`), so thousands of tokens (ViT-S/8 at 480², 3601 tokens) need little
memory. DINOv2 (LayerScale, registers, SwiGLU, its two interpolations) is the same code, and
so is DINOv3 (storage tokens, rotary position embeddings on the patches' q and k instead of
learned positions, LayerNorm eps 1e-5; see :mod:`.dinov3`).
"""

from __future__ import annotations

import math

import numpy as np

from .. import devices
from . import dinov3
from .checkpoints import WeightsError, find_weights, pixel_normalisation, read_weights
from .config import ViTConfig, infer_config
from .ops import gelu, layer_norm, softmax, softmax_inplace, split_heads

__all__ = ["ViT", "ViTConfig", "infer_config"]

#: Attention is computed for blocks of query rows whose scores (heads × rows × tokens × 4
#: bytes) fit in this: a block the cache holds between its matmul, softmax and matmul (faster
#: than blocks of a fixed 512 rows; bench/vit_bench.py times the forward pass).
SCORE_BYTES = 8 * 2**20
#: ... but never fewer query rows than this at once.
MIN_ATTENTION_ROWS = 32
BICUBIC_A = -0.75  # PyTorch's bicubic kernel


class ViT:
    """A DINO ViT backbone.

    Example
    -------
    >>> model = ViT.from_weights("dino_deitsmall8_pretrain.pth")  # doctest: +SKIP
    >>> model.last_attention(pixels).shape   # doctest: +SKIP
    (6, H // 8, W // 8)
    """

    def __init__(self, state: dict, xp=np, name: str = "weights", normalisation=None):
        self.xp = xp
        self.name = name
        self.config = infer_config(state, name)
        #: (mean, std) of the pixels the model was trained on; None: ImageNet's
        self.normalisation = normalisation
        self.w = {k: xp.asarray(v) for k, v in state.items()}
        self._score_buffers: dict = {}  # see _scores
        self._rope: dict = {}  # (h, w) -> (sin, cos) of DINOv3's RoPE, see rope

    @classmethod
    def from_weights(
        cls,
        path=None,
        *,
        model: str = "dino_vits8",
        device: str = "auto",
        hint: str = "pass --weights PATH",
    ):
        """Load from a .pth / .safetensors file (official, timm or Hugging Face layout);
        ``path=None`` looks ``model`` up (see :func:`find_weights`; ``hint`` ends its error
        when nothing is found)."""
        from .. import devices

        xp = devices.array_module(devices.resolve_device(device))
        found = find_weights(path, model, hint)
        return cls(read_weights(found), xp, str(found), pixel_normalisation(found))

    # -- pieces of the forward pass ------------------------------------------------------------

    def tokens(self, pixels):
        """Patch embeddings with the CLS token, the registers and the positional embeddings:
        (N, D) for one 3×H×W image, (B, N, D) for a batch B×3×H×W of one size."""
        xp, c = self.xp, self.config
        pixels = xp.asarray(pixels, dtype=xp.float32)
        single = pixels.ndim == 3
        batch = pixels[None] if single else pixels
        if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[0] < 1:
            raise WeightsError(f"pixels must be 3×H×W or B×3×H×W, got shape {tuple(pixels.shape)}")
        n_img, _, height, width = batch.shape
        p = c.patch
        if height % p or width % p or height < p or width < p:
            raise WeightsError(
                f"image {width}×{height} is not a positive multiple of the "
                f"patch size {p}; crop or pad it first"
            )
        h, w = height // p, width // p
        patches = (
            batch.reshape(n_img, 3, h, p, w, p)
            .transpose(0, 2, 4, 1, 3, 5)
            .reshape(n_img, h * w, -1)
        )
        weight = self.w["patch_embed.proj.weight"].reshape(c.dim, -1)
        x = patches @ weight.T + self.w["patch_embed.proj.bias"]
        cls = xp.broadcast_to(self.w["cls_token"].reshape(1, 1, c.dim), (n_img, 1, c.dim))
        x = xp.concatenate([cls, x], axis=1)
        if not c.rope:  # DINOv3's positions are rotations of q and k, in every block
            x = x + self.position_embedding(h, w)
        if c.registers:  # registers go in after the positional embeddings
            reg = xp.broadcast_to(
                self.w["register_tokens"].reshape(1, c.registers, c.dim),
                (n_img, c.registers, c.dim),
            )
            x = xp.concatenate([x[:, :1], reg, x[:, 1:]], axis=1)
        return x[0] if single else x

    def position_embedding(self, h: int, w: int):
        """Positional embeddings for an h×w patch grid, as the official code interpolates them
        (see :attr:`ViTConfig.interpolation`); none when the grid is the trained one."""
        xp, c = self.xp, self.config
        pos = self.w["pos_embed"].reshape(-1, c.dim)
        if h == w == c.grid:
            return pos
        grid = pos[1:].reshape(c.grid, c.grid, c.dim)
        if c.interpolation == "antialias":
            rows, cols = antialias_matrix(c.grid, h), antialias_matrix(c.grid, w)
        else:
            rows = bicubic_matrix(c.grid, (h + 0.1) / c.grid, h)
            cols = bicubic_matrix(c.grid, (w + 0.1) / c.grid, w)
        # rows, then columns, as two matrix products (a three-operand einsum loops instead of
        # calling BLAS)
        along_rows = (xp.asarray(rows) @ grid.reshape(c.grid, -1)).reshape(h, c.grid, c.dim)
        resized = xp.matmul(xp.asarray(cols)[None], along_rows)
        return xp.concatenate([pos[:1], resized.reshape(h * w, c.dim)], axis=0)

    def rope(self, h: int, w: int):
        """DINOv3's (sin, cos) tables for an h×w patch grid on the model's device, or None for
        DINO and DINOv2; kept for the last few grid sizes (a folder has one or two)."""
        if not self.config.rope:
            return None
        if (h, w) not in self._rope:
            if len(self._rope) >= 4:
                self._rope.clear()
            periods = devices.to_host(self.w["rope_embed.periods"])
            tables = dinov3.rope_tables(periods, h, w)
            self._rope[(h, w)] = tuple(self.xp.asarray(t) for t in tables)
        return self._rope[(h, w)]

    def block(self, x, i: int, *, last: bool = False, finish: bool = False, grid=None):
        """Block ``i`` on tokens (N, D), or (B, N, D) for a batch; with ``last``, return (CLS
        attention (heads, N), keys (N, D)) instead (with a batch axis first for a batch), and
        with ``finish`` too, (CLS attention, keys, the block's output). ``grid``: the (h, w)
        patch grid, which DINOv3's rotary positions need. The keys are those before the
        rotation: what the patches hold, not where they are (TokenCut and MaskCut compare
        them)."""
        xp, c, w = self.xp, self.config, self.w
        single = x.ndim == 2
        x = x[None] if single else x
        pre = f"blocks.{i}."
        b, n = x.shape[0], x.shape[1]
        hd = c.dim // c.heads
        if c.rope and grid is None:
            raise WeightsError("a DINOv3 block needs the patch grid (grid=(h, w))")
        rope = self.rope(*grid) if c.rope else None
        y = layer_norm(x, w[pre + "norm1.weight"], w[pre + "norm1.bias"], xp, c.eps)
        if last and not finish:
            cls_attn, keys = self._cls_attention(y, pre, rope)
            return (cls_attn[0], keys[0]) if single else (cls_attn, keys)
        # linear layers on (B·N, D): one large matrix product, not B small ones
        qkv = y.reshape(b * n, c.dim) @ w[pre + "attn.qkv.weight"].T
        q, k_t, v = split_heads(
            qkv.reshape(b, n, -1),
            w[pre + "attn.qkv.bias"],
            c.heads,
            hd**-0.5,
            xp,
            rope=rope,
            first=c.first_patch,
        )
        if last:
            cls_attn = softmax(q[:, :, :1] @ k_t, xp)[:, :, 0]
            if rope is None:
                keys = k_t.transpose(0, 3, 1, 2).reshape(b, n, c.dim)
            else:  # the keys before their rotation
                keys = (
                    (qkv.reshape(b, n, -1)[..., c.dim : 2 * c.dim])
                    + w[pre + "attn.qkv.bias"][c.dim : 2 * c.dim]
                )
            if single:
                cls_attn, keys = cls_attn[0], keys[0]
        out = xp.empty_like(q)
        step = min(n, max(MIN_ATTENTION_ROWS, SCORE_BYTES // (4 * b * c.heads * n)))
        for start in range(0, n, step):
            rows = slice(start, min(start + step, n))
            block = self._scores((b, c.heads, rows.stop - rows.start, n))
            xp.matmul(q[:, :, rows], k_t, out=block)
            softmax_inplace(block, xp)
            xp.matmul(block, v, out=out[:, :, rows])
        y = out.transpose(0, 2, 1, 3).reshape(b * n, c.dim)
        y = y @ w[pre + "attn.proj.weight"].T
        x = self._residual(x, y.reshape(b, n, c.dim), pre + "attn.proj.bias", pre + "ls1.gamma")
        y = layer_norm(x, w[pre + "norm2.weight"], w[pre + "norm2.bias"], xp, c.eps)
        y = y.reshape(b * n, -1)
        if c.swiglu:  # SwiGLU: silu(x1) · x2, x1 and x2 the halves of w12's output
            y = y @ w[pre + "mlp.w12.weight"].T + w[pre + "mlp.w12.bias"]
            half = y.shape[-1] // 2
            x1, x2 = y[..., :half], y[..., half:]
            y = (x1 / (1 + xp.exp(-x1))) * x2
            y, bias = y @ w[pre + "mlp.w3.weight"].T, pre + "mlp.w3.bias"
        else:
            y = gelu(y @ w[pre + "mlp.fc1.weight"].T, xp, bias=w[pre + "mlp.fc1.bias"])
            y, bias = y @ w[pre + "mlp.fc2.weight"].T, pre + "mlp.fc2.bias"
        x = self._residual(x, y.reshape(b, n, c.dim), bias, pre + "ls2.gamma")
        x = x[0] if single else x
        return (cls_attn, keys, x) if last else x

    def _residual(self, x, y, bias: str, gamma: str):
        """x + γ·(y + bias) (γ: DINOv2's LayerScale, else 1), written into ``y``, a branch's
        fresh output: no temporaries."""
        y += self.w[bias]
        if self.config.layer_scale:
            y *= self.w[gamma]
        y += x
        return y

    def _cls_attention(self, y, pre: str, rope=None):
        """The last block's CLS-row attention (B, heads, N) and keys (B, N, D, before any
        rotation) from its normalised input ``y`` (B, N, D): only the keys and one query are
        projected (CLS is never rotated)."""
        xp, c, w = self.xp, self.config, self.w
        b, n, d = y.shape
        hd = d // c.heads
        weight, bias = w[pre + "attn.qkv.weight"], w[pre + "attn.qkv.bias"]
        keys = (y.reshape(b * n, d) @ weight[d : 2 * d].T + bias[d : 2 * d]).reshape(b, n, d)
        query = (y[:, 0] @ weight[:d].T + bias[:d]) * xp.float32(hd**-0.5)
        heads = keys.reshape(b, n, c.heads, hd).transpose(0, 2, 1, 3)
        if rope is not None:
            heads = dinov3.rope_patches(heads, rope, c.first_patch, xp)
        scores = xp.matmul(heads, query.reshape(b, c.heads, hd, 1))[..., 0]
        return softmax(scores, xp), keys

    def _scores(self, shape: tuple):
        """A reused contiguous (B, heads, rows, n) float32 buffer for attention scores:
        allocating it for every block of rows cost more than the softmax (fresh pages fault
        in). Two shapes are kept: the full blocks' and the last, shorter one's. A ViT object is
        meant for one thread at a time."""
        key = tuple(shape)
        buffers = self._score_buffers
        if key not in buffers:
            if len(buffers) >= 2:
                buffers.clear()
            buffers[key] = self.xp.empty(key, self.xp.float32)
        return buffers[key]

    def last_block(self, pixels, *, features: bool = False):
        """(CLS-row attention of the last block (heads, N), its keys (N, D)), N the tokens
        (CLS, registers, patches); with ``features``, also the patch tokens of the last layer
        after the final LayerNorm ((h·w, D): DINOv2's ``x_norm_patchtokens``)."""
        c = self.config
        x = self.tokens(pixels)
        grid = (pixels.shape[-2] // c.patch, pixels.shape[-1] // c.patch)
        for i in range(c.depth - 1):
            x = self.block(x, i, grid=grid)
        if not features:
            return self.block(x, c.depth - 1, last=True, grid=grid)
        attn, keys, x = self.block(x, c.depth - 1, last=True, finish=True, grid=grid)
        normed = layer_norm(
            x[..., c.first_patch :, :], self.w["norm.weight"], self.w["norm.bias"], self.xp, c.eps
        )
        return attn, keys, normed

    def last_attention(self, pixels):
        """Attention of the CLS query in the last block over the patches.

        ``pixels``: 3×H×W float32, ImageNet-normalised, H and W multiples of the patch size
        (or B×3×H×W: a batch of one size, one forward pass; B × heads × … returned).
        Returns heads × (H/P) × (W/P) float32 (the CLS and register columns dropped: registers
        take part in the softmax but are not patches), on the model's device.
        """
        attn, _ = self.last_block(pixels)
        p = self.config.patch
        h, w = pixels.shape[-2] // p, pixels.shape[-1] // p
        maps = attn[..., self.config.first_patch :]
        return maps.reshape(*maps.shape[:-1], h, w).astype(self.xp.float32)


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


def antialias_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Matrix M (size_out × size_in) doing PyTorch's ``interpolate(size=size_out,
    mode="bicubic", antialias=True)`` along one axis (the PIL-style filter: cubic with
    a = −0.5, stretched by the scale when shrinking, cut at the borders and renormalised)."""
    scale = size_in / size_out
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    m = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), size_in)
        weights = np.array([_aa_cubic((j - centre + 0.5) * inv) for j in range(lo, hi)])
        total = weights.sum()
        m[i, lo:hi] = weights / total if total != 0 else weights
    return m.astype(np.float32)


def _aa_cubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0
