"""Object masks from DINO attention, without labels.

* Attention masks (Caron et al. 2021, ``visualize_attention.py``): per head, keep the patches
  with the highest CLS attention that together hold ``threshold`` of its mass (0.6 in the
  paper).
* TokenCut (one object) and MaskCut (several), cuts of a graph of the last block's keys: see
  :mod:`.cuts`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .. import devices, io
from ..errors import ImageError, OptionError, VisiontkError, WeightsError
from ..io import ImageSource
from .cuts import maskcut, tokencut

__all__ = ["AttentionResult", "dino_attention", "dino_attention_batches", "maskcut", "tokencut"]

if TYPE_CHECKING:
    from .model import ViT

#: An image given to :func:`dino_attention_batches`, yielded back beside its result.
ImageT = TypeVar("ImageT", bound=ImageSource)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
#: Shorter image side fed to the ViT by default (visualize_attention.py).
IMAGE_SIZE = 480
#: Share of attention mass a mask keeps (DINO paper).
MASS_THRESHOLD = 0.6
#: Ways to choose the object mask.
METHODS = ("attention", "tokencut", "maskcut")
#: Fewest patches a side: TokenCut's second eigenvector needs a graph of several patches, and a
#: mask of one patch says nothing.
MIN_GRID = 2
#: Largest shorter side fed to the ViT: the attention of every patch to every patch grows with
#: the fourth power of the side (2048 with 8-pixel patches: 4 GB a head at a 1:1 aspect).
MAX_IMAGE_SIZE = 2048
#: Most patches an image may give (ViT-S/8 at 2048²): a long panorama at the default size
#: would otherwise give hundreds of thousands (attention grows with their square).
MAX_PATCHES = 65536


@dataclass
class AttentionResult:
    """Maps and masks at patch resolution (h × w), and the image they were computed on.

    ``maps``: heads × h × w CLS attention; ``mean_map``: their mean; ``masks``: heads × h × w
    bool (mass threshold); ``mean_mask``: mass mask of the mean map; ``tokencut``: h × w bool;
    ``image``: the resized, cropped RGB uint8 image (h·P × w·P); ``patch``: P; ``objects``:
    MaskCut's disjoint h × w bool masks, one per object in the order found (when asked for).
    """

    maps: np.ndarray
    mean_map: np.ndarray
    masks: np.ndarray
    mean_mask: np.ndarray
    tokencut: np.ndarray
    image: np.ndarray
    patch: int
    threshold: float
    #: h × w × D patch features of the last layer (normalised), when asked for
    features: np.ndarray | None = None
    objects: list[np.ndarray] | None = None
    #: (height, width) of the image before it was resized and cropped, and the resize factor
    source_size: tuple[int, int] | None = None
    source_scale: float = 1.0

    def upsample(self, grid: np.ndarray) -> np.ndarray:
        """Nearest upsampling of a patch grid to image pixels (as the official script)."""
        return np.repeat(np.repeat(grid, self.patch, axis=-2), self.patch, axis=-1)

    def mask(self, method: str) -> np.ndarray:
        """The chosen object mask at patch resolution: "attention" (mean map), "tokencut", or
        "maskcut" (every object found)."""
        if method == "attention":
            return self.mean_mask
        if method == "tokencut":
            return self.tokencut
        if method == "maskcut":
            if self.objects is None:
                raise OptionError("this result has no MaskCut objects (pass objects=N)")
            return np.logical_or.reduce([*self.objects, np.zeros_like(self.tokencut)])
        raise OptionError(f"method must be one of {', '.join(METHODS)}, got {method!r}")

    def summary(self, method: str) -> dict[str, Any]:
        m = self.mask(method)
        return {
            "heads": int(self.maps.shape[0]),
            "grid": list(m.shape),
            "patch": self.patch,
            "image_size": list(self.image.shape[:2]),
            **self._source(),
            "method": method,
            "threshold": self.threshold,
            "foreground_fraction": float(m.mean()),
            "head_foreground_fraction": [float(x) for x in self.masks.mean(axis=(1, 2))],
            **({"objects": self._objects_summary()} if method == "maskcut" else {}),
        }

    def _source(self) -> dict[str, Any]:
        """The input's size and the factor from its pixels to the masks' (resized, then cropped
        from the top-left: x_mask = x_input · scale)."""
        if self.source_size is None:
            return {}
        return {"source_size": list(self.source_size), "scale": self.source_scale}

    def _objects_summary(self) -> list[dict[str, Any]]:
        """Per MaskCut object: its share of the patches and its box in image pixels."""
        out = []
        for i, m in enumerate(self.objects or [], start=1):
            rows, cols = np.nonzero(m)
            box = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
            out.append(
                {
                    "object": i,
                    "foreground_fraction": float(m.mean()),
                    "box_xyxy": [v * self.patch for v in box],
                }
            )
        return out


def preprocess(
    rgb: np.ndarray,
    patch: int,
    image_size: int = IMAGE_SIZE,
    name: str = "<array>",
    normalisation: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resize so the shorter side is ``image_size`` (0 keeps the size), crop to a multiple of
    the patch size from the top-left (as the official script), normalise with ImageNet mean and
    std (or the model's ``normalisation``, (mean, std)). Returns (pixels 3×H×W float32, the
    cropped RGB uint8 image). Fewer than :data:`MIN_GRID` patches a side is an error: TokenCut
    needs a graph of several patches."""
    import cv2

    h, w = rgb.shape[:2]
    if not 0 <= image_size <= MAX_IMAGE_SIZE:
        raise OptionError(
            f"image size must be 0 (keep the size) or up to {MAX_IMAGE_SIZE}, got {image_size}"
        )
    f = image_size / min(h, w) if image_size else 1.0
    size = (max(patch, round(w * f)), max(patch, round(h * f))) if image_size else (w, h)
    grid = (size[0] // patch, size[1] // patch)
    if grid[0] * grid[1] > MAX_PATCHES:  # checked before resizing: the resize could be huge
        raise ImageError(
            f"{name}: {size[0]}×{size[1]} pixels{' after resizing' if image_size else ''} "
            f"give a {grid[0]}×{grid[1]} patch grid ({grid[0] * grid[1]:,} patches, at most "
            f"{MAX_PATCHES:,}); crop the image or lower the image size"
        )
    if image_size:
        interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, size, interpolation=interp)
    h, w = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb[: h - h % patch, : w - w % patch])
    if min(rgb.shape[:2]) < MIN_GRID * patch:
        raise ImageError(
            f"{name}: {rgb.shape[1]}×{rgb.shape[0]} pixels after resizing give "
            f"a {rgb.shape[1] // patch}×{rgb.shape[0] // patch} patch grid; attention "
            f"maps need at least {MIN_GRID}×{MIN_GRID} patches of {patch} pixels "
            f"(image size {MIN_GRID * patch} or more)"
        )
    mean, std = normalisation or (IMAGENET_MEAN, IMAGENET_STD)
    pixels = (rgb.astype(np.float32) / 255.0 - mean) / std
    return pixels.transpose(2, 0, 1).copy(), rgb


def mass_masks(maps: np.ndarray, threshold: float = MASS_THRESHOLD) -> np.ndarray:
    """Per map (… × h × w), the patches with the highest values that together hold
    ``threshold`` of the map's mass (official: sort, normalise, cumulative sum > 1 − t)."""
    if not 0 < threshold <= 1:
        raise OptionError(f"threshold must be in (0, 1], got {threshold}")
    flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1]).astype(np.float64)
    order = np.argsort(flat, axis=1, kind="stable")
    values = np.take_along_axis(flat, order, axis=1)
    totals = values.sum(axis=1, keepdims=True)  # 0: no attention on the patches, no mask
    values = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    keep_sorted = np.cumsum(values, axis=1) > 1 - threshold
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=1)
    return keep.reshape(maps.shape)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (all false stays all false)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def dino_attention(
    image: ImageSource,
    *,
    weights: str | os.PathLike[str] | None = None,
    model: str = "dino_vits8",
    device: str = "auto",
    threshold: float = MASS_THRESHOLD,
    image_size: int = IMAGE_SIZE,
    keep_largest: bool = False,
    vit: ViT | None = None,
    features: bool = False,
    objects: int = 0,
) -> AttentionResult:
    """CLS attention maps, mass masks and the TokenCut mask of an image (and MaskCut's
    object masks with ``objects``).

    Parameters
    ----------
    image : path or H×W×3 RGB array (see :mod:`visiontk.io` for accepted types)
    weights : path to DINO weights (.pth or .safetensors), or None to look ``model`` up
    threshold : share of attention mass the masks keep (0.6 as the paper)
    image_size : shorter side the image is resized to before the ViT (0: keep)
    keep_largest : keep only the largest connected component of each mass mask
    vit : an already loaded :class:`~visiontk.vit.ViT` (weights/model/device then unused)
    features : also return the last layer's normalised patch features (``result.features``,
        h × w × D; costs the rest of the last block)
    objects : up to this many MaskCut objects in ``result.objects`` (0: none; each costs one
        more eigenvector of the patch graph)

    Example
    -------
    >>> r = dino_attention("sample_images/coffee.png",  # doctest: +SKIP
    ...                    weights="dino_deitsmall8_pretrain.pth")
    >>> r.maps.shape[0], r.tokencut.dtype  # doctest: +SKIP
    (6, dtype('bool'))
    """
    from .model import ViT

    net = vit if vit is not None else ViT.from_weights(weights, model=model, device=device)
    pixels, shown, source = _prepare(image, net, image_size)
    found = _forward(net, pixels, features)
    result = _results(net, [shown], found, threshold, keep_largest, objects)[0]
    result.source_size, result.source_scale = source
    return result


def dino_attention_batches(
    images: Iterable[ImageT],
    *,
    vit: ViT,
    batch_size: int | None = None,
    threshold: float = MASS_THRESHOLD,
    image_size: int = IMAGE_SIZE,
    keep_largest: bool = False,
    features: bool = False,
    objects: int = 0,
) -> Iterator[tuple[ImageT, AttentionResult | VisiontkError]]:
    """:func:`dino_attention` for many images, in batches: yields (image, result) in input
    order, the result an :class:`AttentionResult` or the :class:`~visiontk.errors.VisiontkError`
    that image raised. Neighbouring images of the same size after preprocessing go through
    ``vit`` as one B×3×H×W batch of up to ``batch_size`` (a folder of photos from one camera:
    all of them); by default 16 on a GPU (one launch per layer for B images) and 1 on the CPU,
    where batches did not pay (docs/dino.md, "Library")."""
    if batch_size is None:
        batch_size = 1 if devices.is_numpy(vit.xp) else 16
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}")
    # (image, pixels, shown, (source size, resize factor)) of one size
    pending: list[tuple[ImageT, np.ndarray, np.ndarray, tuple]] = []

    def flush() -> list[tuple[ImageT, AttentionResult]]:
        if not pending:
            return []
        stack = np.stack([p for _, p, _, _ in pending])
        shown = [s for _, _, s, _ in pending]
        try:
            found = _forward(vit, stack, features)
            results: list = _results(vit, shown, found, threshold, keep_largest, objects)
        except WeightsError as exc:  # weights that overflow fail every image they saw
            results = [WeightsError(f"{_label(image)}: {exc}") for image, *_ in pending]
        done = []
        for (image, _, _, source), r in zip(pending, results, strict=True):
            if isinstance(r, AttentionResult):
                r.source_size, r.source_scale = source
            done.append((image, r))
        pending.clear()
        return done

    for image in images:
        try:
            pixels, shown, source = _prepare(image, vit, image_size)
        except VisiontkError as exc:
            yield from flush()
            yield image, exc
            continue
        if pending and (pending[0][1].shape != pixels.shape or len(pending) == batch_size):
            yield from flush()
        pending.append((image, pixels, shown, source))
    yield from flush()


def _forward(net: ViT, pixels: np.ndarray, features: bool) -> list:
    """``net.last_block`` on the host, checked: weights whose activations overflow give NaN
    or infinite attention, which is an error rather than empty masks."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        found = [devices.to_host(a) for a in net.last_block(pixels, features=features)]
    if not all(np.isfinite(a).all() for a in found):
        raise WeightsError(
            f"{net.name}: the forward pass overflows (NaN or infinite attention): the weights "
            f"are not those of a trained model"
        )
    return found


def _label(image: ImageSource) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else "<array>"


def _prepare(
    image: ImageSource, net: ViT, image_size: int
) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], float]]:
    name = _label(image)
    # the same smallest image as SIFT: a 1×1 picture upscaled to a patch grid has no objects
    rgb = io.load_rgb(image)
    pixels, shown = preprocess(rgb, net.config.patch, image_size, name, net.normalisation)
    h, w = int(rgb.shape[0]), int(rgb.shape[1])
    return pixels, shown, ((h, w), image_size / min(h, w) if image_size else 1.0)


def _results(
    net: ViT,
    shown: list[np.ndarray],
    found: Sequence[devices.XpArray],
    threshold: float,
    keep_largest: bool,
    objects: int = 0,
) -> list[AttentionResult]:
    """AttentionResults from :meth:`ViT.last_block`'s output for one image (3×H×W input) or
    a batch (one per image in ``shown``)."""
    c = net.config
    if found[0].ndim == 2:  # one image: give it a batch axis
        found = [a[None] for a in found]
    grid = (shown[0].shape[0] // c.patch, shown[0].shape[1] // c.patch)
    results: list[AttentionResult] = []
    for i, image in enumerate(shown):
        maps = found[0][i, :, c.first_patch :].reshape(-1, *grid).astype(np.float32)
        mean_map = maps.mean(axis=0)
        masks = mass_masks(maps, threshold)
        mean_mask = mass_masks(mean_map, threshold)
        if keep_largest:
            masks = np.stack([largest_component(m) for m in masks])
            mean_mask = largest_component(mean_mask)
        keys = found[1][i, c.first_patch :]
        cut, _ = tokencut(keys, grid)
        features = found[2][i].reshape(*grid, -1).astype(np.float32) if len(found) > 2 else None
        cuts = maskcut(keys, grid, objects) if objects else None
        results.append(
            AttentionResult(
                maps, mean_map, masks, mean_mask, cut, image, c.patch, threshold, features, cuts
            )
        )
    return results
