"""Per-image stages: ``load`` (decode, grey, EXIF, resize) and ``sift``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..devices import Device
from ..errors import OptionError
from ..extract import SiftBackend, SiftOptions
from ..io import DEFAULT_MAX_PIXELS, MIN_SIDE
from ..pipeline.stage import Stage


@dataclass(frozen=True)
class LoadOptions:
    max_side: int = 0  # 0 keeps the resolution; otherwise the longer side is scaled down to it
    exif: bool = True  # turn images as their EXIF orientation tag says (visiontk's default)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.max_side != 0 and self.max_side < MIN_SIDE:
            raise OptionError(
                f"stage load: max_side must be 0 or >= {MIN_SIDE}, got {self.max_side}"
            )
        if self.max_pixels <= 0:
            raise OptionError(f"stage load: max_pixels must be > 0, got {self.max_pixels}")


class LoadStage(Stage):
    """Decode an image file to grey float32 (0..255), optionally EXIF-turned and downsized.

    Outputs ``image`` (the grey array), ``image_size`` (original height, width) and ``scale``
    (original / resized, per axis), so later stages can report original-image coordinates.
    """

    name = "load"
    kind = "image"
    inputs = ("path",)
    outputs = ("image", "image_size", "scale")
    Options = LoadOptions

    def run(self, context: dict[str, Any]) -> dict[str, Any]:
        import cv2

        from ..io import load_gray

        gray = load_gray(
            context["path"], max_pixels=self.options.max_pixels, exif_transpose=self.options.exif
        )
        h, w = gray.shape
        scale = (1.0, 1.0)
        if self.options.max_side and max(h, w) > self.options.max_side:
            f = self.options.max_side / max(h, w)
            size = (max(MIN_SIDE, round(w * f)), max(MIN_SIDE, round(h * f)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
            scale = (w / size[0], h / size[1])
        return {"image": gray, "image_size": (h, w), "scale": scale}


@dataclass(frozen=True)
class SiftStageOptions(SiftOptions):
    device: Device = "auto"


class SiftStage(Stage):
    """SIFT features (visiontk.sift) in original-image pixels; unset options take the preset's."""

    name = "sift"
    kind = "image"
    inputs = ("image", "image_size", "scale")
    outputs = ("features",)
    Options = SiftStageOptions

    #: the device, resolved on the first image in each worker (a stage is pickled to the
    #: workers unresolved: a backend holds compiled kernels)
    _backend: SiftBackend | None = None

    def run(self, context: dict[str, Any]) -> dict[str, Any]:
        from ..extract import in_original_pixels, sift_backend, sift_gray

        if self._backend is None:
            self._backend = sift_backend(self.options.device)
        feats = sift_gray(context["image"], self.options, self._backend)
        size = context.get("image_size", feats.image_size)
        return {"features": in_original_pixels(feats, context.get("scale", (1.0, 1.0)), size)}
