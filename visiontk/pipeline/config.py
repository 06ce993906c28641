"""Pipeline files (TOML, or YAML read with yaml.safe_load) and named presets.

A pipeline file lists stages in order, each with its options::

    # sift-match.toml
    [[stages]]
    name = "load"
    max_side = 1600

    [[stages]]
    name = "sift"
    max_features = 8000

    [[stages]]
    name = "pairs-sequential"
    window = 10

    [[stages]]
    name = "match"

    [[stages]]
    name = "verify"
    model = "fundamental"

The same in YAML: ``stages: [{name: load, max_side: 1600}, {name: sift}, ...]``. Without a
pair-selection stage, per-pair stages see every pair (``pairs-exhaustive``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import OptionError, shown

PIPELINES: dict[str, list[dict[str, Any]]] = {
    "sift-match": [
        {"name": "load"},
        {"name": "sift"},
        {"name": "pairs-exhaustive"},
        {"name": "match"},
        {"name": "verify", "model": "fundamental"},
    ],
    "sift-match-sequential": [
        {"name": "load"},
        {"name": "sift"},
        {"name": "pairs-sequential", "window": 5},
        {"name": "match"},
        {"name": "verify", "model": "fundamental"},
    ],
    "sift": [{"name": "load"}, {"name": "sift"}],
    # photos to a 3-D model: the accurate preset (COLMAP's cap), images scaled down past
    # 3200 pixels as COLMAP's extractor does, at COLMAP's peak threshold (contrast 0.02: the
    # preset's 0.017 cost rotation accuracy where every view has its own noise; see
    # docs/benchmarks.md); every pair of a small set, each image's 30 nearest by retrieval
    # beyond that
    "sfm": [
        {"name": "load", "max_side": 3200},
        {"name": "sift", "contrast_threshold": 0.02},
        {"name": "pairs-retrieval", "neighbours": 30},
        {"name": "match"},
        {"name": "verify", "model": "fundamental"},
        {"name": "reconstruct"},
    ],
    "dino-attention": [{"name": "dino-attention"}],
    "branches": [{"name": "branches"}],
}


def read_spec(source: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Stage list from a preset name or a .toml / .yaml / .yml file."""
    text = str(source)
    if text in PIPELINES:
        return [dict(s) for s in PIPELINES[text]]
    path = Path(source)
    if not path.exists():
        raise OptionError(
            f"{path}: no such pipeline file or preset (presets: {', '.join(PIPELINES)})"
        )
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise OptionError(f"{path}: pipeline file is not UTF-8 text") from None
    except OSError as exc:
        raise OptionError(f"{path}: cannot read ({exc.strerror})") from None
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            data = tomllib.loads(raw)
        except tomllib.TOMLDecodeError as exc:
            raise OptionError(f"{path}: not valid TOML ({exc})") from None
        except RecursionError:
            raise OptionError(f"{path}: nested too deeply to be a pipeline file") from None
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise OptionError(f"{path}: not valid YAML ({first})") from None
        except RecursionError:
            raise OptionError(f"{path}: nested too deeply to be a pipeline file") from None
    else:
        raise OptionError(f"{path}: pipeline files are .toml, .yaml or .yml")
    unknown = [k for k in data if k != "stages"] if isinstance(data, dict) else []
    if unknown:  # a misspelt or misplaced table would otherwise be ignored in silence
        raise OptionError(
            f"{path}: unknown top-level key {shown(unknown[0])} (a pipeline "
            "file holds 'stages' only)"
        )
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, list) or not stages:
        raise OptionError(f"{path}: expected a non-empty list 'stages'")
    for i, stage in enumerate(stages, 1):
        if not isinstance(stage, dict) or not isinstance(stage.get("name"), str):
            raise OptionError(f"{path}: stage {i} needs a name")
    return [dict(s) for s in stages]
