"""Per-image stage ``dino-attention``: DINO attention maps and object masks, as pictures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..devices import Device
from ..errors import OptionError, shown
from ..pipeline.stage import Stage
from ..vit.attention import MAX_IMAGE_SIZE, METHODS
from ..vit.cuts import MASKCUT_OBJECTS


@dataclass(frozen=True)
class DinoOptions:
    weights: str = ""  # path; empty: look `model` up in $VISIONTK_WEIGHTS / the torch hub cache
    model: str = "dino_vits8"  # or dinov2_vits14, dinov2_vits14_reg, ... (visiontk attention)
    method: str = "attention"  # attention | tokencut | maskcut: which mask the overlay shows
    objects: int = MASKCUT_OBJECTS  # maskcut: most objects
    threshold: float = 0.6
    image_size: int = 480
    keep_largest: bool = False
    features: bool = False  # also write the patch features (.npy) and their PCA picture
    device: Device = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise OptionError(
                f"stage dino-attention: method must be {', '.join(METHODS)}, "
                f"got {shown(self.method)}"
            )
        if not 1 <= self.objects <= 20:
            raise OptionError(f"stage dino-attention: objects must be 1 to 20, got {self.objects}")
        if not 0 < self.threshold <= 1:
            raise OptionError(
                f"stage dino-attention: threshold must be in (0, 1], got {self.threshold}"
            )
        if not 0 <= self.image_size <= MAX_IMAGE_SIZE:
            raise OptionError(
                f"stage dino-attention: image_size must be 0 (keep the size) or "
                f"up to {MAX_IMAGE_SIZE}, got {self.image_size}"
            )


class DinoAttentionStage(Stage):
    """DINO/DINOv2/DINOv3 attention maps, mass masks, TokenCut mask and MaskCut objects, in
    OUT/attention/."""

    name = "dino-attention"
    kind = "image"
    inputs = ("path",)
    outputs = ("attention",)
    Options = DinoOptions
    folders = ("attention",)
    report_picture = "attention/{stem}_overlay.png"
    report_page = "attention/{stem}_heads.png"

    def check(self) -> None:
        """Find and read the weights once here: without them every image would fail alike."""
        from ..vit.model import ViT

        super().check()  # the device
        # on the CPU: this copy only proves the file; each worker loads its own
        ViT.from_weights(
            self.options.weights or None,
            model=self.options.model,
            device="cpu",
            hint="set the stage's weights option",
        )

    def run(self, context: dict[str, Any]) -> dict[str, Any]:
        from ..vit.attention import dino_attention
        from ..vit.outputs import write_attention

        if getattr(self, "_vit", None) is None:  # one model per worker process
            from ..vit.model import ViT

            self._vit = ViT.from_weights(
                self.options.weights or None, model=self.options.model, device=self.options.device
            )
        result = dino_attention(
            context["path"],
            vit=self._vit,
            threshold=self.options.threshold,
            image_size=self.options.image_size,
            keep_largest=self.options.keep_largest,
            features=self.options.features,
            objects=self.options.objects if self.options.method == "maskcut" else 0,
        )
        output = context["output"]
        summary = write_attention(
            result, output.folder("attention"), output.stem, self.options.method
        )
        return {"attention": summary}
