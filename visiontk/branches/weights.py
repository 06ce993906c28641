"""Convolution weights from a PyTorch state dict (.pth, read safely), safetensors, .npz or ONNX.

Each reader returns the 4-D convolution kernels (out, in/groups, kh, kw) in file order, with
the ``groups`` of each conv when the format records it (ONNX's Conv ``group`` attribute);
state dicts and .npz carry no group attribute, and :mod:`.structure` infers it from shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..vit.checkpoints import WeightsError, read_pth, read_safetensors


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
    """All 4-D convolution kernels in ``path``, in the order the file lists them."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        layers = _read_onnx(path)
    else:
        if suffix == ".npz":
            try:
                with np.load(path, allow_pickle=False) as data:
                    raw = {k: data[k] for k in data.files}
            except (OSError, ValueError) as exc:
                raise WeightsError(f"{path}: not a readable .npz ({exc})") from None
        elif suffix == ".safetensors":
            raw = read_safetensors(path)
        else:
            raw = read_pth(path)
        layers = [ConvLayer(_layer_name(k), np.asarray(v, np.float32))
                  for k, v in raw.items() if np.asarray(v).ndim == 4 and not k.endswith(".bias")]
    if not layers:
        raise WeightsError(f"{path}: holds no 4-D convolution weights")
    return layers


def _layer_name(key: str) -> str:
    return key[: -len(".weight")] if key.endswith(".weight") else key


def _read_onnx(path: Path) -> list[ConvLayer]:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise WeightsError("reading ONNX needs the onnx package: pip install onnx") from None
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends from protobuf
        raise WeightsError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    inits = {t.name: t for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        layers.append(ConvLayer(node.name or _layer_name(node.input[1]), weight, int(groups)))
    return layers
