"""visiontk: SIFT features, matching and robust two-view geometry.

>>> import visiontk
>>> result = visiontk.match_images("sample_images/coffee.png", "sample_images/coffee_warped.png")
>>> result.geometry.n_inliers
"""

__version__ = "0.1.0"

# The function visiontk.sift shadows the subpackage of the same name on purpose: users call
# visiontk.sift(image); the implementation stays importable as visiontk.sift.<module>.
from .errors import VisiontkError
from .features import Features, Matches
from .geometry import Geometry, estimate_fundamental, estimate_homography
from .matching import match
from .sift import SiftOptions, iter_sift, sift_batch
from .sift import sift as _sift_function
from .two_view import TwoViewResult, match_images
from .vit.attention import dino_attention
from .viz import draw_matches

sift = _sift_function

__all__ = ["Features", "Geometry", "Matches", "SiftOptions", "TwoViewResult", "VisiontkError",
           "__version__", "dino_attention", "draw_matches", "estimate_fundamental",
           "estimate_homography", "iter_sift", "match",
           "match_images", "sift", "sift_batch"]
