"""What DINOv3 adds to the ViT: rotary position embeddings, storage tokens, the masked k bias,
and its checkpoint layouts (facebookresearch/dinov3 ``models/vision_transformer.py``,
``layers/rope_position_encoding.py``, ``layers/attention.py``; transformers'
``DINOv3ViTModel``).

Every layout is normalised to the names the rest of :mod:`visiontk.vit` reads (DINOv2's): the
storage tokens become ``register_tokens`` (the same thing: extra tokens after CLS, left out of
the maps), SwiGLU's ``w1``/``w2`` become DINOv2's joined ``mlp.w12``, the masked k bias is
applied once at load (``qkv.bias × bias_mask``), and ``rope_embed.periods`` is kept (or made
from the head count and RoPE base when a Hugging Face file does not store it).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import WeightsError

#: RoPE base of every released DINOv3 ViT (hub ``pos_embed_rope_base``, HF ``rope_theta``).
ROPE_BASE = 100.0
#: LayerNorm eps of DINOv3 ("layernormbf16" in the hub code, HF ``layer_norm_eps``).
LAYER_NORM_EPS = 1e-5
#: Heads of each released DINOv3 ViT by width (S/S+ 384, B 768, L/L+ 1024, H+ 1280, 7B 4096):
#: what a bare Hugging Face safetensors file, which stores no head count, is read with.
HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1280: 20, 4096: 32}
#: Keys only training uses (the 7B's second CLS norm, the untied CLS norm): not read.
TRAINING_ONLY = ("local_cls_norm.", "cls_norm.", "dino_head.", "ibot_head.")

_HF_BLOCK = [
    ("attention.o_proj.", "attn.proj."),
    ("layer_scale1.lambda1", "ls1.gamma"),
    ("layer_scale2.lambda1", "ls2.gamma"),
    ("mlp.gate_proj.", "mlp.w1."),
    ("norm1.", "norm1."),
    ("norm2.", "norm2."),
]


def is_dinov3(state: dict) -> bool:
    """Whether a state dict (prefixes stripped) is a DINOv3 ViT in the hub or HF layout."""
    return (
        "storage_tokens" in state
        or "rope_embed.periods" in state
        or "layer.0.attention.q_proj.weight" in state
    )


def normalise(state: dict, name: str, config: dict | None = None) -> dict:
    """The official-hub-named DINOv3 state dict in the names :mod:`visiontk.vit` reads (see the
    module docstring). ``config``: a Hugging Face ``config.json`` (head count, RoPE base)."""
    if "layer.0.attention.q_proj.weight" in state:
        state = _from_hugging_face(state, name, config or {})
    out = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY)}
    if "storage_tokens" in out:
        out["register_tokens"] = out.pop("storage_tokens")
    blocks = sorted({k.split(".")[1] for k in out if k.startswith("blocks.")})
    for i in blocks:
        pre = f"blocks.{i}."
        _mask_k_bias(out, pre, name)
        if pre + "mlp.w1.weight" in out:  # SwiGLU: silu(w1 x)·(w2 x) is DINOv2's w12 halves
            for part in ("weight", "bias"):
                one, two = (
                    out.pop(f"{pre}mlp.w1.{part}", None),
                    out.pop(f"{pre}mlp.w2.{part}", None),
                )
                if one is None or two is None:
                    if part == "weight":
                        raise WeightsError(f"{name}: {pre}mlp has w1 without w2")
                    continue
                out[f"{pre}mlp.w12.{part}"] = np.concatenate([one, two])
    if "rope_embed.periods" not in out:
        dim = int(np.asarray(out["cls_token"]).size) if "cls_token" in out else 0
        heads = _heads(dim, name, config)
        out["rope_embed.periods"] = rope_periods(dim // heads, _rope_base(name, config))
    return out


def _mask_k_bias(state: dict, pre: str, name: str) -> None:
    """qkv bias × bias_mask, as ``LinearKMaskedBias`` computes it; without a mask the k third
    is zeroed, as every released DINOv3 masks it (``mask_k_bias=True``)."""
    bias, mask = state.get(pre + "attn.qkv.bias"), state.pop(pre + "attn.qkv.bias_mask", None)
    if bias is None:
        return
    bias = np.asarray(bias, np.float32)
    if mask is None:
        mask = np.ones_like(bias)
        third = bias.size // 3
        mask[third : 2 * third] = 0
    mask = np.asarray(mask, np.float32)
    if mask.shape != bias.shape:
        raise WeightsError(
            f"{name}: {pre}attn.qkv.bias_mask has shape {mask.shape}, expected {bias.shape}"
        )
    if np.isnan(mask).any():  # the official code fills an unset mask with NaN
        raise WeightsError(f"{name}: {pre}attn.qkv.bias_mask was never set (NaN)")
    if not np.isin(mask, (0.0, 1.0)).all():
        raise WeightsError(f"{name}: {pre}attn.qkv.bias_mask holds values other than 0 and 1")
    state[pre + "attn.qkv.bias"] = bias * mask


def _rope_base(name: str, config: dict | None) -> float:
    """config.json's rope_theta (a positive number), else the released models' base."""
    base = (config or {}).get("rope_theta", ROPE_BASE)
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not 1 < base < math.inf:
        raise WeightsError(f"{name}: config.json rope_theta {base!r} is not a number above 1")
    return float(base)


def _heads(dim: int, name: str, config: dict | None) -> int:
    if config and "num_attention_heads" in config:
        heads = config["num_attention_heads"]
        bad = isinstance(heads, bool) or not isinstance(heads, int)
        if bad or heads < 1 or dim % (4 * heads):
            raise WeightsError(
                f"{name}: config.json num_attention_heads {heads!r} does not fit {dim}"
            )
        return heads
    if dim not in HEADS_BY_WIDTH:
        raise WeightsError(
            f"{name}: a DINOv3 ViT of width {dim} that does not say its head count "
            f"(released widths: {', '.join(map(str, HEADS_BY_WIDTH))}); put its "
            f"config.json beside it"
        )
    return HEADS_BY_WIDTH[dim]


def rope_periods(head_dim: int, base: float = ROPE_BASE) -> np.ndarray:
    """RoPE periods base^(2j / (head_dim/2)) for j < head_dim/4, as the official code makes its
    ``periods`` buffer (HF: 1 / inv_freq)."""
    j = np.arange(head_dim // 4, dtype=np.float64)
    return (base ** (2 * j / (head_dim // 2))).astype(np.float32)


def rope_tables(periods: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos), each (h·w, head_dim) float32, for an h×w patch grid: patch centres
    ((i + 0.5)/n)·2 − 1 per axis, each axis normalised by its own length ("separate"), angles
    2π·coord/period laid out [y angles, x angles] and tiled twice (rotate-half pairing), with no
    shift, jitter or rescale (those are training only)."""
    ys = (np.arange(h, dtype=np.float64) + 0.5) / h * 2 - 1
    xs = (np.arange(w, dtype=np.float64) + 0.5) / w * 2 - 1
    coords = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    angles = 2 * math.pi * coords[:, :, None] / np.asarray(periods, np.float64)[None, None, :]
    angles = np.tile(angles.reshape(h * w, -1), 2)
    return np.sin(angles).astype(np.float32), np.cos(angles).astype(np.float32)


def rope_apply(x, sin, cos, xp):
    """x·cos + rotate_half(x)·sin over the last axis (rotate_half: [x1, x2] -> [−x2, x1]):
    the official ``rope_apply``, the definition the CPU kernel is checked against."""
    half = x.shape[-1] // 2
    rotated = xp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def rope_patches(x, rope, first: int, xp):
    """``x`` (..., N, head_dim) with its tokens from ``first`` on (the patches) rotated by
    ``rope`` (sin, cos); CLS and the storage tokens are left as they are."""
    rotated = rope_apply(x[..., first:, :], rope[0], rope[1], xp)
    return xp.concatenate([x[..., :first, :], rotated], axis=-2)


def _from_hugging_face(state: dict, name: str, config: dict) -> dict:
    """transformers' ``DINOv3ViTModel`` names -> the hub's (q, k, v joined; the k bias, which
    HF does not store, zero)."""
    out: dict = {}
    for key, value in state.items():
        if key.startswith("layer."):
            index, _, rest = key[len("layer.") :].partition(".")
            if not index.isdigit() or not rest:
                raise WeightsError(f"{name}: unexpected Hugging Face key {key[:60]!r}")
            pre = f"blocks.{index}."
            if rest.startswith("attention.") and rest.split(".")[1] in (
                "q_proj",
                "k_proj",
                "v_proj",
            ):
                continue  # joined below
            for old, new in _HF_BLOCK:
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            else:
                gated = config.get("use_gated_mlp", f"layer.{index}.mlp.gate_proj.weight" in state)
                rest = rest.replace("mlp.up_proj.", "mlp.w2." if gated else "mlp.fc1.")
                rest = rest.replace("mlp.down_proj.", "mlp.w3." if gated else "mlp.fc2.")
            out[pre + rest] = value
        elif key.startswith("embeddings."):
            part = key[len("embeddings.") :]
            part = part.replace("patch_embeddings.", "patch_embed.proj.")
            out["storage_tokens" if part == "register_tokens" else part] = value
        else:
            out[key] = value
    for i in sorted({k.split(".")[1] for k in state if k.startswith("layer.")}):
        base = f"layer.{i}.attention."
        try:
            weights = [state[f"{base}{p}_proj.weight"] for p in "qkv"]
        except KeyError as exc:
            raise WeightsError(f"{name}: Hugging Face layout without {exc.args[0]}") from None
        out[f"blocks.{i}.attn.qkv.weight"] = np.concatenate(weights)
        biases = [
            np.asarray(state.get(f"{base}{p}_proj.bias", np.zeros(len(w), np.float32)))
            for p, w in zip("qkv", weights, strict=True)
        ]
        out[f"blocks.{i}.attn.qkv.bias"] = np.concatenate(biases)  # masked in normalise
    return out


def read_config(folder: Path) -> dict | None:
    """A Hugging Face ``config.json`` in ``folder`` (parsed as JSON: nothing is run), or None."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: not a JSON object")
    return config
