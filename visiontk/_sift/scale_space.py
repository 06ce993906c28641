"""Gaussian and difference-of-Gaussians scale space, octave by octave (Lowe 2004, §3)."""

from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from .. import devices
from ..devices import XpArray
from .constants import ASSUMED_BLUR, IMAGE_BORDER


@dataclass
class Octave:
    """One octave of the scale space.

    ``index`` is the octave number in OpenCV's sense: -1 for the doubled image, 0 for the input
    resolution, and so on; one octave pixel spans ``2**index`` input pixels.
    ``gaussians`` is (n_layers+3, h, w) float32; ``dogs``, their differences
    (n_layers+2, h, w), is built on first use: the compiled CPU path never needs it whole
    (it reads D = G[l+1] − G[l] where it looks), which saves a pass and 40% of the memory.
    """

    index: int
    gaussians: XpArray
    _dogs: XpArray | None = field(default=None, repr=False)

    @property
    def dogs(self) -> XpArray:
        if self._dogs is None:
            self._dogs = self.gaussians[1:] - self.gaussians[:-1]
        return self._dogs

    @property
    def scale(self) -> float:
        return 2.0**self.index


#: Where pixel x of any octave lies in the input: x · 2^octave + UPSAMPLE_SHIFT (input pixels).
#: Doubling by linear interpolation between pixel centres (what cv2.resize does, and OpenCV's
#: SIFT by default) puts doubled pixel X at input X/2 − 1/4; every coarser octave inherits
#: that quarter pixel. OpenCV reports keypoints without it (a +0.25 px bias); we subtract it.
UPSAMPLE_SHIFT = -0.25


def upsample_2x(image, xp):
    """Double an image by linear interpolation between pixel centres, border replicated.

    Doubled pixel ``X`` samples the input at ``X/2 − 1/4``: each output pixel mixes two
    inputs 3:1, a uniform smoothing. (Mapping ``i`` to ``2i`` instead, OpenCV's
    ``enable_precise_upscale``, keeps raw pixels on even positions and averages on odd ones;
    its uneven smoothing re-detects fewer keypoints under viewpoint change, as
    bench/sift_bench.py measures.) :data:`UPSAMPLE_SHIFT` corrects the coordinates.

    Example
    -------
    >>> upsample_2x(np.array([[0., 4.]], np.float32), np)[0]
    array([0., 1., 3., 4.], dtype=float32)
    """
    h, w = image.shape
    prev_r = xp.concatenate([image[:1], image[:-1]], axis=0)
    next_r = xp.concatenate([image[1:], image[-1:]], axis=0)
    rows = xp.empty((2 * h, w), dtype=xp.float32)
    rows[0::2] = 0.75 * image + 0.25 * prev_r
    rows[1::2] = 0.75 * image + 0.25 * next_r
    prev_c = xp.concatenate([rows[:, :1], rows[:, :-1]], axis=1)
    next_c = xp.concatenate([rows[:, 1:], rows[:, -1:]], axis=1)
    out = xp.empty((2 * h, 2 * w), dtype=xp.float32)
    out[:, 0::2] = 0.75 * rows + 0.25 * prev_c
    out[:, 1::2] = 0.75 * rows + 0.25 * next_c
    return out


def octave_count(height: int, width: int, upsample: bool) -> int:
    """Number of octaves OpenCV builds: round(log2(min side of the base image) − 2), plus one
    for the doubled octave."""
    base = min(height, width) * (2 if upsample else 1)
    return max(int(round(math.log2(base) - 2)) + (1 if upsample else 0), 1)


def layer_sigmas(sigma: float, n_octave_layers: int) -> list[float]:
    """Incremental blurs taking layer i−1 of an octave to layer i (Lowe 2004, k = 2^(1/s))."""
    k = 2.0 ** (1.0 / n_octave_layers)
    sigmas = [sigma]
    for i in range(1, n_octave_layers + 3):
        previous = sigma * k ** (i - 1)
        sigmas.append(math.sqrt((previous * k) ** 2 - previous**2))
    return sigmas


def layer_taps(sigma: float, n_octave_layers: int) -> list:
    """Gaussian kernels taking an octave's base (blur ``sigma``) straight to each of its layers
    (blur sigma·k^i): sigma_i = sqrt((sigma·k^i)² − sigma²), float32 taps reaching 4 sigma_i
    as cv2.GaussianBlur chooses for float images; layer 0's kernel is [1].

    What the GPU's fused blur applies (sift.cu, ``octave_blur_dog``).

    Example
    -------
    >>> [len(t) for t in layer_taps(1.6, 3)]
    [1, 11, 17, 23, 31, 41]
    """
    import cv2

    k = 2.0 ** (1.0 / n_octave_layers)
    taps: list[np.ndarray] = [np.ones(1, np.float32)]
    for i in range(1, n_octave_layers + 3):
        s = math.sqrt((sigma * k**i) ** 2 - sigma**2)
        size = int(round(s * 8 + 1)) | 1
        taps.append(cv2.getGaussianKernel(size, s, cv2.CV_32F).ravel())
    return taps


def scale_space(
    gray,
    *,
    sigma: float,
    n_octave_layers: int,
    upsample: bool,
    xp,
    n_octaves: int = 0,
    double=None,
    octave_blur=None,
    allocate=None,
) -> list[Octave]:
    """Build the Gaussian and DoG octaves of a grey float32 image (0..255).

    Returns a list of :class:`Octave`, finest first: :func:`octave_count` of them, at most
    ``n_octaves`` (0: no cap). Octaves too small to hold an extremum inside SIFT's image
    border are not built. ``double(image)`` doubles the image (default:
    :func:`upsample_2x`; the CPU backends pass cv2's equal and faster form). Layers are blurred
    one from the next, as OpenCV does; ``octave_blur(base, sigma, n_octave_layers, level)``, if
    given (the GPU's fused kernel), builds an octave's (gaussians, dogs) at once instead, or
    returns None to decline. ``allocate(shape)``, if given, supplies each octave's float32
    Gaussian stack (the CPU backend's buffers kept for the next image of the same size).

    Example
    -------
    >>> gray = np.zeros((64, 80), np.float32)
    >>> octaves = scale_space(gray, sigma=1.6, n_octave_layers=3, upsample=True, xp=np)
    >>> octaves[0].index, octaves[0].gaussians.shape[0]
    (-1, 6)
    """
    height, width = gray.shape
    first = -1 if upsample else 0
    if upsample:
        base = double(gray) if double is not None else upsample_2x(gray, xp)
        initial = math.sqrt(max(sigma**2 - (2 * ASSUMED_BLUR) ** 2, 0.01))
    else:
        base = gray
        initial = math.sqrt(max(sigma**2 - ASSUMED_BLUR**2, 0.01))
    base = xp.ascontiguousarray(base, dtype=xp.float32)
    sigmas = layer_sigmas(sigma, n_octave_layers)
    n_layers = n_octave_layers + 3

    octaves = []
    count = octave_count(height, width, upsample)
    blurred = False  # whether ``base`` has had the initial blur (every octave's after the first)
    for o in range(min(count, n_octaves) if n_octaves else count):
        h, w = base.shape
        if min(h, w) <= 2 * IMAGE_BORDER + 2:
            break
        fused = None
        if octave_blur is not None:
            if not blurred:
                base, blurred = devices.gaussian_blur(base, initial), True
            fused = octave_blur(base, sigma, n_octave_layers, o)
        if fused is None:
            shape = (n_layers, h, w)
            gaussians = allocate(shape) if allocate else xp.empty(shape, dtype=xp.float32)
            if blurred:
                gaussians[0] = base
            else:  # the initial blur written straight into the stack: no copy
                devices.gaussian_blur(base, initial, out=gaussians[0])
            for i in range(1, n_layers):
                devices.gaussian_blur(gaussians[i - 1], sigmas[i], out=gaussians[i])
            octaves.append(Octave(first + o, gaussians))
        else:
            gaussians, dogs = fused
            octaves.append(Octave(first + o, gaussians, dogs))
        # The next octave starts from the layer with twice the base blur, taken every 2nd pixel.
        nxt = gaussians[n_octave_layers]
        base, blurred = xp.ascontiguousarray(nxt[: (h // 2) * 2 : 2, : (w // 2) * 2 : 2]), True
    return octaves


class StackPool(threading.local):
    """The float32 buffers of the last image's scale space (the doubled image, each octave's
    Gaussian stack), kept per thread for the next image of the same size: a fresh stack of a
    doubled 1080p image is 200 MB that the kernel faults in and zeroes page by page on first
    write, a large share of the scale space's time.

    A buffer is lent again only when nothing outside the pool still refers to it (an
    :class:`Octave` kept by a caller, or a view of it), so kept results are never overwritten;
    at most :data:`MAX_BYTES` are kept, and :meth:`trim` keeps only the shapes lent since the
    previous trim (the last image's).
    """

    MAX_BYTES = 1 << 30

    def __init__(self) -> None:
        self.held: dict[tuple[int, ...], np.ndarray] = {}
        self.lent: set[tuple[int, ...]] = set()

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        self.lent.add(shape)
        if shape in self.held and _references(self.held, shape) <= _UNSHARED:
            return self.held[shape]
        buf = np.empty(shape, np.float32)
        kept = sum(b.nbytes for b in self.held.values() if b.shape != shape)
        if kept + buf.nbytes <= self.MAX_BYTES:
            self.held[shape] = buf
        return buf

    def trim(self) -> None:
        """Drop the buffers of shapes not lent since the previous trim."""
        for shape in [s for s in self.held if s not in self.lent]:
            del self.held[shape]
        self.lent = set()

    def release(self) -> None:
        self.held.clear()
        self.lent = set()


def _references(held: dict, key: object) -> int:
    """References to ``held[key]`` as this function sees them (the dict's, its own, the call's:
    how many the interpreter counts differs between Python versions, so :data:`_UNSHARED` is
    measured with this same function)."""
    return sys.getrefcount(held[key])


#: What :func:`_references` gives for an array that only its dict holds.
_UNSHARED = _references({0: np.empty(0)}, 0)
