"""Writing an attention result: pictures, mask PNG and JSON summary, each atomically."""

from __future__ import annotations

import json
from pathlib import Path

from .._files import atomic_write
from ..viz import save_image
from .attention import AttentionResult
from .pictures import heads_grid, mask_image, objects_picture, overlay, pca_picture


def write_attention(result: AttentionResult, folder: Path, stem: str, method: str) -> dict:
    """``stem``_heads.png (per-head heat maps), ``stem``_overlay.png (chosen mask on the image),
    ``stem``_mask.png (0/255) and ``stem``.json, and with features ``stem``_features.npy
    (h × w × D float32) and ``stem``_pca.png (the image beside its features' first three
    principal components); with ``method`` "maskcut", the overlay shows each object in its
    own colour, ``stem``_mask.png holds them all and ``stem``_object<k>.png each one (0/255);
    returns the summary written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mask = result.mask(method)
    save_image(folder / f"{stem}_heads.png", heads_grid(result))
    shown = objects_picture(result) if method == "maskcut" else overlay(result, mask)
    save_image(folder / f"{stem}_overlay.png", shown)
    summary = result.summary(method)
    singles = list(enumerate(result.objects or [], start=1)) if method == "maskcut" else []
    for (i, one), entry in zip(singles, summary.get("objects", []), strict=True):
        save_image(folder / f"{stem}_object{i}.png", _grey(result, one))
        entry["mask"] = f"{stem}_object{i}.png"
    _remove_stale_objects(folder, stem, len(singles))
    save_image(folder / f"{stem}_mask.png", _grey(result, mask))
    if result.features is not None:  # patch features for the user's own use, and their PCA
        import numpy as np

        with atomic_write(folder / f"{stem}_features.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, result.features)
        save_image(folder / f"{stem}_pca.png", np.hstack([result.image, pca_picture(result)]))
        summary["features"] = {"file": f"{stem}_features.npy", "shape": list(result.features.shape)}
    with atomic_write(folder / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def _grey(result: AttentionResult, mask):
    """A patch mask as a 0/255 RGB picture at image resolution."""
    return mask_image(result, mask)[:, :, None].repeat(3, axis=2)


def _remove_stale_objects(folder: Path, stem: str, kept: int) -> None:
    """Object masks an earlier run of this image wrote beyond the ``kept`` of this one."""
    import re

    pattern = re.compile(re.escape(stem) + r"_object(\d+)\.png")
    for path in folder.iterdir():
        found = pattern.fullmatch(path.name)
        if found and int(found.group(1)) > kept:
            path.unlink(missing_ok=True)
