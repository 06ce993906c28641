"""visiontk: SIFT features, matching and robust two-view geometry.

>>> import visiontk
>>> result = visiontk.match_images("sample_images/graffiti_a.png", "sample_images/graffiti_b.png")
>>> result.geometry.n_inliers
"""

__version__ = "0.1.0"

# The function visiontk.sift shadows the subpackage of the same name on purpose: users call
# visiontk.sift(image); the implementation stays importable as visiontk.sift.<module>.
from .errors import VisiontkError  # noqa: E402
from .features import Features, Matches  # noqa: E402
from .geometry import Geometry, estimate_fundamental, estimate_homography  # noqa: E402
from .matching import match  # noqa: E402
from .sift import SiftOptions  # noqa: E402
from .sift import sift as _sift_function  # noqa: E402
from .two_view import TwoViewResult, match_images  # noqa: E402
from .viz import draw_matches  # noqa: E402

sift = _sift_function

__all__ = ["Features", "Geometry", "Matches", "SiftOptions", "TwoViewResult", "VisiontkError",
           "draw_matches", "estimate_fundamental", "estimate_homography", "match",
           "match_images", "sift", "__version__"]
