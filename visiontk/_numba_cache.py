"""Where numba keeps visiontk's compiled kernels: a per-user cache folder, never the package.

numba's default (``cache=True`` with no NUMBA_CACHE_DIR) writes ``*.nbi``/``*.nbc`` into the
``__pycache__`` beside the module. For an installed package that is ``site-packages/visiontk``,
which then outlives an uninstall (pip removes only the files it installed) and, left as a bare
folder, shadows a later editable install of the same package. A per-user folder avoids both.
Import this module before numba decorates anything; a NUMBA_CACHE_DIR set by the user wins.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import stat
import tempfile
from pathlib import Path
from typing import Literal, TypedDict

#: What a command says before it compiles the kernels.
COMPILE_NOTICE = "compiling visiontk's CPU kernels, once for this install (about 10 s)..."
#: The modules whose kernels a run compiles once, before its workers need them.
KERNEL_SOURCES = (
    "_sift/_cpu_kernels.py",
    "matching/_cpu_kernels.py",
    "matching/_cpu_kernels_int.py",
)


class KernelOptions(TypedDict, total=False):
    """``numba.njit`` options a kernel module gives all of its kernels (``@njit(**options)``),
    typed so that they are checked against njit's keywords."""

    cache: bool
    fastmath: bool | set[str]
    error_model: Literal["python", "numpy"]


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/visiontk/numba (default ~/.cache), else ``visiontk-numba-<uid>`` in the
    temporary folder, each used only if nobody else can change what is in it (numba unpickles
    its index files: whoever can write them runs code as this user); else a fresh private
    temporary folder, which lasts as long as the temporary folder does."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for place in (
        base / "visiontk" / "numba",
        Path(tempfile.gettempdir()) / f"visiontk-numba-{os.getuid()}",
    ):
        try:
            place.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(place, os.W_OK | os.X_OK) and trusted_folder(place):
            return place
    return Path(tempfile.mkdtemp(prefix="visiontk-numba-"))


def trusted_folder(folder: Path) -> bool:
    """Whether only this user (and root) can change what ``folder`` holds: it is this user's
    and writable by nobody else (but this user's own primary group), and every folder above it
    is this user's or root's and writable by nobody else, or sticky (as /tmp), where others
    cannot move what is not theirs."""
    uid, gid = os.getuid(), os.getgid()
    try:
        real = folder.resolve(strict=True)
        chain = [(real, os.stat(real))] + [(p, os.stat(p)) for p in real.parents]
    except OSError:
        return False
    for path, st in chain:
        others_write = st.st_mode & (0o002 | (0o020 if st.st_gid != gid else 0))
        if st.st_uid not in (uid, 0) or not stat.S_ISDIR(st.st_mode):
            return False
        if path == real and (st.st_uid != uid or others_write):
            return False
        if others_write and not st.st_mode & stat.S_ISVTX:
            return False
    return True


def numba_cache_folder() -> Path:
    """``NUMBA_CACHE_DIR``, set to :func:`cache_dir` first unless the user set it (so that
    numba, which re-reads NUMBA_* variables whenever they change, and the processes started
    later, pipeline workers among them, use the same folder); OSError without any."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        os.environ["NUMBA_CACHE_DIR"] = str(cache_dir())
    return Path(os.environ["NUMBA_CACHE_DIR"])


def use_user_cache() -> None:
    """Point numba's cache at :func:`numba_cache_folder`; first refuse, as a one-line
    OptionError, a NUMBA_CPU_FEATURES that LLVM would abort the process on."""
    from . import simd

    simd.numba_features()
    try:
        folder = numba_cache_folder()
    except OSError:  # no temporary folder either: numba then caches where it can or warns
        return
    import numba

    # numba.config sets its options from the environment at run time: mypy cannot see them
    numba.config.CACHE_DIR = str(folder)  # type: ignore[attr-defined]


def compiled_stamp() -> Path | None:
    """The file that says this visiontk's kernels are in numba's cache for this numba, these
    sources and this kind of CPU (None without numba or a cache folder). Checked by a run
    before it starts its workers, without importing numba: a stat of each source."""
    import importlib.util

    numba = importlib.util.find_spec("numba")  # its installed files stand for its version:
    if numba is None or numba.origin is None:  # metadata.version() is slow, and every run asks
        return None
    try:
        folder = numba_cache_folder()
    except OSError:
        return None
    stamp = [platform.machine(), platform.python_version()]
    package = Path(__file__).resolve().parent
    sources: list[str | Path] = [numba.origin, *(package / s for s in KERNEL_SOURCES)]
    for source in sources:
        try:
            st = Path(source).stat()
        except OSError:
            return None
        stamp.append(f"{source}:{st.st_size}:{st.st_mtime_ns}")
    digest = hashlib.sha256("|".join(stamp).encode()).hexdigest()[:16]
    return folder / f"visiontk-compiled-{digest}"


def kernels_compiled() -> bool:
    """Whether :func:`compiled_stamp` is there (True when there is nothing to compile)."""
    stamp = compiled_stamp()
    return stamp is None or stamp.exists()


def mark_compiled() -> None:
    """Leave :func:`compiled_stamp` once the kernels are compiled and cached."""
    stamp = compiled_stamp()
    if stamp is not None:
        # a read-only cache: the next run compiles again, as numba itself would
        with contextlib.suppress(OSError):
            stamp.touch()


def compile_kernels() -> None:
    """Compile (or load) SIFT's and matching's kernels into numba's cache, then leave the
    stamp: a run does this in one worker before the others need them, instead of every worker
    compiling the same kernels at once."""
    from .extract import compile_cpu_kernels
    from .matching import warm_up

    if not compile_cpu_kernels():  # no numba: nothing to compile
        return
    warm_up()
    mark_compiled()
