"""A visiontk plugin stage, ``sift-grid``: SIFT features spread evenly over the image.

Matching and structure from motion do better when keypoints cover the whole image rather than
crowding where the texture is strongest. This stage runs SIFT as the built-in ``sift`` stage
does, then keeps at most ``per_cell`` of the strongest keypoints in each cell of a
``cells`` × ``cells`` grid. It uses only visiontk's public names (``visiontk.extract``,
``visiontk.pipeline.Stage``, ``visiontk.errors``): anything the built-in stage does, a plugin can.

Install it beside visiontk (``pip install ./examples/grid_sift``) and use it in a pipeline file::

    [[stages]]
    name = "load"
    [[stages]]
    name = "sift-grid"
    cells = 8
    per_cell = 64
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from visiontk.devices import Device
from visiontk.errors import OptionError
from visiontk.extract import SiftBackend, SiftOptions, in_original_pixels, sift_backend, sift_gray
from visiontk.features import Features
from visiontk.pipeline import Stage


@dataclass(frozen=True)
class GridSiftOptions(SiftOptions):
    """Every SIFT option (unset ones take the preset's), the device, and the grid."""

    device: Device = "auto"
    cells: int = 8  # the grid is cells × cells
    per_cell: int = 64  # keypoints kept in each cell at most (the strongest)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cells < 1:
            raise OptionError(f"stage sift-grid: cells must be >= 1, got {self.cells}")
        if self.per_cell < 1:
            raise OptionError(f"stage sift-grid: per_cell must be >= 1, got {self.per_cell}")


def strongest_per_cell(
    features: Features, shape: tuple[int, int], cells: int, per_cell: int
) -> Features:
    """The ``per_cell`` strongest keypoints of each grid cell, strongest first overall."""
    h, w = shape
    column = np.clip((features.xy[:, 0] * cells / w).astype(int), 0, cells - 1)
    row = np.clip((features.xy[:, 1] * cells / h).astype(int), 0, cells - 1)
    cell = row * cells + column
    # features come sorted strongest first, so a stable sort by cell keeps that order within it
    order = np.argsort(cell, kind="stable")
    sorted_cells = cell[order]
    first = np.searchsorted(sorted_cells, sorted_cells)  # where each one's cell starts
    rank = np.arange(len(order)) - first
    return features.subset(np.sort(order[rank < per_cell]))


class GridSiftStage(Stage):
    """SIFT features, at most ``per_cell`` of the strongest in each cell of a grid."""

    name = "sift-grid"
    kind = "image"
    inputs = ("image", "image_size", "scale")
    outputs = ("features",)
    Options = GridSiftOptions

    #: resolved on the first image in each worker (stages travel to workers unresolved)
    _backend: SiftBackend | None = None

    def run(self, context: dict[str, Any]) -> dict[str, Any]:
        if self._backend is None:
            self._backend = sift_backend(self.options.device)
        image = context["image"]
        found = sift_gray(image, self.options, self._backend)
        kept = strongest_per_cell(found, image.shape, self.options.cells, self.options.per_cell)
        size = context.get("image_size", image.shape)
        return {"features": in_original_pixels(kept, context.get("scale", (1.0, 1.0)), size)}
