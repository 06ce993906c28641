"""Convolution weights from a PyTorch state dict (.pth, read safely), safetensors, .npz or ONNX.

Each reader returns the 4-D convolution kernels (out, in/groups, kh, kw) in file order, with
the ``groups`` of each conv when the format records it (ONNX's Conv ``group`` attribute);
state dicts and .npz carry no group attribute, and :mod:`.structure` infers it from shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from ..tensorfiles import (
    max_bytes,
    read_npz,
    read_pth,
    read_safetensors,
    real_float32,
    regular_file,
)

#: PyTorch files (torch.save: .pth, .pt, Lightning's .ckpt, Hugging Face's .bin), then the rest.
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
WEIGHT_SUFFIXES = frozenset({*TORCH_SUFFIXES, ".safetensors", ".npz", ".onnx"})


@dataclass
class ConvLayer:
    name: str
    weight: np.ndarray  # (out, in / groups, kh, kw) float32
    groups: int | None = None  # None: not recorded in the file

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_per_group(self) -> int:
        return int(self.weight.shape[1])


def read_conv_layers(path) -> list[ConvLayer]:
    """All 4-D convolution kernels in ``path``, in the order the file lists them, as finite
    float32 (text, complex, NaN or infinite weights, and empty kernels, are errors)."""
    path = regular_file(path, WeightsError, "weights file")
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(
            f"{path}: unsupported file type ({suffix or 'no suffix'}); weights "
            f"come as {', '.join(TORCH_SUFFIXES)} (PyTorch), .safetensors, .npz "
            "or .onnx"
        )
    if suffix == ".onnx":
        layers = _read_onnx(path)
    else:
        if suffix == ".npz":
            raw = read_npz(path, WeightsError)
        elif suffix == ".safetensors":
            raw = read_safetensors(path)
        else:
            raw = read_pth(path)
        layers = [
            _conv_layer(path, _layer_name(k), v)
            for k, v in raw.items()
            if np.ndim(v) == 4 and not k.endswith(".bias")
        ]
    if not layers:
        raise WeightsError(f"{path}: holds no 4-D convolution weights")
    return layers


def _conv_layer(path, name: str, weight, groups: int | None = None) -> ConvLayer:
    where = f"{path}: layer {name}"
    weight = real_float32(weight, where)
    if min(weight.shape) < 1:
        raise WeightsError(f"{where}: kernel of shape {weight.shape} has no units")
    if groups is not None and (groups < 1 or weight.shape[0] % groups):
        raise WeightsError(
            f"{where}: group={groups} does not divide its {weight.shape[0]} output channels"
        )
    return ConvLayer(name, weight, groups)


def _layer_name(key: str) -> str:
    return key[: -len(".weight")] if key.endswith(".weight") else key


def _read_onnx(path: Path) -> list[ConvLayer]:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise WeightsError("reading ONNX needs the onnx package: pip install onnx") from None
    limit = max_bytes()
    with open(path, "rb") as fh:  # read bounded: the size on disk may change while we read
        blob = fh.read(limit + 1)
    if len(blob) > limit:
        raise WeightsError(
            f"{path}: over the limit of {limit:,} bytes "
            "(set VISIONTK_MAX_WEIGHTS_BYTES to raise it)"
        )
    try:
        # from bytes: external data (paths the model names) is never followed
        model = onnx.load_model_from_string(blob)
    except Exception as exc:  # onnx raises DecodeError and friends from protobuf
        raise WeightsError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    inits = {t.name: t for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        tensor = inits[node.input[1]]
        name = node.name or _layer_name(node.input[1])
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise WeightsError(
                f"{path}: layer {name} keeps its weights in an external file, "
                "which visiontk does not read"
            )
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = list(tensor.dims)
        if len(dims) != 4 or min(dims) < 1:
            raise WeightsError(
                f"{path}: layer {name} has kernel dims {dims[:8]}, expected 4 positive sizes"
            )
        if 4 * int(np.prod(dims, dtype=object)) > limit:
            raise WeightsError(
                f"{path}: layer {name} of dims {dims} is over the limit of {limit:,} bytes"
            )
        try:
            weight = numpy_helper.to_array(tensor)
        except Exception as exc:  # ValueError / TypeError when the dims lie about the data
            raise WeightsError(
                f"{path}: layer {name}: its data does not fit its dims {dims} "
                f"({type(exc).__name__})"
            ) from None
        layers.append(_conv_layer(path, name, weight, int(groups)))
    return layers
