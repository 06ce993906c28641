"""numpy's .npz archives, and the float32 check every reader's caller uses."""

from __future__ import annotations

import io
import zipfile

import numpy as np

from ..errors import VisiontkError, WeightsError
from ._common import (
    _Budget,
    _count,
    _reason,
    _short,
    open_zip,
    read_member,
)

# --- .npz ------------------------------------------------------------------------------------


def read_npz(path, error=VisiontkError, kinds: str = "biuf") -> dict:
    """{name: array} from an .npz file without numpy's loader: each entry's size is checked
    against the budget before it is decompressed, its header against its bytes before a view is
    made, and only dtypes of the given kinds (numpy ``dtype.kind`` letters) are accepted."""
    name = str(path)
    budget = _Budget(name, error)
    out = {}
    with open_zip(path, error, ".npz file") as archive:
        try:
            infos = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise error(f"{name}: corrupt archive ({_reason(exc)})") from None
        for info in infos:
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            out[key] = _parse_npy(
                read_member(archive, info, budget),
                f"{name}: array {_short(key)}",
                error,
                kinds,
                budget,
            )
    return out


def _parse_npy(raw: bytes, where: str, error, kinds: str, budget: _Budget) -> np.ndarray:
    fmt = np.lib.format
    stream = io.BytesIO(raw)
    try:
        major, _ = fmt.read_magic(stream)
        read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(stream)
    except Exception as exc:  # numpy raises ValueError, SyntaxError, TypeError... on bad headers
        raise error(f"{where}: not a valid .npy entry ({_reason(exc)})") from None
    if (
        dtype.hasobject
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.kind not in kinds
    ):
        raise error(
            f"{where}: holds {_KIND_NAMES.get(dtype.kind, 'records')} ({dtype}); "
            f"expected {_expected(kinds)}"
        )
    count = _count(list(shape), where, error)
    body = len(raw) - stream.tell()
    if body != count * dtype.itemsize:
        raise error(
            f"{where}: {body:,} bytes for shape {shape} of {dtype} "
            f"({count * dtype.itemsize:,} expected)"
        )
    budget.take("arrays", count * dtype.itemsize, where)
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=stream.tell())
    return array.reshape(shape, order="F" if fortran else "C")


_KIND_NAMES = {
    "b": "booleans",
    "i": "integers",
    "u": "unsigned integers",
    "f": "floats",
    "c": "complex numbers",
    "U": "text",
    "S": "bytes",
    "O": "Python objects",
    "V": "raw records",
    "M": "dates",
    "m": "time spans",
}


def _expected(kinds: str) -> str:
    if set(kinds) == set("biuf"):
        return "real numbers"
    return " or ".join(_KIND_NAMES[k] for k in kinds)


def real_float32(array, where: str, error=WeightsError) -> np.ndarray:
    """``array`` as finite float32: text, complex, object and non-finite weights are errors
    (a report computed from them would be meaningless)."""
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise error(f"{where}: holds {array.dtype} values, not real numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        out = array.astype(np.float32)
    if out.size and not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).sum())
        raise error(
            f"{where}: {bad:,} of {out.size:,} values are NaN or infinite (or overflow float32)"
        )
    return out
