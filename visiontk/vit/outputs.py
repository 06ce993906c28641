"""Writing an attention result: pictures, mask PNG and JSON summary, each atomically."""

from __future__ import annotations

import json
from pathlib import Path

from .._files import atomic_write
from ..viz import save_image
from .attention import AttentionResult
from .pictures import heads_grid, mask_image, overlay, pca_picture


def write_attention(result: AttentionResult, folder: Path, stem: str, method: str) -> dict:
    """``stem``_heads.png (per-head heat maps), ``stem``_overlay.png (chosen mask on the image),
    ``stem``_mask.png (0/255) and ``stem``.json, and with features ``stem``_features.npy
    (h × w × D float32) and ``stem``_pca.png (the image beside its features' first three
    principal components); returns the summary written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mask = result.mask(method)
    save_image(folder / f"{stem}_heads.png", heads_grid(result))
    save_image(folder / f"{stem}_overlay.png", overlay(result, mask))
    grey = mask_image(result, mask)
    save_image(folder / f"{stem}_mask.png", grey[:, :, None].repeat(3, axis=2))
    summary = result.summary(method)
    if result.features is not None:  # patch features for the user's own use, and their PCA
        import numpy as np

        with atomic_write(folder / f"{stem}_features.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, result.features)
        save_image(folder / f"{stem}_pca.png", np.hstack([result.image, pca_picture(result)]))
        summary["features"] = {"file": f"{stem}_features.npy", "shape": list(result.features.shape)}
    with atomic_write(folder / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return summary
