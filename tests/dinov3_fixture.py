"""Tiny DINOv3 ViTs (official hub key names) with seeded random weights, and their Hugging Face
layout.

Shared by tests/fixtures/make_dinov3_fixture.py (PyTorch reference of the official forward
pass, cross-checked there against transformers' DINOv3ViTModel; run once, outputs committed)
and tests/vit/test_dinov3.py (rebuilds the same weights without PyTorch). Patch 16, 4 storage
tokens, LayerScale, masked k bias (the stored k bias is not zero, so a reader that forgets the
mask fails), RoPE periods as the official code stores them, depth 2:

- ``v3``: width 128, 2 heads of 64 (ViT-S/B/L's head size), GELU MLP;
- ``v3swiglu``: width 256, 2 heads of 128 (the 7B's head size), SwiGLU (w1, w2, w3);
- ``v3s``: width 384, 6 heads (ViT-S's: what a bare HF safetensors is read as), GELU MLP.
"""

import numpy as np
from dino_fixture import pixels as dino_pixels

PATCH, DEPTH, STORAGE, ROPE_BASE = 16, 2, 4, 100.0
#: name -> (width, heads, MLP hidden width, swiglu)
VARIANTS = {
    "v3": (128, 2, 128, False),
    "v3swiglu": (256, 2, 96, True),
    "v3s": (384, 6, 64, False),
}
#: (height, width): square, non-square both ways, larger; all multiples of 16.
INPUTS = [(64, 64), (48, 80), (96, 64), (112, 144)]


def periods(head_dim: int) -> np.ndarray:
    """The official ``RopePositionEmbedding._init_weights`` (base form), in float32."""
    j = np.arange(head_dim // 4, dtype=np.float32)
    return (np.float32(ROPE_BASE) ** (2 * j / np.float32(head_dim // 2))).astype(np.float32)


def tiny_state(variant: str, seed: int = 0) -> dict:
    dim, heads, hidden, swiglu = VARIANTS[variant]
    rng = np.random.default_rng(seed + dim + swiglu)

    def w(*shape, scale=0.05):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    mask = np.ones(3 * dim, np.float32)
    mask[dim : 2 * dim] = 0
    state = {
        "cls_token": w(1, 1, dim, scale=0.5),
        "storage_tokens": w(1, STORAGE, dim, scale=0.5),
        "mask_token": w(1, dim),
        "patch_embed.proj.weight": w(dim, 3, PATCH, PATCH, scale=0.03),
        "patch_embed.proj.bias": w(dim),
        "rope_embed.periods": periods(dim // heads),
        # training only (the 7B's second CLS norm): present in some files, never read
        "local_cls_norm.weight": 1 + w(dim),
        "local_cls_norm.bias": w(dim),
    }
    for i in range(DEPTH):
        b = f"blocks.{i}."
        state.update(
            {
                b + "norm1.weight": 1 + w(dim, scale=0.1),
                b + "norm1.bias": w(dim),
                b + "attn.qkv.weight": w(3 * dim, dim, scale=0.15),
                b + "attn.qkv.bias": w(3 * dim, scale=0.3),
                b + "attn.qkv.bias_mask": mask,
                b + "attn.proj.weight": w(dim, dim),
                b + "attn.proj.bias": w(dim),
                b + "ls1.gamma": 0.5 + w(dim, scale=0.2),
                b + "norm2.weight": 1 + w(dim, scale=0.1),
                b + "norm2.bias": w(dim),
                b + "ls2.gamma": 0.5 + w(dim, scale=0.2),
            }
        )
        parts = ("w1", "w2", "w3") if swiglu else ("fc1", "fc2")
        for part in parts:
            out_dim, in_dim = (dim, hidden) if part in ("w3", "fc2") else (hidden, dim)
            state[f"{b}mlp.{part}.weight"] = w(out_dim, in_dim, scale=0.1)
            state[f"{b}mlp.{part}.bias"] = w(out_dim)
    state["norm.weight"] = 1 + w(dim, scale=0.1)
    state["norm.bias"] = w(dim)
    return state


#: Hub block names -> transformers' DINOv3ViTLayer names.
_HF_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.proj": "attention.o_proj",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
    "mlp.fc1": "mlp.up_proj",
    "mlp.fc2": "mlp.down_proj",
    "mlp.w1": "mlp.gate_proj",
    "mlp.w2": "mlp.up_proj",
    "mlp.w3": "mlp.down_proj",
}


def hugging_face_layout(state: dict) -> dict:
    """The hub state dict as transformers' conversion stores it: q, k, v apart, no k bias (the
    masked one is zero), storage tokens as register_tokens, no RoPE periods (HF computes
    them), training-only norms dropped."""
    dim = state["cls_token"].shape[-1]
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.mask_token": state["mask_token"].reshape(1, 1, dim),
        "embeddings.register_tokens": state["storage_tokens"],
        "embeddings.patch_embeddings.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.bias": state["patch_embed.proj.bias"],
        "norm.weight": state["norm.weight"],
        "norm.bias": state["norm.bias"],
    }
    for key, value in state.items():
        if not key.startswith("blocks."):
            continue
        _, i, rest = key.split(".", 2)
        layer = f"layer.{i}."
        if rest == "attn.qkv.weight":
            for j, name in enumerate("qkv"):
                out[f"{layer}attention.{name}_proj.weight"] = value[j * dim : (j + 1) * dim]
        elif rest == "attn.qkv.bias":
            out[f"{layer}attention.q_proj.bias"] = value[:dim]
            out[f"{layer}attention.v_proj.bias"] = value[2 * dim :]
        elif rest != "attn.qkv.bias_mask":
            name, _, part = rest.rpartition(".") if not rest.endswith("gamma") else (rest, "", "")
            out[layer + _HF_BLOCK[name] + (f".{part}" if part else "")] = value
    return out


def hugging_face_config(variant: str) -> dict:
    """transformers' DINOv3ViTConfig fields for a variant (what config.json holds)."""
    dim, heads, hidden, swiglu = VARIANTS[variant]
    return {
        "model_type": "dinov3_vit",
        "architectures": ["DINOv3ViTModel"],
        "hidden_size": dim,
        "num_attention_heads": heads,
        "num_hidden_layers": DEPTH,
        "intermediate_size": hidden,
        "patch_size": PATCH,
        "num_register_tokens": STORAGE,
        "rope_theta": ROPE_BASE,
        "layer_norm_eps": 1e-5,
        "use_gated_mlp": swiglu,
        "hidden_act": "silu" if swiglu else "gelu",
        "key_bias": False,
        "layerscale_value": 1.0,
    }


def pixels(height: int, width: int, seed: int = 13) -> np.ndarray:
    """As dino_fixture's inputs, from another seed."""
    return dino_pixels(height, width, seed)
