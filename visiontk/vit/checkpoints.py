"""Reading ViT weights without PyTorch and without running anyone's code.

``.pth`` (PyTorch zip checkpoints) and ``.safetensors`` files are read by
:mod:`visiontk.tensorfiles`, which refuses any pickle global but the few a state dict needs,
checks every tensor against its storage before making a view, and bounds the memory a file can
make it use (its docstring lists the guarantees and limits).

Key layouts (official DINO, DINOv2 and timm, or Hugging Face ``ViTModel``, ``Dinov2Model``
and ``Dinov2WithRegistersModel``) are normalised to the official names; see
:func:`normalise_state_dict`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from ..tensorfiles import read_pth, read_safetensors, real_float32


def read_weights(path) -> dict:
    """Official-layout state dict of float32 arrays from a .pth or .safetensors file."""
    path = Path(path)  # each reader checks it is a regular file
    raw = read_safetensors(path) if path.suffix == ".safetensors" else read_pth(path)
    return normalise_state_dict(raw, str(path))


_HF_NAMES = [
    ("embeddings.cls_token", "cls_token"),
    ("embeddings.register_tokens", "register_tokens"),
    ("embeddings.mask_token", "mask_token"),
    ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.patch_embeddings.projection.", "patch_embed.proj."),
    ("layernorm.", "norm."),
]
_HF_BLOCK = [
    ("layernorm_before.", "norm1."),
    ("layernorm_after.", "norm2."),
    ("attention.output.dense.", "attn.proj."),
    ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
    # Dinov2Model / Dinov2WithRegistersModel
    ("layer_scale1.lambda1", "ls1.gamma"),
    ("layer_scale2.lambda1", "ls2.gamma"),
    ("mlp.weights_in.", "mlp.w12."),
    ("mlp.weights_out.", "mlp.w3."),
]


def normalise_state_dict(raw: dict, name: str = "weights") -> dict:
    """Official DINO key names (``blocks.{i}.attn.qkv.weight`` …) from official, timm or
    Hugging Face ``ViTModel`` layouts; ``module.``/``backbone.``/``vit.`` prefixes dropped;
    arrays as float32."""
    state = {}
    for key, value in raw.items():
        state[_strip_prefixes(key)] = np.asarray(value)
    if any(k.startswith("encoder.layer.") for k in state):
        state = _from_hugging_face(state, name)
    state = {
        k: real_float32(v, f"{name}: {k}")
        for k, v in state.items()
        if not k.startswith(("head.", "pooler.", "fc_norm.", "mask_token"))
    }
    required = [
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "norm.weight",
        "blocks.0.attn.qkv.weight",
    ]
    missing = [k for k in required if k not in state]
    if missing:
        raise WeightsError(f"{name}: not a ViT state dict (missing {', '.join(missing)})")
    return state


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "backbone.", "vit.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _rename(key: str, table) -> str:
    for old, new in table:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _from_hugging_face(state: dict, name: str) -> dict:
    out = {}
    for key, value in state.items():
        if key.startswith("encoder.layer."):
            index, _, rest = key[len("encoder.layer.") :].partition(".")
            if not index.isdigit() or not rest:
                raise WeightsError(f"{name}: unexpected Hugging Face key {key[:60]!r}")
            if not rest.startswith("attention.attention."):  # q, k, v are joined below
                out[f"blocks.{index}.{_rename(rest, _HF_BLOCK)}"] = value
            continue
        out[_rename(key, _HF_NAMES)] = value
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")})
    for i in blocks:
        base = f"encoder.layer.{i}.attention.attention."
        try:
            for part in ("weight", "bias"):
                out[f"blocks.{i}.attn.qkv.{part}"] = np.concatenate(
                    [state[f"{base}{p}.{part}"] for p in ("query", "key", "value")]
                )
        except KeyError as exc:
            raise WeightsError(f"{name}: Hugging Face layout without {exc.args[0]}") from None
    return out


#: Official DINO and DINOv2 backbones: model name -> file name.
OFFICIAL = {
    "dino_vits16": "dino_deitsmall16_pretrain.pth",
    "dino_vits8": "dino_deitsmall8_pretrain.pth",
    "dino_vitb16": "dino_vitbase16_pretrain.pth",
    "dino_vitb8": "dino_vitbase8_pretrain.pth",
    **{
        f"dinov2_vit{s}14{r}": f"dinov2_vit{s}14{'_reg4' if r else ''}_pretrain.pth"
        for s in "sblg"
        for r in ("", "_reg")
    },
}
DOWNLOAD = "https://dl.fbaipublicfiles.com/dino/{stem}/{file}"
DOWNLOAD_V2 = "https://dl.fbaipublicfiles.com/dinov2/{model}/{file}"


def find_weights(
    weights: str | os.PathLike | None, model: str = "dino_vits8", hint: str = "pass --weights PATH"
) -> Path:
    """The weights file to use: ``weights`` if given, else the official file of ``model`` in
    $VISIONTK_WEIGHTS, else in the PyTorch hub cache ($TORCH_HOME or ~/.cache/torch). Never
    downloads: when nothing is found, the error names the file and where to get it."""
    if weights:
        path = Path(weights).expanduser()
        if not path.exists():
            raise WeightsError(f"{path}: no such weights file")
        return path
    if model not in OFFICIAL:
        raise WeightsError(f"unknown model {model!r} (models: {', '.join(OFFICIAL)})")
    file = OFFICIAL[model]
    places = []
    if os.environ.get("VISIONTK_WEIGHTS"):
        places.append(Path(os.environ["VISIONTK_WEIGHTS"]).expanduser())
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    places.append(torch_home.expanduser() / "hub" / "checkpoints")
    for place in places:
        if (place / file).exists():
            return place / file
    url = (
        DOWNLOAD_V2.format(model=model.removesuffix("_reg"), file=file)
        if model.startswith("dinov2")
        else DOWNLOAD.format(stem=file[: -len(".pth")], file=file)
    )
    raise WeightsError(
        f"no weights for {model}: put {file} (from {url}) in $VISIONTK_WEIGHTS or {hint}"
    )
