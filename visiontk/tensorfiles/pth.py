"""PyTorch zip checkpoints (.pth), read by a restricted pure-Python unpickler."""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict

import numpy as np

from ..errors import VisiontkError, WeightsError
from ._common import (
    MAX_NESTING,
    MAX_PICKLE_BYTES,
    _Budget,
    _count,
    _reason,
    _short,
    open_zip,
    read_member,
)

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
