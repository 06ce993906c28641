"""Pictures of attention: per-head heat maps in a grid, and a mask over the image."""

from __future__ import annotations

import warnings

import numpy as np

from .attention import AttentionResult

_MASK_COLOUR = np.array([255, 60, 40], np.float32)


def heads_grid(result: AttentionResult, columns: int = 4) -> np.ndarray:
    """RGB picture: the image, each head's attention (viridis) and their mean, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        [("image", None)]
        + [(f"head {i}", m) for i, m in enumerate(result.maps)]
        + [("mean", result.mean_map)]
    )
    rows = -(-len(panels) // columns)
    h, w = result.image.shape[:2]
    # panels at most 3 inches either way: a 1:2500 strip once made a 375,000-pixel-tall figure
    panel_w, panel_h = 3 * min(1.0, max(w / h, 0.1)), 3 * min(1.0, max(h / w, 0.1))
    aspect = "equal" if 0.1 <= w / h <= 10 else "auto"  # beyond 1:10 the strip is squeezed
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * panel_w, rows * panel_h + 0.3), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, grid) in zip(axes.ravel(), panels, strict=False):
        if grid is None:
            ax.imshow(result.image, aspect=aspect)
        else:
            ax.imshow(result.upsample(grid), cmap="viridis", aspect=aspect)
        ax.set_title(title, fontsize=10)
    with warnings.catch_warnings():  # a squeezed strip may not fit its title: drawn anyway
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    fig.canvas.draw()
    # the Agg canvas (chosen above) has buffer_rgba; matplotlib types fig.canvas as the base
    picture = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()  # type: ignore[attr-defined]
    plt.close(fig)
    return picture


def overlay(result: AttentionResult, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with the (patch-resolution) mask tinted red and its outline drawn."""
    return _tint(result, [(mask, _MASK_COLOUR, (255, 255, 0))], alpha)


def objects_picture(result: AttentionResult, alpha: float = 0.55) -> np.ndarray:
    """The image with each MaskCut object tinted in its own colour (matplotlib's tab10, in
    order; repeats after ten), outlined, and numbered in the order found (1 is the first
    cut's)."""
    import cv2
    from matplotlib import colormaps

    palette = np.rint(colormaps["tab10"](range(10))[:, :3] * 255).astype(np.float32)
    objects = result.objects or []
    colours = [palette[i % len(palette)] for i in range(len(objects))]
    out = _tint(
        result,
        [(m, c, tuple(int(v) for v in c)) for m, c in zip(objects, colours, strict=True)],
        alpha,
    )
    scale = max(0.5, result.image.shape[1] / 400)
    for i, m in enumerate(objects, start=1):
        rows, cols = np.nonzero(m)
        # the label sits on the object's patch nearest its centroid (inside even for a ring)
        at = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
        x = int((cols[at] + 0.5) * result.patch)
        y = int((rows[at] + 0.5) * result.patch)
        for colour, width in (((0, 0, 0), 4), ((255, 255, 255), 1)):
            cv2.putText(
                out,
                str(i),
                (x - int(8 * scale), y + int(8 * scale)),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                colour,
                max(1, int(width * scale)),
                cv2.LINE_AA,
            )
    return out


def _tint(result: AttentionResult, layers, alpha: float) -> np.ndarray:
    """The image with each (patch mask, fill colour, outline colour) of ``layers`` blended in
    and outlined."""
    import cv2

    out = result.image.astype(np.float32)
    fulls = [result.upsample(m.astype(np.uint8)).astype(bool) for m, _, _ in layers]
    for full, (_, fill, _) in zip(fulls, layers, strict=True):
        out[full] = (1 - alpha) * out[full] + alpha * np.asarray(fill, np.float32)
    out = out.clip(0, 255).astype(np.uint8)
    thickness = max(1, result.image.shape[1] // 300)
    for full, (_, _, line) in zip(fulls, layers, strict=True):
        contours, _ = cv2.findContours(
            full.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(out, contours, -1, line, thickness)
    return out


def mask_image(result: AttentionResult, mask: np.ndarray) -> np.ndarray:
    """The mask at image resolution as uint8 0/255."""
    return result.upsample(mask.astype(np.uint8)) * np.uint8(255)


def pca_picture(result: AttentionResult) -> np.ndarray:
    """The first three principal components of the patch features as RGB (each scaled to
    0..255 over the image), at image resolution: parts that the model sees alike share a
    colour (as the DINOv2 paper's figures)."""
    features = result.features
    if features is None:
        raise ValueError("pca_picture needs a result with patch features")
    feats = features.reshape(-1, features.shape[-1]).astype(np.float64)
    feats = feats - feats.mean(axis=0)
    _, _, vt = np.linalg.svd(feats, full_matrices=False)
    comps = feats @ vt[:3].T
    if comps.shape[1] < 3:  # fewer than three patches or dimensions
        comps = np.pad(comps, ((0, 0), (0, 3 - comps.shape[1])))
    lo, hi = comps.min(axis=0), comps.max(axis=0)
    rgb = (comps - lo) / np.where(hi > lo, hi - lo, 1.0)
    grid = (rgb * 255).round().astype(np.uint8).reshape(*features.shape[:2], 3)
    return np.repeat(np.repeat(grid, result.patch, axis=0), result.patch, axis=1)
