"""Writing files so that nobody ever sees half of one, with the permissions the user's umask
asks for."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path

from .errors import VisiontkError

#: Names of :func:`atomic_write`'s temporaries: ".<final name>.<8 random characters>.part".
#: sqlite adds its journal beside the temporary database while it is written.
TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.part(-journal|-wal|-shm)?$")


def umask() -> int:
    """The process's umask now (read from /proc where it can be, without changing it; read at
    each write, so a umask the program sets later is respected)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_write(path, make_folders: bool = True):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block ends
    without an exception, otherwise remove it. The file gets 0666 minus the umask, as
    ``open()`` would give it (mkstemp's temporaries are 0600). ``make_folders``: create the
    folders above ``path`` (visiontk's own output trees) or require them (a user's path)."""
    path = Path(path)
    if make_folders:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        existing_folder(path)
    tmp = None
    try:  # the temporary is made inside: an interrupt right after mkstemp still removes it
        tmp = _temporary(path)
        yield Path(tmp)
        _sync(tmp)  # the data is on the disk before the name says it is there: a power cut
        os.replace(tmp, path)  # after the rename must not leave an empty or partial file
        _sync(path.parent)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _temporary(path: Path) -> str:
    """A new empty temporary beside ``path`` (see :data:`TEMPORARY`), 0666 minus the umask."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    return tmp


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM that arrive inside the block are handled as it ends (their Python
    handlers, which raise, would otherwise run between two renames). Handlers can only be
    swapped in the main thread; elsewhere the block runs as it is."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    kinds = (signal.SIGINT, signal.SIGTERM)
    previous = {k: signal.signal(k, lambda number, frame: caught.append(number)) for k in kinds}
    try:
        yield
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)
        for number in caught[:1]:  # as if it had come now
            handler = previous[signal.Signals(number)]
            if callable(handler):
                handler(number, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(number)


def write_set(folder: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (name -> bytes) into ``folder`` so that they appear together: each to
    a synced temporary, then all renamed in dict order with SIGINT and SIGTERM held back (a
    stop lands after the last rename, not between two), or none when writing fails."""
    temps: dict[str, str] = {}
    try:
        for name, data in files.items():
            temps[name] = ""  # marks the slot: the temporary is recorded as soon as it exists
            temps[name] = _temporary(folder / name)
            with open(temps[name], "wb") as fh:
                fh.write(data)
            _sync(temps[name])
        for name in files:  # the one rename failure that can be foreseen, before any rename
            if (folder / name).is_dir() and not (folder / name).is_symlink():
                raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(folder / name))
        with _signals_held():
            for name, tmp in temps.items():
                os.replace(tmp, folder / name)
        _sync(folder)
    finally:
        for tmp in temps.values():
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)


def _sync(path) -> None:
    """fsync a file or folder (what a folder holds, its names, are data too)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # a file system that cannot sync (some network mounts): as good as it gets
        pass
    finally:
        os.close(fd)


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says a disk (or the user's quota on it) is full; h5py's and SQLite's
    errors carry their libraries' words rather than an errno."""
    text = str(exc)
    if type(exc).__name__ == "OperationalError":  # sqlite3's, without importing it
        return "disk is full" in text
    if not isinstance(exc, OSError):
        return False
    return (
        exc.errno in (errno.ENOSPC, errno.EDQUOT)
        or "No space left on device" in text
        or "Disk quota exceeded" in text
    )


def remove_stale_temporaries(folder) -> int:
    """Delete :func:`atomic_write` temporaries (and temporary folders named the same way) that
    a killed process left under ``folder`` (only names of that pattern: nothing of anyone
    else's); returns how many."""
    import shutil

    removed = 0
    found = [
        Path(here) / name
        for here, folders, files in os.walk(folder)  # links not followed
        for name in folders + files
        if TEMPORARY.match(name)
    ]
    for p in found:
        if p.is_symlink():  # a link moved aside under such a name: the link goes, not its target
            p.unlink(missing_ok=True)
        elif p.is_dir():  # a model being written (visiontk.sfm.mapping)
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed


def own_folder(path, root) -> Path:
    """``path`` as a real folder under ``root`` (an output folder), made as needed: a symbolic
    link on the way (``OUT/report`` pointing elsewhere) is replaced by a folder, never
    followed, so nothing visiontk writes in OUT lands outside it; a file there is an error."""
    path, root = Path(path), Path(root)
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            current.unlink()
        try:
            current.mkdir()
        except FileExistsError:
            if not current.is_dir():
                raise VisiontkError(
                    f"{current}: is a file where visiontk keeps a folder of "
                    "its outputs; move it away"
                ) from None
    return path


def writable_folder(path) -> Path:
    """Create ``path`` if needed and check that files can be written in it, before any work
    starts; a one-line :class:`VisiontkError` otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except FileExistsError:
        raise VisiontkError(f"{path}: is a file, not a folder for the outputs") from None
    except NotADirectoryError:
        raise VisiontkError(f"{path}: cannot be a folder (a part of it is a file)") from None
    except OSError as exc:
        raise VisiontkError(
            f"{path}: cannot write outputs here ({exc.strerror or type(exc).__name__})"
        ) from None
    return path


def writable_file(path) -> Path:
    """Check, before any work, that ``path`` can be written as a file: not a folder, in a
    folder that exists (a typo in a folder name is an error, not a new folder) and takes new
    files."""
    text = os.fspath(path)
    path = Path(path)
    if path.is_dir() or text.endswith(("/", os.sep)):
        raise VisiontkError(f"{text}: is a folder; give a file name for the output")
    if path.exists() and not path.is_file():  # replaced by a rename, /dev/null would go
        raise VisiontkError(
            f"{path}: not a regular file (a device or a pipe?); give a file name for the output"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise VisiontkError(f"{path}: cannot overwrite it (permission denied)")
    existing_folder(path)
    writable_folder(path.parent)
    return path


def existing_folder(path) -> Path:
    """``path``, when the folder it goes into exists; a one-line error naming both otherwise."""
    path = Path(path)
    if not path.parent.is_dir():
        what = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise VisiontkError(f"{path}: {path.parent} {what}")
    return path
