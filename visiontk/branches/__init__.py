"""Branch specialization (Voss et al., Distill 2021): how branched CNNs sort their features."""

from .analysis import BranchAnalysis, analyse
from .structure import Branch, parse_branch_spec
from .weights import ConvLayer, read_conv_layers

__all__ = [
    "Branch",
    "BranchAnalysis",
    "ConvLayer",
    "analyse",
    "parse_branch_spec",
    "read_conv_layers",
]
