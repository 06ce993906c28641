"""Reading ViT weights without PyTorch and without running anyone's code.

* PyTorch ``.pth`` files are zip archives holding ``data.pkl`` (a pickle whose persistent ids
  name tensor storages) and raw little-endian storages under ``data/``. They are read with a
  restricted unpickler that admits only the few globals a state dict needs (the tensor-rebuild
  functions, storage types, OrderedDict), rebuilt here as numpy arrays; any other global, such
  as ``os.system``, is refused before anything is called.
* ``.safetensors`` files: 8-byte little-endian header length, a JSON header (dtype, shape,
  data_offsets) and the raw bytes.

Key layouts (official DINO and timm, or Hugging Face ``ViTModel``) are normalised to the
official names; see :func:`normalise_state_dict`.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import VisiontkError


class WeightsError(VisiontkError):
    """A weights file is missing, unreadable, of the wrong layout, or refused as unsafe."""


_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):
    array, dtype = storage
    itemsize = np.dtype(np.float32 if dtype == "bfloat16" else dtype).itemsize
    if not size:
        return array[offset:offset + 1].reshape(()).copy()
    need = offset + sum((s - 1) * st for s, st in zip(size, stride, strict=True)) + 1
    if need > array.size:
        raise WeightsError("a tensor reaches past the end of its storage (truncated file?)")
    view = np.lib.stride_tricks.as_strided(array[offset:], shape=tuple(size),
                                           strides=tuple(st * itemsize for st in stride))
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, name: str):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._name = archive, prefix, name

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise WeightsError(f"{self._name}: refused to load: the pickle asks for "
                               f"{module}.{name}, which a weights file never needs") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise WeightsError(f"{self._name}: unexpected persistent id {pid!r:.60}")
        storage_type, key = pid[1], pid[2]
        try:
            raw = self._archive.read(f"{self._prefix}data/{key}")
        except (KeyError, zipfile.BadZipFile, OSError):
            raise WeightsError(f"{self._name}: storage {key} is missing (truncated file?)") \
                from None
        return _decode(raw, storage_type.dtype), storage_type.dtype


def _decode(raw: bytes, dtype) -> np.ndarray:
    if dtype == "bfloat16":
        upper = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return upper.view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))


def read_pth(path) -> dict:
    """State dict of a PyTorch zip checkpoint as {name: numpy array}, safely."""
    name = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise WeightsError(f"{name}: no such file") from None
    except (zipfile.BadZipFile, OSError):
        raise WeightsError(f"{name}: not a PyTorch zip checkpoint (truncated or corrupt; old "
                           "pre-1.6 .pth files are not read: resave them with torch.save)") \
            from None
    with archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pkl:
            raise WeightsError(f"{name}: no data.pkl inside; not a PyTorch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        try:
            data = archive.read(pkl[0])
            obj = _RestrictedUnpickler(data, archive, prefix, name).load()
        except WeightsError:
            raise
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError,
                OSError) as exc:
            raise WeightsError(f"{name}: corrupt checkpoint ({type(exc).__name__}: "
                               f"{str(exc)[:80]})") from None
    return _find_state_dict(obj, name)


_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64,
                       "BF16": "bfloat16", "I64": np.int64, "I32": np.int32, "U8": np.uint8,
                       "BOOL": np.bool_}


def read_safetensors(path) -> dict:
    """{name: numpy array} from a .safetensors file."""
    name = str(path)
    try:
        with open(path, "rb") as fh:
            blob = fh.read()
    except FileNotFoundError:
        raise WeightsError(f"{name}: no such file") from None
    if len(blob) < 8:
        raise WeightsError(f"{name}: too short to be a safetensors file")
    (length,) = struct.unpack("<Q", blob[:8])
    if length > len(blob) - 8:
        raise WeightsError(f"{name}: header runs past the end of the file (truncated?)")
    try:
        header = json.loads(blob[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsError(f"{name}: header is not JSON; not a safetensors file") from None
    data = memoryview(blob)[8 + length:]
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise WeightsError(f"{name}: tensor {key} has unsupported dtype {info.get('dtype')}")
        start, end = info["data_offsets"]
        if end > len(data) or start > end:
            raise WeightsError(f"{name}: tensor {key} lies past the end of the file (truncated?)")
        array = _decode(bytes(data[start:end]), dtype)
        shape = tuple(info["shape"])
        if array.size != int(np.prod(shape)):
            raise WeightsError(f"{name}: tensor {key} has {array.size} values for shape {shape}")
        out[key] = array.reshape(shape)
    return out


def read_weights(path) -> dict:
    """Official-layout state dict of float32 arrays from a .pth or .safetensors file."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path}: is a directory, not a weights file")
    raw = read_safetensors(path) if path.suffix == ".safetensors" else read_pth(path)
    return normalise_state_dict(raw, str(path))


def _find_state_dict(obj, name: str) -> dict:
    if isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, dict):  # training checkpoints keep the weights under a key
        for key in ("teacher", "state_dict", "model", "student"):
            if isinstance(obj.get(key), dict):
                return _find_state_dict(obj[key], name)
    raise WeightsError(f"{name}: holds no state dict of tensors")


_HF_NAMES = [
    ("embeddings.cls_token", "cls_token"),
    ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.patch_embeddings.projection.", "patch_embed.proj."),
    ("layernorm.", "norm."),
]
_HF_BLOCK = [
    ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."),
    ("attention.output.dense.", "attn.proj."), ("intermediate.dense.", "mlp.fc1."),
    ("output.dense.", "mlp.fc2."),
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
    state = {k: v.astype(np.float32) for k, v in state.items()
             if not k.startswith(("head.", "pooler.", "fc_norm."))}
    required = ["cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight",
                "blocks.0.attn.qkv.weight"]
    missing = [k for k in required if k not in state]
    if missing:
        raise WeightsError(f"{name}: not a ViT state dict (missing {', '.join(missing)})")
    return state


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "backbone.", "vit.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _rename(key: str, table) -> str:
    for old, new in table:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _from_hugging_face(state: dict, name: str) -> dict:
    out = {}
    for key, value in state.items():
        if key.startswith("encoder.layer."):
            index, rest = key[len("encoder.layer."):].split(".", 1)
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
                    [state[f"{base}{p}.{part}"] for p in ("query", "key", "value")])
        except KeyError as exc:
            raise WeightsError(f"{name}: Hugging Face layout without {exc.args[0]}") from None
    return out


#: Official DINO backbones: model name -> (file name, download address).
OFFICIAL = {
    "dino_vits16": "dino_deitsmall16_pretrain.pth",
    "dino_vits8": "dino_deitsmall8_pretrain.pth",
    "dino_vitb16": "dino_vitbase16_pretrain.pth",
    "dino_vitb8": "dino_vitbase8_pretrain.pth",
}
DOWNLOAD = "https://dl.fbaipublicfiles.com/dino/{stem}/{file}"


def find_weights(weights: str | os.PathLike | None, model: str = "dino_vits8") -> Path:
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
    url = DOWNLOAD.format(stem=file[:-len(".pth")], file=file)
    raise WeightsError(f"no weights for {model}: put {file} (from {url}) in $VISIONTK_WEIGHTS "
                       "or pass --weights PATH")
