"""The pipeline runner: declared stages, registered by entry points, run over image folders."""

from .config import PRESETS
from .registry import load_stage, stage_names
from .runner import Pipeline, RunResult, resolve_images
from .stage import Stage, option_fields

__all__ = ["PRESETS", "Pipeline", "RunResult", "Stage", "load_stage", "option_fields",
           "resolve_images", "stage_names"]
