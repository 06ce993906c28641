"""SIFT constants, with where each comes from (Lowe 2004 and OpenCV's features2d/src/sift.*)."""

#: Blur assumed already present in the input image (Lowe 2004, §3.3; OpenCV SIFT_INIT_SIGMA).
ASSUMED_BLUR = 0.5
#: Blur of the first Gaussian of every octave (Lowe 2004; OpenCV default sigma).
SIGMA = 1.6
#: Scales sampled per octave (Lowe 2004; OpenCV nOctaveLayers).
N_OCTAVE_LAYERS = 3
#: Contrast threshold on |D| at the refined extremum, before division by the layer count (OpenCV).
CONTRAST_THRESHOLD = 0.04
#: Largest ratio of principal curvatures kept by the edge test (Lowe 2004, §4.1: r = 10).
EDGE_THRESHOLD = 10.0
#: Pixels at each octave's edge where no extremum is sought (OpenCV SIFT_IMG_BORDER).
IMAGE_BORDER = 5
#: Quadratic refinement steps before a candidate is dropped (OpenCV SIFT_MAX_INTERP_STEPS).
MAX_REFINE_STEPS = 5

#: VLFeat's localisation (vl_sift_detect, what COLMAP runs): move to the neighbouring pixel
#: when the fitted offset exceeds this, in x or y only ...
VLFEAT_MOVE_OFFSET = 0.6
#: ... and keep the extremum when every offset (x, y, scale) of its last fit is under this.
VLFEAT_MAX_OFFSET = 1.5

#: VLFeat smooths orientation histograms with a [1 1 1]/3 box this many times (sift.c).
VLFEAT_ORI_SMOOTHING_PASSES = 6

#: Orientation histogram bins (Lowe 2004, §5).
ORI_BINS = 36
#: Gaussian weight sigma of the orientation window, in units of the keypoint scale (Lowe: 1.5).
ORI_SIGMA_FACTOR = 1.5
#: Orientation window radius in units of the keypoint scale (OpenCV: 3 × 1.5).
ORI_RADIUS_FACTOR = 3 * ORI_SIGMA_FACTOR
#: A histogram peak at least this fraction of the highest one makes another keypoint (Lowe: 0.8).
ORI_PEAK_RATIO = 0.8

#: Descriptor grid width in cells (Lowe 2004: 4×4 cells).
DESCR_WIDTH = 4
#: Orientation bins per descriptor cell (Lowe 2004: 8).
DESCR_BINS = 8
#: Cell width in units of the keypoint scale (OpenCV SIFT_DESCR_SCL_FCTR).
DESCR_SCALE_FACTOR = 3.0
#: Clip of normalised descriptor entries (Lowe 2004, §6.1: 0.2).
DESCR_MAG_THRESHOLD = 0.2
#: Factor turning the unit descriptor into bytes (OpenCV SIFT_INT_DESCR_FCTR).
DESCR_INT_FACTOR = 512.0

#: atan(t) in degrees on [0, 1] as p1·t + p3·t³ + p5·t⁵ + p7·t⁷: the odd minimax polynomial of
#: OpenCV's fastAtan2 (core/src/mathfuncs_core.simd.hpp; error about 0.01°), used by the CPU
#: and GPU kernels alike for gradient angles.
ATAN_P1, ATAN_P3, ATAN_P5, ATAN_P7 = 57.283627, -18.667446, 8.914001, -2.539725
