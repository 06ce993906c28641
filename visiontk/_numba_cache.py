"""Where numba keeps visiontk's compiled kernels: a per-user cache folder, never the package.

numba's default (``cache=True`` with no NUMBA_CACHE_DIR) writes ``*.nbi``/``*.nbc`` into the
``__pycache__`` beside the module. For an installed package that is ``site-packages/visiontk``,
which then outlives an uninstall (pip removes only the files it installed) and, left as a bare
folder, shadows a later editable install of the same package. A per-user folder avoids both.
Import this module before numba decorates anything; a NUMBA_CACHE_DIR set by the user wins.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
