"""Stage registry through the ``visiontk.stages`` entry-point group.

Built-in stages are registered in visiontk's own pyproject.toml exactly as a plugin package
registers its stages, so nothing is special-cased. Names are listed without importing anything;
a stage's module is imported only when the stage is used or described.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from ..errors import OptionError, shown

if TYPE_CHECKING:
    from .stage import Stage

GROUP = "visiontk.stages"


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def stage_names() -> list[str]:
    """Names of all registered stages (nothing is imported)."""
    return sorted(_entry_points())


def load_stage(name: str) -> type[Stage]:
    """The stage class registered under ``name``."""
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(stage_names()) or "none (is visiontk installed?)"
        raise OptionError(f"unknown stage {shown(name)} (stages: {known})")
    try:
        cls = eps[name].load()
    except Exception as exc:
        raise OptionError(f"stage {name}: cannot be loaded ({type(exc).__name__}: {exc})") from None
    return cls


def refresh() -> None:
    """Forget the cached entry points (after installing a plugin in this process)."""
    _entry_points.cache_clear()


def provenance(stage_cls: type) -> str:
    """What identifies a plugin stage's code besides its name and options: its distribution's
    name and version and a hash of the file that defines it, so a run never reuses results an
    older or edited plugin made ("" for visiontk's own stages: visiontk's version says it)."""
    import hashlib
    import sys

    if stage_cls.__module__.split(".")[0] == "visiontk":
        return ""
    ep = _entry_points().get(getattr(stage_cls, "name", ""))
    dist = getattr(ep, "dist", None)
    parts = [f"{dist.name} {dist.version}"] if dist is not None else []
    source = getattr(sys.modules.get(stage_cls.__module__), "__file__", None)
    if source:
        try:
            with open(source, "rb") as fh:
                parts.append(hashlib.sha256(fh.read()).hexdigest()[:16])
        except OSError:  # a module without a readable file: its version alone
            pass
    return " ".join(parts) or stage_cls.__module__
