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
import tempfile
from pathlib import Path

#: What a command says before it compiles the kernels.
COMPILE_NOTICE = "compiling visiontk's CPU kernels, once for this install (about 10 s)..."
#: The modules whose kernels a run compiles once, before its workers need them.
KERNEL_SOURCES = ("_sift/_cpu_kernels.py", "_match_kernels.py", "_int8_dots.py")


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/visiontk/numba (default ~/.cache), or a per-user temporary folder when
    that is not writable."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for place in (base / "visiontk" / "numba",
                  Path(tempfile.gettempdir()) / f"visiontk-numba-{os.getuid()}"):
        try:
            place.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(place, os.W_OK | os.X_OK):
            return place
    raise OSError("no writable folder for numba's cache; set NUMBA_CACHE_DIR")


def use_user_cache() -> None:
    """Point numba's cache at :func:`cache_dir` unless NUMBA_CACHE_DIR is already set.

    The environment variable is set too: numba re-reads NUMBA_* variables whenever they change
    (a worker setting NUMBA_NUM_THREADS, say), and spawned worker processes inherit it."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        try:
            os.environ["NUMBA_CACHE_DIR"] = str(cache_dir())
        except OSError:
            return  # numba then caches where it can or warns; correctness does not depend on it
    import numba

    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]


def compiled_stamp() -> Path | None:
    """The file that says this visiontk's kernels are in numba's cache for this numba, these
    sources and this kind of CPU (None without numba or a cache folder). Checked by a run
    before it starts its workers, without importing numba: a stat of each source."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        folder = Path(os.environ.get("NUMBA_CACHE_DIR") or cache_dir())
        stamp = [version("numba"), platform.machine(), platform.python_version()]
    except (OSError, PackageNotFoundError):
        return None
    package = Path(__file__).resolve().parent
    for source in KERNEL_SOURCES:
        try:
            st = (package / source).stat()
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
    from ._sift.backends import cpu_kernels
    from .matching import warm_up

    if cpu_kernels() is None:  # no numba: nothing to compile
        return
    warm_up()
    mark_compiled()
