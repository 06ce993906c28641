"""Which channels of a layer belong to which branch.

A conv with ``groups = g`` sees its input channels as g independent ranges, so the previous
layer's units fall into g branches that cannot exchange information. When the file does not
record ``groups`` (state dicts, .npz), it follows from shapes: the next conv's input channels
per group × g = this conv's output channels. Inception-style branches (concatenated outputs of
parallel convs) are given by the user: ``1x1=0:64,3x3=64:192,5x5=192:224,pool=224:256``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from ..errors import OptionError
from .weights import ConvLayer


@dataclass(frozen=True)
class Branch:
    name: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


_SPEC = re.compile(r"^\s*([\w.-]+)\s*=\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_branch_spec(spec: str, channels: int | None = None) -> list[Branch]:
    """Branches from ``name=start:stop,...`` (stop exclusive), checked to be disjoint and,
    when ``channels`` is given, inside it."""
    branches = []
    for part in spec.split(","):
        m = _SPEC.match(part)
        if not m:
            raise OptionError(f"branch spec {part.strip()!r}: expected name=start:stop")
        name, start, stop = m.group(1), int(m.group(2)), int(m.group(3))
        if stop <= start:
            raise OptionError(f"branch {name}: stop {stop} must be greater than start {start}")
        branches.append(Branch(name, start, stop))
    branches.sort(key=lambda b: b.start)
    for a, b in itertools.pairwise(branches):
        if b.start < a.stop:
            raise OptionError(f"branches {a.name} and {b.name} overlap")
    if channels is not None and branches[-1].stop > channels:
        raise OptionError(
            f"branch {branches[-1].name} ends at {branches[-1].stop}, but the "
            f"layer has {channels} channels"
        )
    if len(branches) < 2:
        raise OptionError("give at least two branches")
    return branches


#: How a user gives branches that cannot be inferred, from the command line or a pipeline.
GIVE_BRANCHES = "give the branches (--branches, or the branches stage's option of that name)"


def infer_branches(layer: ConvLayer, following: ConvLayer | None) -> list[Branch]:
    """Branches of ``layer``'s output channels implied by the conv that reads them."""
    if following is None:
        raise OptionError(f"layer {layer.name} is the last conv: {GIVE_BRANCHES}")
    groups = following.groups
    if groups is None:
        if layer.out_channels % following.in_per_group:
            raise OptionError(
                f"{following.name} takes {following.in_per_group} channels per "
                f"group, which does not divide {layer.name}'s "
                f"{layer.out_channels}: {GIVE_BRANCHES}"
            )
        groups = layer.out_channels // following.in_per_group
    elif following.in_per_group * groups != layer.out_channels:
        raise OptionError(
            f"{following.name} reads {groups} groups of {following.in_per_group} "
            f"channels = {groups * following.in_per_group}, but {layer.name} has "
            f"{layer.out_channels} units: not a plain chain; {GIVE_BRANCHES}"
        )
    if groups < 2:
        raise OptionError(
            f"{following.name} is not grouped, so {layer.name} has no branches: "
            f"{GIVE_BRANCHES} for concatenated (Inception-style) branches"
        )
    size = layer.out_channels // groups
    return [Branch(f"group{g}", g * size, (g + 1) * size) for g in range(groups)]
