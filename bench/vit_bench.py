"""ViT-S/8, ViT-S/16 and ViT-S/14 last-block attention: visiontk (numpy) against PyTorch on the CPU.

    python bench/vit_bench.py          # torch optional: without it only visiontk is timed

Random weights in the official DINO ViT-S shapes (D 384, 6 heads, 12 blocks, MLP 1536); the
same weights and input go through both, and their attention maps are compared. Times are medians
of 5 runs; peak memory of visiontk's forward pass is traced (numpy allocations).
"""

from __future__ import annotations

import statistics
import time
import tracemalloc

import numpy as np
from doc_tables import add_docs_flag, markdown_table, parse_args, publish

from visiontk.vit import ViT

DIM, HEADS, DEPTH, MLP = 384, 6, 12, 1536


def vit_s_state(patch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    grid = 224 // patch

    def w(*shape, scale=0.02):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    state = {
        "cls_token": w(1, 1, DIM),
        "pos_embed": w(1, 1 + grid * grid, DIM),
        "patch_embed.proj.weight": w(DIM, 3, patch, patch),
        "patch_embed.proj.bias": w(DIM),
        "norm.weight": 1 + w(DIM),
        "norm.bias": w(DIM),
    }
    for i in range(DEPTH):
        b = f"blocks.{i}."
        state.update(
            {
                b + "norm1.weight": 1 + w(DIM),
                b + "norm1.bias": w(DIM),
                b + "attn.qkv.weight": w(3 * DIM, DIM, scale=0.06),
                b + "attn.qkv.bias": w(3 * DIM),
                b + "attn.proj.weight": w(DIM, DIM),
                b + "attn.proj.bias": w(DIM),
                b + "norm2.weight": 1 + w(DIM),
                b + "norm2.bias": w(DIM),
                b + "mlp.fc1.weight": w(MLP, DIM),
                b + "mlp.fc1.bias": w(MLP),
                b + "mlp.fc2.weight": w(DIM, MLP),
                b + "mlp.fc2.bias": w(DIM),
            }
        )
    return state


def torch_last_attention(state: dict, pixels: np.ndarray, patch: int):
    """The official forward pass (facebookresearch/dino) in PyTorch, for timing and parity."""
    import torch

    s = {k: torch.from_numpy(v) for k, v in state.items()}
    return torch_forward(s, torch.from_numpy(pixels)[None], patch)[0].numpy()


def torch_forward(s: dict, x, patch: int):
    """The official forward pass on torch tensors (weights ``s``, a B×3×H×W batch ``x``, on
    any device): B × heads × patches, the last block's CLS attention."""
    import math

    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        b, _, h_img, w_img = x.shape
        x = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=patch)
        x = torch.cat([s["cls_token"].expand(b, 1, DIM), x.flatten(2).transpose(1, 2)], dim=1)
        n = s["pos_embed"].shape[1] - 1
        if x.shape[1] - 1 == n and h_img == w_img:
            pos = s["pos_embed"]
        else:
            g = int(math.sqrt(n))
            grid = F.interpolate(
                s["pos_embed"][:, 1:].reshape(1, g, g, DIM).permute(0, 3, 1, 2),
                scale_factor=((h_img // patch + 0.1) / g, (w_img // patch + 0.1) / g),
                mode="bicubic",
            )
            pos = torch.cat(
                [s["pos_embed"][:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, DIM)], dim=1
            )
        x = x + pos
        for i in range(DEPTH):
            pre = f"blocks.{i}."
            y = F.layer_norm(x, (DIM,), s[pre + "norm1.weight"], s[pre + "norm1.bias"], eps=1e-6)
            qkv = F.linear(y, s[pre + "attn.qkv.weight"], s[pre + "attn.qkv.bias"])
            qkv = qkv.reshape(b, x.shape[1], 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = ((q @ k.transpose(-2, -1)) * (DIM // HEADS) ** -0.5).softmax(dim=-1)
            if i == DEPTH - 1:
                return attn[:, :, 0, 1:]
            y = (attn @ v).transpose(1, 2).reshape(b, x.shape[1], DIM)
            x = x + F.linear(y, s[pre + "attn.proj.weight"], s[pre + "attn.proj.bias"])
            y = F.layer_norm(x, (DIM,), s[pre + "norm2.weight"], s[pre + "norm2.bias"], eps=1e-6)
            y = F.gelu(F.linear(y, s[pre + "mlp.fc1.weight"], s[pre + "mlp.fc1.bias"]))
            x = x + F.linear(y, s[pre + "mlp.fc2.weight"], s[pre + "mlp.fc2.bias"])


def median_time(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_docs_flag(parser, "vit_bench")
    args = parse_args(parser)
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        torch = None
    rows = []
    for patch, sizes in ((16, (224, 480)), (8, (224, 480)), (14, (518,))):
        state = vit_s_state(patch)
        model = ViT(state)
        for size in sizes:
            pixels = np.random.default_rng(size).standard_normal((3, size, size)).astype(np.float32)
            tracemalloc.start()
            ours = model.last_attention(pixels)
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            t_ours = median_time(lambda m=model, p=pixels: m.last_attention(p))
            if torch is not None:
                ref = torch_last_attention(state, pixels, patch)
                t_ref = median_time(
                    lambda s=state, p=pixels, q=patch: torch_last_attention(s, p, q)
                )
                delta = float(np.abs(ours.reshape(ref.shape) - ref).max())
                cells = [f"{t_ref:.3f}", f"{t_ours / t_ref:.2f}×", f"{delta:.1e}"]
            else:
                cells = ["not installed", "–", "–"]
            tokens = 1 + (size // patch) ** 2
            rows.append(
                [f"ViT-S/{patch}", f"{size}²", tokens, f"{t_ours:.3f}", *cells, f"{peak:.0f}"]
            )
            print(" | ".join(map(str, rows[-1])), flush=True)
    text = markdown_table(
        [
            "model",
            "image",
            "tokens",
            "visiontk (s)",
            "torch CPU (s)",
            "visiontk/torch",
            "max abs Δ attention",
            "visiontk peak MB",
        ],
        rows,
    )
    print(text)
    if args.docs:
        publish("vit_bench", text, command="python bench/vit_bench.py --docs")


if __name__ == "__main__":
    main()
