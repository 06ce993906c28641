"""Scale-space extrema: 3×3×3 candidates and their sub-pixel refinement (Lowe 2004, §3–4).

Everything here is vectorised over all candidates of an octave and written against ``xp``, so
the same code runs on numpy and CuPy. Pixel values are on the 0..255 scale; derivatives are
taken on the 0..1 scale (OpenCV's ``img_scale = 1/255``) so that the contrast threshold keeps
its usual meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import devices
from ..devices import XpArray
from .constants import IMAGE_BORDER, MAX_REFINE_STEPS, VLFEAT_MAX_OFFSET, VLFEAT_MOVE_OFFSET

_IMG_SCALE = 1.0 / 255.0


@dataclass
class Extrema:
    """Refined extrema of one octave: integer sample (layer, row, col), the sub-pixel offsets
    (in layer, row, col units) of the fitted quadratic's extremum, and |D| there (0..1 scale)."""

    layer: XpArray
    row: XpArray
    col: XpArray
    offset_layer: XpArray
    offset_row: XpArray
    offset_col: XpArray
    response: XpArray

    def __len__(self) -> int:
        return int(self.layer.shape[0])


def prethreshold(contrast_threshold: float, n_octave_layers: int) -> float:
    """|D| a pixel must exceed (0..255 scale) before it is tested as an extremum.

    Half the final contrast threshold, as OpenCV does (0.5 · 0.04 / 3 · 255 ≈ 1.7); OpenCV
    floors it on its fixed-point scale, which is within 1/256 of this.
    """
    return 0.5 * contrast_threshold / n_octave_layers * 255.0


def find_candidates(octave, threshold: float, xp):
    """Pixels of the inner DoG layers of an :class:`~.scale_space.Octave` that are extrema of
    their 3×3×3 neighbourhood with |D| > ``threshold``.

    Ties count as extrema (``>=``, as OpenCV). Returns int arrays (layer, row, col), layer
    counted in the DoG stack (1..n_octave_layers).

    Example
    -------
    >>> from visiontk import io
    >>> from visiontk._sift.scale_space import scale_space
    >>> gray = io.load_gray("sample_images/coffee.png")
    >>> octave = scale_space(gray, sigma=1.6, n_octave_layers=3, upsample=True, xp=np)[1]
    >>> layer, row, col = find_candidates(octave, 1.7, np)
    >>> len(layer) > 100, int(layer.min()) >= 1
    (True, True)
    """
    dogs = octave.dogs
    _, h, w = dogs.shape
    local_max = xp.stack([devices.max_filter_3x3(d) for d in dogs])
    local_min = xp.stack([devices.min_filter_3x3(d) for d in dogs])
    max27 = xp.maximum(xp.maximum(local_max[:-2], local_max[1:-1]), local_max[2:])
    min27 = xp.minimum(xp.minimum(local_min[:-2], local_min[1:-1]), local_min[2:])
    centre = dogs[1:-1]
    is_peak = (centre > threshold) & (centre >= max27)
    is_pit = (centre < -threshold) & (centre <= min27)
    b = IMAGE_BORDER
    inner = (is_peak | is_pit)[:, b : h - b, b : w - b]
    layer, row, col = xp.nonzero(inner)
    return layer + 1, row + b, col + b


def _local_fit(gauss, idx, h: int, w: int):
    """Gradient and Hessian of D by central differences (0..1 scale) at flat DoG indices
    ``idx``, reading D = G[l+1] − G[l] from the flattened Gaussian stack ``gauss``."""
    plane = h * w

    def dog(offset):
        at = idx + offset
        return gauss[at + plane] - gauss[at]

    v = dog(0)
    x1, x0 = dog(1), dog(-1)
    y1, y0 = dog(w), dog(-w)
    s1, s0 = dog(plane), dog(-plane)
    half = 0.5 * _IMG_SCALE
    quarter = 0.25 * _IMG_SCALE
    gradient = ((x1 - x0) * half, (y1 - y0) * half, (s1 - s0) * half)
    dxx = (x1 + x0 - 2 * v) * _IMG_SCALE
    dyy = (y1 + y0 - 2 * v) * _IMG_SCALE
    dss = (s1 + s0 - 2 * v) * _IMG_SCALE
    dxy = (dog(w + 1) - dog(w - 1) - dog(-w + 1) + dog(-w - 1)) * quarter
    dxs = (dog(plane + 1) - dog(plane - 1) - dog(-plane + 1) + dog(-plane - 1)) * quarter
    dys = (dog(plane + w) - dog(plane - w) - dog(-plane + w) + dog(-plane - w)) * quarter
    return v, gradient, (dxx, dyy, dss, dxy, dxs, dys)


def _solve_symmetric3(hessian, gradient):
    """Solve H·X = g for many 3×3 symmetric systems by Doolittle LU without pivoting, the
    factorisation OpenCV uses here (singular systems give non-finite X and are dropped)."""
    dxx, dyy, dss, dxy, dxs, dys = hessian
    g0, g1, g2 = gradient
    l10 = dxy / dxx
    l20 = dxs / dxx
    u11 = dyy - l10 * dxy
    u12 = dys - l10 * dxs
    l21 = (dys - l20 * dxy) / u11
    u22 = (dss - l20 * dxs) - l21 * u12
    v1 = g1 - l10 * g0
    v2 = g2 - l20 * g0 - l21 * v1
    x2 = v2 / u22
    x1 = (v1 - x2 * u12) / u11
    x0 = (g0 - x2 * dxs - x1 * dxy) / dxx
    return x0, x1, x2


def refine_extrema(
    gaussians,
    layer,
    row,
    col,
    *,
    n_octave_layers: int,
    contrast_threshold: float,
    edge_threshold: float,
    xp,
    refinement: str = "opencv",
) -> Extrema:
    """Fit a 3-D quadratic around each candidate, moving to the neighbouring sample while the
    fitted extremum lies more than half a sample away (up to 5 steps), then keep those with
    enough contrast and not on an edge (Lowe 2004, §4 and §4.1).

    ``refinement="tolerant"`` keeps extrema as VLFeat (and so COLMAP) does instead: see
    :func:`refine_extrema_tolerant`.

    Example
    -------
    A blob centred between pixels is found where it is, to a tenth of a pixel (octave 0 of
    an upsampled scale space: input pixels, less the quarter pixel of the upsampling):

    >>> from visiontk._sift.scale_space import UPSAMPLE_SHIFT, scale_space
    >>> yy, xx = np.mgrid[:64, :64]
    >>> blob = (200 * np.exp(-((xx - 31.3) ** 2 + (yy - 30.6) ** 2) / 18)).astype(np.float32)
    >>> octave = scale_space(blob, sigma=1.6, n_octave_layers=3, upsample=True, xp=np)[1]
    >>> ext = refine_extrema(octave.gaussians, *find_candidates(octave, 1.7, np),
    ...                      n_octave_layers=3, contrast_threshold=0.04, edge_threshold=10, xp=np)
    >>> x, y = ext.col + ext.offset_col, ext.row + ext.offset_row   # one extremum
    >>> round(float(x[0] + UPSAMPLE_SHIFT), 1), round(float(y[0] + UPSAMPLE_SHIFT), 1)
    (31.3, 30.6)
    """
    if refinement == "tolerant":
        return refine_extrema_tolerant(
            gaussians,
            layer,
            row,
            col,
            n_octave_layers=n_octave_layers,
            contrast_threshold=contrast_threshold,
            edge_threshold=edge_threshold,
            xp=xp,
        )
    _, h, w = gaussians.shape
    flat, layer, row, col, offsets, fits = _start_refinement(gaussians, layer, row, col, xp)
    active = xp.arange(layer.shape[0])
    converged = xp.zeros(layer.shape[0], dtype=bool)
    b = IMAGE_BORDER
    with _ignore_float_errors(xp):
        for _ in range(MAX_REFINE_STEPS):
            if active.shape[0] == 0:
                break
            v, gradient, hessian, (xs, xr, xc) = _fit(flat, layer, row, col, active, h, w)
            done = (xp.abs(xc) < 0.5) & (xp.abs(xr) < 0.5) & (xp.abs(xs) < 0.5)
            finished = active[done]
            converged[finished] = True
            offsets[0, finished] = xs[done]
            offsets[1, finished] = xr[done]
            offsets[2, finished] = xc[done]
            for store, value in zip(fits, (v, *gradient, *hessian), strict=True):
                store[finished] = value[done]
            # The rest move to the nearest sample of the fitted extremum, if it stays inside.
            moving = ~done & xp.isfinite(xc) & xp.isfinite(xr) & xp.isfinite(xs)
            moving &= (xp.abs(xc) < 1e6) & (xp.abs(xr) < 1e6) & (xp.abs(xs) < 1e6)
            keep = active[moving]
            layer[keep] += xp.rint(xs[moving]).astype(xp.int64)
            row[keep] += xp.rint(xr[moving]).astype(xp.int64)
            col[keep] += xp.rint(xc[moving]).astype(xp.int64)
            inside = (
                (layer[keep] >= 1)
                & (layer[keep] <= n_octave_layers)
                & (row[keep] >= b)
                & (row[keep] < h - b)
                & (col[keep] >= b)
                & (col[keep] < w - b)
            )
            active = keep[inside]

        contrast, strong = _contrast_and_edge_tests(
            fits, offsets, n_octave_layers, contrast_threshold, edge_threshold, xp
        )
        keep = converged & strong
    xs, xr, xc = offsets
    return Extrema(
        layer[keep], row[keep], col[keep], xs[keep], xr[keep], xc[keep], xp.abs(contrast[keep])
    )


def _start_refinement(gaussians, layer, row, col, xp):
    """The flat Gaussian stack, int64 copies of the samples (they move), and zeroed offsets
    and fits (v, g0..g2, 6 Hessian terms) for every candidate."""
    count = layer.shape[0]
    return (
        gaussians.reshape(-1),
        layer.astype(xp.int64),
        row.astype(xp.int64),
        col.astype(xp.int64),
        xp.zeros((3, count), dtype=xp.float32),
        [xp.zeros(count, dtype=xp.float32) for _ in range(10)],
    )


def _fit(flat, layer, row, col, active, h, w):
    """The quadratic fit at the current samples of the ``active`` candidates: D, gradient,
    Hessian, and the offsets (layer, row, col) of its extremum."""
    idx = (layer[active] * h + row[active]) * w + col[active]
    v, gradient, hessian = _local_fit(flat, idx, h, w)
    x0, x1, x2 = _solve_symmetric3(hessian, gradient)
    return v, gradient, hessian, (-x2, -x1, -x0)


def _contrast_and_edge_tests(
    fits, offsets, n_octave_layers, contrast_threshold, edge_threshold, xp
):
    """|D| at the fitted extremum, and which pass the contrast and edge tests."""
    v, g0, g1, g2, dxx, dyy, _dss, dxy, _dxs, _dys = fits
    xs, xr, xc = offsets
    contrast = v * _IMG_SCALE + 0.5 * (g0 * xc + g1 * xr + g2 * xs)
    trace = dxx + dyy
    det = dxx * dyy - dxy * dxy
    strong = (
        (xp.abs(contrast) * n_octave_layers >= contrast_threshold)
        & (det > 0)
        & (trace * trace * edge_threshold < (edge_threshold + 1) ** 2 * det)
    )
    return contrast, strong


def refine_extrema_tolerant(
    gaussians,
    layer,
    row,
    col,
    *,
    n_octave_layers: int,
    contrast_threshold: float,
    edge_threshold: float,
    xp,
) -> Extrema:
    """VLFeat's tolerances (``vl_sift_detect``, what COLMAP runs) with OpenCV's moves: up to 5
    fits, moving one sample in x, y and scale wherever the fitted offset exceeds
    :data:`~.constants.VLFEAT_MOVE_OFFSET`; the last fit is kept when its offsets are all
    under :data:`~.constants.VLFEAT_MAX_OFFSET` samples, with the same contrast and edge tests.

    OpenCV drops every candidate whose fit has not settled within half a sample; VLFeat's
    tolerance keeps more keypoints at the same threshold and they are re-detected more often,
    a large part of why COLMAP's SIFT beats OpenCV's. VLFeat itself never moves in scale, so
    its fits extrapolate up to 1.5 layers; moving in scale too, as OpenCV does, gives better
    homographies there (bench/sift_bench.py; docs/benchmarks.md, "What made the
    difference").

    Example
    -------
    >>> from visiontk._sift.scale_space import scale_space
    >>> yy, xx = np.mgrid[:64, :64]
    >>> blob = (200 * np.exp(-((xx - 31.3) ** 2 + (yy - 30.6) ** 2) / 18)).astype(np.float32)
    >>> octave = scale_space(blob, sigma=1.6, n_octave_layers=3, upsample=False, xp=np)[0]
    >>> ext = refine_extrema_tolerant(octave.gaussians, *find_candidates(octave, 1.7, np),
    ...                               n_octave_layers=3, contrast_threshold=0.04,
    ...                               edge_threshold=10, xp=np)
    >>> x, y = ext.col + ext.offset_col, ext.row + ext.offset_row
    >>> round(float(x[0]), 1), round(float(y[0]), 1)
    (31.3, 30.6)
    """
    _, h, w = gaussians.shape
    flat, layer, row, col, offsets, fits = _start_refinement(gaussians, layer, row, col, xp)
    active = xp.arange(layer.shape[0])
    b = IMAGE_BORDER
    with _ignore_float_errors(xp):
        for step in range(MAX_REFINE_STEPS):
            if active.shape[0] == 0:
                break
            v, gradient, hessian, (xs, xr, xc) = _fit(flat, layer, row, col, active, h, w)
            for store, value in zip(fits, (v, *gradient, *hessian), strict=True):
                store[active] = value
            offsets[0, active] = xs
            offsets[1, active] = xr
            offsets[2, active] = xc
            move_c = _step(xc, col[active], b, w - b, xp)
            move_r = _step(xr, row[active], b, h - b, xp)
            move_s = _step(xs, layer[active], 1, n_octave_layers + 1, xp)
            moving = (move_c != 0) | (move_r != 0) | (move_s != 0)
            if step == MAX_REFINE_STEPS - 1:
                break
            col[active] += move_c
            row[active] += move_r
            layer[active] += move_s
            active = active[moving]
        contrast, strong = _contrast_and_edge_tests(
            fits, offsets, n_octave_layers, contrast_threshold, edge_threshold, xp
        )
        xs, xr, xc = offsets
        keep = (
            strong
            & (xp.abs(xc) < VLFEAT_MAX_OFFSET)
            & (xp.abs(xr) < VLFEAT_MAX_OFFSET)
            & (xp.abs(xs) < VLFEAT_MAX_OFFSET)
            # the refined scale stays inside the octave's DoG stack
            & (layer + xs >= 0)
            & (layer + xs <= n_octave_layers + 1)
        )
    return Extrema(
        layer[keep], row[keep], col[keep], xs[keep], xr[keep], xc[keep], xp.abs(contrast[keep])
    )


def _step(offset, position, low, high, xp):
    """−1, 0 or +1: VLFeat's move towards a fitted offset beyond VLFEAT_MOVE_OFFSET, where the
    new sample stays in [low, high) (NaN offsets do not move)."""
    up = (offset > VLFEAT_MOVE_OFFSET) & (position + 1 < high)
    down = (offset < -VLFEAT_MOVE_OFFSET) & (position - 1 >= low)
    return up.astype(xp.int64) - down.astype(xp.int64)


class _ignore_float_errors:
    """Silence numpy's divide-by-zero warnings from singular fits (they are filtered out)."""

    def __init__(self, xp):
        self._xp = xp
        self._state = None

    def __enter__(self):
        if devices.is_numpy(self._xp):  # CuPy does not warn on division by zero
            self._state = self._xp.seterr(divide="ignore", invalid="ignore", over="ignore")

    def __exit__(self, *exc):
        if self._state is not None:
            self._xp.seterr(**self._state)
