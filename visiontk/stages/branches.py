"""Per-file stage ``branches``: a branch-specialization report for each weights file.

Run it over checkpoints rather than photos, e.g.
``visiontk run branches --images "checkpoints/*.pth" --out reports/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..branches.weights import WEIGHT_SUFFIXES
from ..pipeline.stage import Stage


@dataclass(frozen=True)
class BranchesOptions:
    layer: str = ""  # empty: the first conv in the file
    branches: str = ""  # empty: from the next conv's groups; else "name=start:stop,..."


class BranchesStage(Stage):
    """Branch specialization report of a CNN weights file, written to OUT/branches/<name>/."""

    name = "branches"
    kind = "image"
    inputs = ("path",)
    outputs = ("branches",)
    Options = BranchesOptions
    folders = ("branches",)
    report_picture = "branches/{stem}/histograms.png"
    report_page = "branches/{stem}/report.html"
    #: a folder given to --images yields weights files, not images
    accepts = WEIGHT_SUFFIXES

    def check(self) -> None:
        if self.options.branches:
            from ..branches.structure import parse_branch_spec

            parse_branch_spec(self.options.branches)

    def run(self, context: dict[str, Any]) -> dict[str, Any]:
        from ..branches import analyse, read_conv_layers
        from ..branches.report import write_report

        result = analyse(
            read_conv_layers(context["path"]),
            layer=self.options.layer or None,
            branches=self.options.branches or None,
        )
        output = context["output"]
        data = write_report(result, output.folder("branches") / output.stem)
        return {"branches": {"p_value": data["p_value"], "layer": data["layer"]}}
