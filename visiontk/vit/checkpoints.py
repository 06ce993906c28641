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

import json
import os
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from ..tensorfiles import read_pth, read_safetensors, real_float32
from . import dinov3


def read_weights(path) -> dict:
    """Official-layout state dict of float32 arrays from a .pth or .safetensors file, or from a
    Hugging Face model folder (``config.json`` + ``model.safetensors`` or its shards)."""
    path = Path(path)  # each reader checks it is a regular file
    config = None
    if path.name.endswith(("config.json", ".index.json")) and path.is_file():
        raise WeightsError(
            f"{path}: a Hugging Face model's {path.name}, not weights; pass the folder that "
            f"holds it ({path.parent})"
        )
    if path.is_dir():
        config = dinov3.read_config(path)
        raw = _read_folder(path)
    elif path.suffix == ".safetensors":
        config = dinov3.read_config(path.parent)
        raw = read_safetensors(path)
    else:
        raw = read_pth(path)
    if config is not None and str(config.get("model_type", "")).endswith("convnext"):
        raise WeightsError(
            f"{path}: a ConvNeXt ({config['model_type']}), not a ViT: attention maps "
            f"need a ViT backbone (e.g. dinov3_vits16)"
        )
    return normalise_state_dict(raw, str(path), config)


def _read_folder(folder: Path) -> dict:
    """The tensors of a Hugging Face model folder: model.safetensors, or the shards its
    model.safetensors.index.json names (the 7B's)."""
    single = folder / "model.safetensors"
    if single.is_file():
        return read_safetensors(single)
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        raise WeightsError(
            f"{folder}: a folder without model.safetensors or model.safetensors.index.json"
        )
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise WeightsError(f"{index}: not a safetensors index (no weight_map)") from None
    raw: dict = {}
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard:
            raise WeightsError(f"{index}: shard {str(shard)[:60]!r} is not a file in {folder}")
        raw.update(read_safetensors(folder / shard))
    return raw


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


def normalise_state_dict(raw: dict, name: str = "weights", config: dict | None = None) -> dict:
    """Official DINO key names (``blocks.{i}.attn.qkv.weight`` …) from official, timm or
    Hugging Face layouts of DINO, DINOv2 and DINOv3 (see :mod:`.dinov3` for what DINOv3's
    become); ``module.``/``backbone.``/``vit.``/``model.`` prefixes dropped; arrays as
    float32. ``config``: a Hugging Face config.json beside the weights, if any."""
    state = {}
    for key, value in raw.items():
        state[_strip_prefixes(key)] = np.asarray(value)
    if dinov3.is_dinov3(state):
        state = dinov3.normalise(state, name, config)
    elif any(k.startswith("encoder.layer.") for k in state):
        state = _from_hugging_face(state, name)
    state = {
        k: real_float32(v, f"{name}: {k}")
        for k, v in state.items()
        if not k.startswith(("head.", "pooler.", "fc_norm.", "mask_token"))
    }
    required = ["cls_token", "patch_embed.proj.weight", "norm.weight", "blocks.0.attn.qkv.weight"]
    if "rope_embed.periods" not in state:  # DINO and DINOv2: learned positions
        required.insert(1, "pos_embed")
    missing = [k for k in required if k not in state]
    if not {"cls_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight"} & set(state):
        raise WeightsError(f"{name}: {_what_it_is(state)}")
    if missing:
        raise WeightsError(f"{name}: not a ViT state dict (missing {', '.join(missing)})")
    return state


def _what_it_is(state: dict) -> str:
    """The one-line error for weights that are no DINO ViT: what was found instead."""
    keys = sorted(state)
    if any(".dwconv." in k or k.startswith("downsample_layers.") for k in keys):
        return (
            "a ConvNeXt (DINOv3 ConvNeXt layout: stages.*.dwconv), not a ViT: attention "
            "maps need a ViT backbone (e.g. dinov3_vits16)"
        )
    shown = ", ".join(k[:40] for k in keys[:3]) + (", ..." if len(keys) > 3 else "")
    return (
        f"not a DINO, DINOv2 or DINOv3 ViT state dict: {len(keys)} tensors ({shown or 'none'}), "
        f"none of cls_token, patch_embed.proj.weight, blocks.0.attn.qkv.weight"
    )


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


#: DINOv3 ViTs (LVD-1689M weights): model name -> the hub file's hash (hub/backbones.py).
DINOV3_HASHES = {
    "dinov3_vits16": "08c60483",
    "dinov3_vits16plus": "4057cbaa",
    "dinov3_vitb16": "73cec8be",
    "dinov3_vitl16": "8aa4cbdd",
    "dinov3_vitl16plus": "46503df0",
    "dinov3_vith16plus": "7c1da9a5",
    "dinov3_vit7b16": "a955f4ea",
}
#: Official DINO, DINOv2 and DINOv3 backbones: model name -> file name.
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
    **{m: f"{m}_pretrain_lvd1689m-{h}.pth" for m, h in DINOV3_HASHES.items()},
}
DOWNLOAD = "https://dl.fbaipublicfiles.com/dino/{stem}/{file}"
DOWNLOAD_V2 = "https://dl.fbaipublicfiles.com/dinov2/{model}/{file}"
#: DINOv3 weights are behind a licence form: its page mails download links.
DOWNLOAD_V3 = "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/"


def find_weights(
    weights: str | os.PathLike | None, model: str = "dino_vits8", hint: str = "pass --weights PATH"
) -> Path:
    """The weights to use: ``weights`` if given (a file, or a Hugging Face model folder), else
    the official file of ``model`` in $VISIONTK_WEIGHTS, else in the PyTorch hub cache
    ($TORCH_HOME or ~/.cache/torch); a DINOv3 model is also found under another hash or
    training set (``dinov3_vits16_pretrain_sat493m-*.pth``) or as its Hugging Face folder
    (``dinov3-vits16-pretrain-lvd1689m``). Never downloads: when nothing is found, the error
    names the file and where to get it."""
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
        if model.startswith("dinov3"):
            arch = model.removeprefix("dinov3_")
            found = sorted(place.glob(f"{model}_pretrain_*.pth")) + sorted(
                p for p in place.glob(f"dinov3-{arch}-pretrain-*") if p.is_dir()
            )
            if found:
                return found[0]
    if model.startswith("dinov3"):
        where = f"request it at {DOWNLOAD_V3}, or the Hugging Face folder facebook/" + (
            f"dinov3-{model.removeprefix('dinov3_')}-pretrain-lvd1689m"
        )
    else:
        where = "from " + (
            DOWNLOAD_V2.format(model=model.removesuffix("_reg"), file=file)
            if model.startswith("dinov2")
            else DOWNLOAD.format(stem=file[: -len(".pth")], file=file)
        )
    raise WeightsError(
        f"no weights for {model}: put {file} ({where}) in $VISIONTK_WEIGHTS or {hint}"
    )


#: Mean and std of DINOv3's satellite (SAT-493M) weights' pixels (the dinov3 README).
SATELLITE_NORMALISATION = ((0.430, 0.411, 0.296), (0.213, 0.156, 0.143))


def pixel_normalisation(path) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) the weights at ``path`` expect, when not ImageNet's (None): a Hugging Face
    folder's preprocessor_config.json says it; otherwise DINOv3's satellite weights are known
    by their name (``…sat493m…``, hub file or Hugging Face folder)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    config = folder / "preprocessor_config.json"
    if config.is_file() and (path.is_dir() or path.suffix == ".safetensors"):
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
            mean, std = (np.asarray(data[k], np.float32) for k in ("image_mean", "image_std"))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise WeightsError(f"{config}: no image_mean and image_std of 3 numbers") from None
        if (
            mean.shape != (3,)
            or std.shape != (3,)
            or not (np.isfinite(mean).all() and (std > 0).all())
        ):
            raise WeightsError(f"{config}: image_mean and image_std must be 3 numbers, std > 0")
        return mean, std
    if "sat493m" in path.name.lower():
        return tuple(np.asarray(v, np.float32) for v in SATELLITE_NORMALISATION)  # type: ignore[return-value]
    return None
