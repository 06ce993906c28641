"""The pipeline runner: declared stages, registered by entry points, run over image folders.

The names below load with their modules on first use: a pipeline worker imports only what its
tasks need (the runner and the entry-point registry would otherwise load in every worker).
"""

import importlib

#: name -> the module of this package that defines it
_LAZY = {
    "PIPELINES": "config",
    "load_stage": "registry",
    "stage_names": "registry",
    "Pipeline": "runner",
    "RunResult": "runner",
    "Stage": "stage",
    "option_fields": "stage",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
