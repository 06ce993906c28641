"""DINOv3 ViT-S/16 on the CPU: visiontk (numpy) against transformers' DINOv3ViTModel (eager and
SDPA), 2 threads each, in the same run.

    pip install torch==2.13.0 "transformers>=4.56"   # the anchors
    python bench/dinov3_bench.py [--simd avx2] [--docs]

Random weights in the ViT-S/16 shapes (D 384, 6 heads, 12 blocks, MLP 1536, 4 storage tokens,
RoPE) in the Hugging Face layout, read by both. Two jobs, each timed as the
median of 5 runs after a warm-up:

- **maps**: the last block's CLS attention. visiontk: ``last_attention`` (the last block
  projects one query); transformers: eager attention with ``output_attentions`` (SDPA returns
  no attention weights).
- **features**: every block and the final norm (DINOv3's ``x_norm_patchtokens``).
  visiontk: ``last_block(features=True)``; transformers: eager and SDPA forward passes.

The ratio column divides visiontk's time by torch's fastest for that job; the Δ columns are the
largest differences from transformers' eager outputs.
"""

from __future__ import annotations

import numpy as np
from doc_tables import add_docs_flag, markdown_table, parse_args, publish
from vit_bench import median_time

from visiontk.vit import ViT
from visiontk.vit.checkpoints import normalise_state_dict

DIM, HEADS, DEPTH, MLP, STORAGE, PATCH = 384, 6, 12, 1536, 4, 16
SIZES = (224, 512, 768)


def hugging_face_state(seed: int = 0) -> dict:
    """ViT-S/16 DINOv3 weights in transformers' names (q, k, v apart; no k bias)."""
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.02):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    state = {
        "embeddings.cls_token": w(1, 1, DIM),
        "embeddings.mask_token": w(1, 1, DIM),
        "embeddings.register_tokens": w(1, STORAGE, DIM),
        "embeddings.patch_embeddings.weight": w(DIM, 3, PATCH, PATCH),
        "embeddings.patch_embeddings.bias": w(DIM),
        "norm.weight": 1 + w(DIM),
        "norm.bias": w(DIM),
    }
    for i in range(DEPTH):
        b = f"layer.{i}."
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
            state[f"{b}attention.{part}.weight"] = w(DIM, DIM, scale=0.06)
            if part != "k_proj":
                state[f"{b}attention.{part}.bias"] = w(DIM)
        state.update(
            {
                b + "norm1.weight": 1 + w(DIM),
                b + "norm1.bias": w(DIM),
                b + "norm2.weight": 1 + w(DIM),
                b + "norm2.bias": w(DIM),
                b + "layer_scale1.lambda1": 0.5 + w(DIM),
                b + "layer_scale2.lambda1": 0.5 + w(DIM),
                b + "mlp.up_proj.weight": w(MLP, DIM),
                b + "mlp.up_proj.bias": w(MLP),
                b + "mlp.down_proj.weight": w(DIM, MLP),
                b + "mlp.down_proj.bias": w(DIM),
            }
        )
    return state


def transformers_models(state: dict):
    """{"eager": model, "sdpa": model} with ``state`` loaded, or {} without transformers."""
    try:
        import torch
        from transformers import DINOv3ViTConfig, DINOv3ViTModel
    except ImportError:
        return {}
    models = {}
    for kind in ("eager", "sdpa"):
        config = DINOv3ViTConfig(
            hidden_size=DIM,
            num_attention_heads=HEADS,
            num_hidden_layers=DEPTH,
            intermediate_size=MLP,
            patch_size=PATCH,
            num_register_tokens=STORAGE,
            attn_implementation=kind,
        )
        model = DINOv3ViTModel(config).eval()
        own = model.state_dict()
        tensors = {}
        for key, value in state.items():
            target = key if key in own else f"model.{key}"
            tensors[target] = torch.from_numpy(value).reshape(own[target].shape)
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        assert not unexpected and all("inv_freq" in k for k in missing), (missing, unexpected)
        models[kind] = model
    return models


def warm_median_time(fn, repeats=5):
    fn()  # warm-up: numba's compiled kernels, torch's first-call allocations
    return median_time(fn, repeats)


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_docs_flag(parser, "dinov3_bench")
    args = parse_args(parser)
    state = hugging_face_state()
    ours = ViT(normalise_state_dict(state, "ViT-S/16 (Hugging Face names)"))
    theirs = transformers_models(state)
    if theirs:
        import torch

        torch.set_num_threads(2)
    rows = []
    for size in SIZES:
        pixels = np.random.default_rng(size).standard_normal((3, size, size)).astype(np.float32)
        tokens = 1 + STORAGE + (size // PATCH) ** 2
        maps = ours.last_attention(pixels)
        feats = ours.last_block(pixels, features=True)[2]
        t_maps = warm_median_time(lambda p=pixels: ours.last_attention(p))
        t_feats = warm_median_time(lambda p=pixels: ours.last_block(p, features=True))
        cells = ["not installed"] * 3 + ["–"] * 4
        if theirs:
            x = torch.from_numpy(pixels)[None]

            def run(kind, attentions, x=x):
                with torch.no_grad():
                    return theirs[kind](x, output_attentions=attentions)

            out = run("eager", True)
            ref_maps = out.attentions[-1][0, :, 0, 1 + STORAGE :].numpy()
            ref_feats = out.last_hidden_state[0, 1 + STORAGE :].numpy()
            t_eager_maps = warm_median_time(lambda: run("eager", True))
            t_eager = warm_median_time(lambda: run("eager", False))
            t_sdpa = warm_median_time(lambda: run("sdpa", False))
            cells = [
                f"{t_eager_maps:.3f}",
                f"{t_eager:.3f}",
                f"{t_sdpa:.3f}",
                f"{t_maps / t_eager_maps:.2f}×",
                f"{t_feats / min(t_eager, t_sdpa):.2f}×",
                f"{np.abs(maps.reshape(ref_maps.shape) - ref_maps).max():.1e}",
                f"{np.abs(feats - ref_feats).max():.1e}",
            ]
        rows.append([f"{size}²", tokens, f"{t_maps:.3f}", f"{t_feats:.3f}", *cells])
        print(" | ".join(map(str, rows[-1])), flush=True)
    text = markdown_table(
        [
            "image",
            "tokens",
            "visiontk maps (s)",
            "visiontk features (s)",
            "HF eager maps (s)",
            "HF eager features (s)",
            "HF SDPA features (s)",
            "maps: visiontk/torch",
            "features: visiontk/fastest torch",
            "Δ maps",
            "Δ features",
        ],
        rows,
    )
    print(text)
    if args.docs:
        publish("dinov3_bench", text, command="python bench/dinov3_bench.py --docs")


if __name__ == "__main__":
    main()
