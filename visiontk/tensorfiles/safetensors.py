"""safetensors files: a JSON header, then the raw tensors."""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from ..errors import WeightsError
from ._common import (
    MAX_HEADER_BYTES,
    _Budget,
    _count,
    _short,
    regular_file,
)
from .pth import decode

# --- safetensors -----------------------------------------------------------------------------

_SAFETENSORS_DTYPES: dict[str, type[np.generic] | str] = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "BF16": "bfloat16",
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path, error=WeightsError) -> dict:
    """{name: array} from a .safetensors file, every header entry checked before use."""
    name = str(path)
    budget = _Budget(name, error)
    regular_file(path, error, "safetensors file")
    try:
        size = os.stat(path).st_size
        budget.take("read", size, "the file")
        with open(path, "rb") as fh:
            blob = fh.read(size + 1)
    except FileNotFoundError:  # removed since regular_file looked
        raise error(f"{name}: no such file") from None
    except OSError as exc:
        raise error(f"{name}: cannot read ({exc.strerror or exc})") from None
    if len(blob) < 8:
        raise error(f"{name}: too short to be a safetensors file")
    (length,) = struct.unpack("<Q", blob[:8])
    if length > min(len(blob) - 8, MAX_HEADER_BYTES):
        raise error(
            f"{name}: header of {length:,} bytes runs past the end of the file (truncated?)"
        )
    try:
        header = json.loads(blob[8 : 8 + length])
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise error(f"{name}: header is not JSON; not a safetensors file") from None
    if not isinstance(header, dict):
        raise error(f"{name}: header is a JSON {type(header).__name__}, not an object")
    start_of_data = 8 + length
    data_size = len(blob) - start_of_data
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        where = f"{name}: tensor {_short(key)}"
        if not isinstance(info, dict):
            raise error(f"{where}: entry is a {type(info).__name__}, not an object")
        dtype_name = info.get("dtype")
        dtype = _SAFETENSORS_DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
        if dtype is None:
            raise error(f"{where}: unsupported dtype {_short(dtype_name)}")
        count = _count(info.get("shape"), where, error)
        offsets = info.get("data_offsets")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in offsets)
        ):
            raise error(f"{where}: data_offsets {_short(offsets)} is not [start, end]")
        start, end = offsets
        if not 0 <= start <= end <= data_size:
            raise error(
                f"{where}: bytes {start}..{end} lie outside the data "
                f"({data_size:,} bytes; truncated?)"
            )
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        if end - start != count * itemsize:
            raise error(
                f"{where}: {end - start:,} bytes for shape {info['shape']} of "
                f"{dtype_name} ({count * itemsize:,} expected)"
            )
        budget.take("arrays", count * itemsize, f"tensor {_short(key)}")
        array = decode(blob, dtype, offset=start_of_data + start, count=count)
        out[key] = array.reshape(info["shape"])
    return out
