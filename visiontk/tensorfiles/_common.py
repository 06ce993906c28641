"""What every reader shares: the limits, the byte budget, and reading zip archives (.pth,
.npz) member by member."""

from __future__ import annotations

import math
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path

from ..errors import VisiontkError

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
