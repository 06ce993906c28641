"""Installing a plugin package for a test: a module and a dist-info whose entry points declare
its stages in the ``visiontk.stages`` group, on sys.path (and PYTHONPATH, for subprocesses)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path


def install_plugin(root: Path, module: str, source: str, stages: dict, monkeypatch) -> Path:
    """Write ``module`` (``source``) and its distribution's metadata under ``root/site``,
    declaring ``stages`` ({stage name: "module:Class"}); returns the site folder. The caller
    refreshes the stage registry (``visiontk.pipeline.registry.refresh``) and undoes it."""
    site = root / "site"
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(textwrap.dedent(source))
    dist = site / f"{module}-1.0.dist-info"
    dist.mkdir()
    name = module.replace("_", "-")
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[visiontk.stages]\n" + "".join(f"{k} = {v}\n" for k, v in stages.items())
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    )
    return site


def blas_threads(_task=None) -> int | None:
    """Threads numpy's OpenBLAS runs in this process (None: numpy has no OpenBLAS here). A
    worker task: it reports what the library really uses, not what the environment says."""
    import ctypes
    import glob

    import numpy

    for path in glob.glob(os.path.join(os.path.dirname(numpy.__file__) + ".libs", "*openblas*")):
        lib = ctypes.CDLL(path)
        for name in (
            "scipy_openblas_get_num_threads64_",
            "openblas_get_num_threads64_",
            "openblas_get_num_threads",
        ):
            if hasattr(lib, name):
                return int(getattr(lib, name)())
    return None
