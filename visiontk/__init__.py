"""visiontk: SIFT features, matching and robust two-view geometry, on the CPU (and GPU soon)."""

__version__ = "0.1.0"

from .errors import VisiontkError  # noqa: E402
from .features import Features, Matches  # noqa: E402
from .sift import SiftOptions  # noqa: E402
from .sift import sift as _sift_function  # noqa: E402

sift = _sift_function

__all__ = ["Features", "Matches", "SiftOptions", "VisiontkError", "sift", "__version__"]
