"""Writers of hostile weights files: PyTorch checkpoints whose pickle rebuilds tensors with any
arguments, safetensors with any header, .npz entries with any header, and a subprocess runner
that reports peak memory. The files are made here, byte by byte, without torch."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import struct
import subprocess
import sys
import textwrap
import types
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Tensor:
    """What ``torch._utils._rebuild_tensor_v2`` is asked to build: a view of storage ``key``."""

    key: str
    offset: object = 0
    size: object = ()
    stride: object = ()
    storage_type: str = "FloatStorage"
    extra: tuple = field(default_factory=tuple)


@dataclass
class _StorageRef:
    key: str
    storage_type: str


@contextlib.contextmanager
def _fake_torch():
    """Modules named torch and torch._utils just long enough for pickle to name their globals
    (the pickler checks that a global it writes can be imported)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only named in the pickle
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in (
        "FloatStorage",
        "DoubleStorage",
        "HalfStorage",
        "LongStorage",
        "IntStorage",
        "ByteStorage",
        "BoolStorage",
        "BFloat16Storage",
    ):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def torch_pickle(obj) -> bytes:
    """Pickle ``obj`` as torch.save does, with :class:`Tensor` as tensor records."""
    with _fake_torch() as torch:

        class Pickler(pickle.Pickler):
            def reducer_override(self, o):
                if isinstance(o, Tensor):
                    return (
                        torch._utils._rebuild_tensor_v2,
                        (
                            _StorageRef(o.key, o.storage_type),
                            o.offset,
                            o.size,
                            o.stride,
                            False,
                            OrderedDict(),
                            *o.extra,
                        ),
                    )
                return NotImplemented

            def persistent_id(self, o):
                if isinstance(o, _StorageRef):
                    return ("storage", getattr(torch, o.storage_type), o.key, "cpu", 0)
                return None

        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(obj)
        return buffer.getvalue()


def write_pth(
    path: Path,
    state,
    storages: dict | None = None,
    *,
    data_pkl: bytes | None = None,
    compression=zipfile.ZIP_STORED,
) -> Path:
    """A PyTorch zip checkpoint: ``archive/data.pkl`` (``state`` pickled, or ``data_pkl``) and
    ``archive/data/<key>`` for each storage's bytes."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("archive/data.pkl", torch_pickle(state) if data_pkl is None else data_pkl)
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")
    return path


def write_safetensors(path: Path, header, data: bytes = b"", *, length: int | None = None) -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def npy_bytes(
    array: np.ndarray | None = None, *, header: dict | None = None, body: bytes | None = None
) -> bytes:
    """A .npy entry; ``header`` and ``body`` override what ``array`` would give."""
    array = np.zeros(0, np.float32) if array is None else np.ascontiguousarray(array)
    head = {
        "descr": np.lib.format.dtype_to_descr(array.dtype),
        "fortran_order": False,
        "shape": array.shape,
    }
    head.update(header or {})
    text = repr(head).encode("latin1")
    text += b" " * ((-(10 + len(text) + 1)) % 64) + b"\n"
    raw = array.tobytes() if body is None else body
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + raw


def write_npz(path: Path, entries: dict, compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for key, raw in entries.items():
            z.writestr(f"{key}.npy", raw if isinstance(raw, bytes) else npy_bytes(raw))
    return path


def peak_memory_mb(code: str, timeout: float = 120) -> tuple[float, str]:
    """Run ``code`` in a fresh Python after importing visiontk; return the growth of peak
    resident memory (MB) during ``code`` and what it printed (its last line, or the error)."""
    script = textwrap.dedent("""
        import resource, sys
        import numpy, visiontk, visiontk.tensorfiles, visiontk.branches, visiontk.vit
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            exec(sys.argv[1])
            outcome = "ok"
        except visiontk.VisiontkError as exc:
            outcome = "VisiontkError: " + str(exc)
        except BaseException as exc:
            outcome = type(exc).__name__ + ": " + str(exc)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
        print(grown / 1024)
        print(outcome)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script, code],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or len(lines) < 2:
        raise AssertionError(f"exit {done.returncode}: {done.stderr[-2000:]}")
    return float(lines[-2]), lines[-1]
