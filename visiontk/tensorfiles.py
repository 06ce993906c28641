"""Reading arrays from files that may be hostile: PyTorch checkpoints, safetensors and .npz.

What the readers guarantee, whatever the file holds:

* **Nothing is executed.** A ``.pth`` pickle may name only the few globals a state dict needs
  (tensor rebuilding, storage types, OrderedDict), each a fresh object per file, so a pickle
  can neither call anything else nor change what the next file sees.
* **No read outside the data.** Every tensor is checked before a view is made: offset and
  strides non-negative, no more elements than its storage holds, the highest element it
  addresses inside the storage; a safetensors or ``.npy`` entry's byte count must equal its
  shape × dtype size.
* **Bounded memory.** A file may not make the reader decompress, or hand out as arrays, more
  than :func:`max_bytes` (default 8 GiB; environment variable ``VISIONTK_MAX_WEIGHTS_BYTES``),
  checked from the headers before anything is read; deflated entries may not expand more than
  :data:`MAX_COMPRESSION_RATIO` times (a zip bomb); a pickle may not exceed
  :data:`MAX_PICKLE_BYTES` and is read by the pure-Python unpickler, whose memo is a dict (the C
  one allocates its memo from an index in the file: 9 bytes asked it for 4 GB).
* **One line.** Every problem is the caller's error class (a
  :class:`~visiontk.errors.VisiontkError`) whose message names the file and the problem.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import stat
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .errors import VisiontkError, WeightsError

#: Default of :func:`max_bytes`: a DINOv2 ViT-g/14 in float32 is 4.5 GB.
DEFAULT_MAX_BYTES = 8 << 30
MAX_BYTES_ENV = "VISIONTK_MAX_WEIGHTS_BYTES"
#: Deflated checkpoint entries of real weights shrink by less than 2×; zeros shrink ~1000×.
MAX_COMPRESSION_RATIO = 100
#: data.pkl of a state dict is kilobytes (one record per tensor); every pickle byte can make
#: one Python object (~64 bytes), so this also bounds what a pickle can allocate (~256 MB).
MAX_PICKLE_BYTES = 4 << 20
#: A safetensors JSON header (about 100 bytes per tensor: 16 MiB is 150,000 tensors); parsed
#: JSON takes up to ~20× its size in Python objects.
MAX_HEADER_BYTES = 16 << 20
#: Containers nested deeper than this are not a state dict.
MAX_NESTING = 8
#: More dimensions than PyTorch allows.
MAX_DIMS = 64
#: Most elements a shape may describe, even with a zero size among its others (numpy refuses
#: a shape whose sizes multiply past 2**63 bytes).
MAX_ELEMENTS = 1 << 56


def max_bytes() -> int:
    """Most bytes one file may decompress, and most bytes of arrays it may produce."""
    text = os.environ.get(MAX_BYTES_ENV)
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        value = int(text)
    except ValueError:
        raise VisiontkError(f"{MAX_BYTES_ENV}={text!r}: expected a number of bytes") from None
    if value <= 0:
        raise VisiontkError(f"{MAX_BYTES_ENV}={text!r}: expected a positive number of bytes")
    return value


class _Budget:
    """Bytes a file may still make the reader hold, in one account per kind."""

    def __init__(self, name: str, error):
        self.name, self.error = name, error
        self.limit = max_bytes()
        self.used = {"read": 0, "arrays": 0}

    def take(self, kind: str, n: int, what: str) -> None:
        if self.used[kind] + n > self.limit:
            verb = "decompress" if kind == "read" else "materialise"
            raise self.error(
                f"{self.name}: {what} would {verb} {self.used[kind] + n:,} bytes, "
                f"over the limit of {self.limit:,} (set {MAX_BYTES_ENV} to raise it)"
            )
        self.used[kind] += n


def _count(shape, name: str, error) -> int:
    """Element count of a shape checked to be a list of non-negative integers."""
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_DIMS:
        raise error(f"{name}: shape {_short(shape)} is not a list of at most {MAX_DIMS} sizes")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise error(f"{name}: shape {_short(shape)} is not a list of non-negative integers")
    if math.prod(s for s in shape if s) > MAX_ELEMENTS:
        raise error(f"{name}: shape {_short(shape)} is too large for any array")
    return math.prod(shape)


def _short(value) -> str:
    """At most 60 characters of a value from the file, on one line (names shown bare)."""
    text = value if isinstance(value, str) and value.isprintable() else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- zip archives (.pth, .npz) ---------------------------------------------------------------


def regular_file(path, error, kind: str) -> Path:
    """``path`` checked to be an existing regular file: a FIFO would block a reader forever,
    and /dev/zero never ends."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a directory, not a {kind}")
    if not stat.S_ISREG(mode):
        raise error(f"{path}: not a regular file (a pipe or a device?), so not a {kind}")
    return path


def open_zip(path, error, kind: str) -> zipfile.ZipFile:
    name = str(path)
    regular_file(path, error, kind)
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:  # removed since regular_file looked
        raise error(f"{name}: no such file") from None
    except PermissionError:
        raise error(f"{name}: permission denied") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
        raise error(f"{name}: not a {kind} (not a zip archive, or truncated)") from None
    except NotImplementedError as exc:  # zipfile's answer to a directory entry of a newer version
        raise error(f"{name}: not a {kind} this reader can open ({exc})") from None


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> bytes:
    """An archive entry's bytes, refused before reading when its declared size is over the
    budget or its compression ratio is a zip bomb's; never reads more than it declares."""
    name, error = budget.name, budget.error
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_COMPRESSION_RATIO * max(
        info.compress_size, 1 << 10
    ):
        raise error(
            f"{name}: entry {info.filename} expands {info.compress_size:,} bytes to "
            f"{info.file_size:,} (over {MAX_COMPRESSION_RATIO}×: a zip bomb?)"
        )
    budget.take("read", info.file_size, f"entry {info.filename}")
    try:
        with archive.open(info) as fh:
            data = fh.read(info.file_size + 1)
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        struct.error,
        NotImplementedError,
    ) as exc:
        raise error(f"{name}: entry {info.filename} is corrupt ({_reason(exc)})") from None
    if len(data) != info.file_size:
        raise error(
            f"{name}: entry {info.filename} holds {len(data):,} bytes, not the "
            f"{info.file_size:,} its header says"
        )
    return data


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:80]}" if text else type(exc).__name__


# --- PyTorch zip checkpoints -----------------------------------------------------------------

#: numpy's type of each, or "bfloat16" (which numpy lacks: widened to float32 when read)
_STORAGE_DTYPES: dict[str, type[np.generic] | str] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    __slots__ = ("dtype", "name")

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage's elements (a read-only 1-D array) as the unpickler hands it to a tensor."""

    __slots__ = ("array", "key")

    def __init__(self, array: np.ndarray, key: str):
        self.array, self.key = array, key


def decode(raw, dtype, offset: int = 0, count: int = -1) -> np.ndarray:
    """Little-endian bytes as a 1-D array (bfloat16 widened to float32); no copy otherwise."""
    if dtype == "bfloat16":
        upper = np.frombuffer(raw, dtype="<u2", count=count, offset=offset).astype(np.uint32)
        return (upper << 16).view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=offset)


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler (its memo is a dict; the C one sizes an array from the file),
    admitting only the globals of a state dict, fresh per file."""

    def __init__(self, data: bytes, archive, prefix: str, budget: _Budget):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._budget = archive, prefix, budget
        self._storages: dict = {}
        name, error = budget.name, budget.error

        def rebuild_tensor(storage, offset, size, stride, *rest):
            return _rebuild_tensor(storage, offset, size, stride, budget)

        def rebuild_parameter(data, *rest):
            if not isinstance(data, np.ndarray):
                raise error(f"{name}: a parameter wraps {type(data).__name__}, not a tensor")
            return data

        def ordered_dict(*args):
            if args:
                raise error(f"{name}: OrderedDict built with arguments")
            return OrderedDict()

        self._allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
            ("collections", "OrderedDict"): ordered_dict,
            **{("torch", n): _StorageType(n) for n in _STORAGE_DTYPES},
        }

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise self._budget.error(
                f"{self._budget.name}: refused to load: the pickle asks for "
                f"{_short(module)}.{_short(name)}, which a weights file never needs"
            ) from None

    def persistent_load(self, pid):
        name, error = self._budget.name, self._budget.error
        if not (
            isinstance(pid, tuple)
            and len(pid) >= 3
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
        ):
            raise error(f"{name}: unexpected persistent id {_short(pid)}")
        storage_type, key = pid[1], pid[2]
        if key not in self._storages:
            try:
                info = self._archive.getinfo(f"{self._prefix}data/{key}")
            except KeyError:
                raise error(f"{name}: storage {_short(key)} is missing (truncated file?)") from None
            raw = read_member(self._archive, info, self._budget)
            itemsize = (
                2 if storage_type.dtype == "bfloat16" else np.dtype(storage_type.dtype).itemsize
            )
            if len(raw) % itemsize:
                raise error(
                    f"{name}: storage {key} holds {len(raw)} bytes, not a whole number "
                    f"of {storage_type.name[: -len('Storage')]} values"
                )
            self._storages[key] = _Storage(decode(raw, storage_type.dtype), key)
        storage = self._storages[key]
        if storage.array.dtype != np.dtype(
            np.float32 if storage_type.dtype == "bfloat16" else storage_type.dtype
        ).newbyteorder("<"):
            raise error(f"{name}: storage {key} is used with two different types")
        return storage


def _rebuild_tensor(storage, offset, size, stride, budget: _Budget) -> np.ndarray:
    """A tensor as a read-only view of its storage, after checking it stays inside it."""
    name, error = budget.name, budget.error
    if not isinstance(storage, _Storage):
        raise error(f"{name}: a tensor is built from {type(storage).__name__}, not a storage")
    array = storage.array
    what = f"a tensor of storage {storage.key}"
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise error(
            f"{name}: {what} has storage offset {_short(offset)}; it must be an integer >= 0"
        )
    count = _count(size, f"{name}: {what}", error)
    if (
        not isinstance(stride, (list, tuple))
        or len(stride) != len(size)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in stride)
    ):
        raise error(
            f"{name}: {what} has strides {_short(stride)}; they must be one "
            "non-negative integer per dimension"
        )
    if count == 0:
        return np.zeros(tuple(size), array.dtype)
    if count > array.size:
        raise error(
            f"{name}: {what} has {count:,} elements but its storage holds "
            f"{array.size:,} (overlapping or broadcast views are refused)"
        )
    highest = offset + sum((s - 1) * st for s, st in zip(size, stride, strict=True))
    if highest >= array.size:
        raise error(
            f"{name}: {what} addresses element {highest:,} of a storage of "
            f"{array.size:,} (truncated or crafted file)"
        )
    budget.take("arrays", count * array.itemsize, what)
    view = np.lib.stride_tricks.as_strided(
        array[offset:],
        shape=tuple(size),
        strides=tuple(st * array.itemsize for st in stride),
        writeable=False,
    )
    return view


def read_pth(path, error=WeightsError) -> dict:
    """State dict of a PyTorch zip checkpoint as {name: read-only numpy array}, safely (see the
    module's guarantees). Old pre-1.6 (non-zip) checkpoints are refused."""
    name = str(path)
    budget = _Budget(name, error)
    with open_zip(
        path,
        error,
        "PyTorch zip checkpoint (old pre-1.6 .pth files are not read: resave them with torch.save)",
    ) as archive:
        try:
            infos = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise error(f"{name}: corrupt archive ({_reason(exc)})") from None
        pkl = next((i for i in infos if i.filename.endswith("data.pkl")), None)
        if pkl is None:
            raise error(f"{name}: no data.pkl inside; not a PyTorch checkpoint")
        if pkl.file_size > MAX_PICKLE_BYTES:
            raise error(
                f"{name}: data.pkl is {pkl.file_size:,} bytes, over the "
                f"{MAX_PICKLE_BYTES:,} a state dict needs"
            )
        prefix = pkl.filename[: -len("data.pkl")]
        data = read_member(archive, pkl, budget)
        try:
            obj = _RestrictedUnpickler(data, archive, prefix, budget).load()
        except VisiontkError:
            raise
        except RecursionError:
            raise error(f"{name}: the pickle nests too deeply") from None
        except MemoryError:
            raise error(f"{name}: the pickle needs more memory than a state dict") from None
        except Exception as exc:  # the pure-Python unpickler raises many kinds on bad input
            raise error(f"{name}: corrupt checkpoint ({_reason(exc)})") from None
    return find_state_dict(obj, name, error)


def find_state_dict(obj, name: str, error=WeightsError, depth: int = 0) -> dict:
    """The {name: array} mapping in an unpickled checkpoint (training checkpoints keep it under
    ``teacher``, ``state_dict``, ``model`` or ``student``)."""
    if depth > MAX_NESTING:
        raise error(
            f"{name}: state dict nested more than {MAX_NESTING} levels deep "
            "(a self-referencing pickle?)"
        )
    if (
        isinstance(obj, dict)
        and obj
        and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())
    ):
        return dict(obj)
    if isinstance(obj, dict):
        for key in ("teacher", "state_dict", "model", "student"):
            if isinstance(obj.get(key), dict):
                return find_state_dict(obj[key], name, error, depth + 1)
    raise error(f"{name}: holds no state dict of tensors")


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


__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_BYTES_ENV",
    "MAX_COMPRESSION_RATIO",
    "MAX_HEADER_BYTES",
    "MAX_PICKLE_BYTES",
    "decode",
    "find_state_dict",
    "max_bytes",
    "read_npz",
    "read_pth",
    "read_safetensors",
    "real_float32",
    "regular_file",
]
