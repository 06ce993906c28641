"""Pictures of a model: a top and a side view of the points and camera frusta, and a sheet of
the images marked registered or not.

The model's frame is arbitrary, so the views are chosen from the cameras: "up" is the direction
all the cameras' x axes are perpendicular to (people hold cameras level), the horizontal axes
the principal directions of the points and cameras across it.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

REGISTERED, MISSING = (46, 160, 67), (210, 45, 45)


def view_axes(rotations: np.ndarray, points: np.ndarray) -> np.ndarray:
    """3×3 rows: two horizontal directions (most spread first) and up."""
    # Rows of R are the camera's axes in the world. Level cameras have horizontal x axes, so
    # up is what all x axes are perpendicular to; when they are all alike (every camera faces
    # one way) that is ambiguous, and the mean −y axis (tilted by the cameras' pitch) decides.
    down = rotations[:, 1, :].mean(0)
    _, spread, Vt = np.linalg.svd(rotations[:, 0, :])
    up = Vt[2] if spread[1] > 0.2 * spread[0] else -down
    up = up if up @ down < 0 else -up
    up /= np.linalg.norm(up)
    flat = points - np.outer(points @ up, up)
    flat -= flat.mean(0)
    _, _, Vt = np.linalg.svd(flat, full_matrices=False)
    first = Vt[0] - (Vt[0] @ up) * up
    first /= np.linalg.norm(first)
    return np.stack([first, np.cross(up, first), up])


def frustum(R, t, K, width, height, depth) -> np.ndarray:
    """5×3 world points: the camera centre and its image corners at ``depth``."""
    centre = -R.T @ t
    corners = np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], float)
    rays = corners @ np.linalg.inv(K).T
    return np.vstack([centre, centre + depth * rays @ R])


#: Size of one view (width, height) and its margin, in pixels.
PANEL, MARGIN = (640, 580), 24
FRUSTUM_EDGES = ((0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1))


class ModelArrays(NamedTuple):
    """A pycolmap Reconstruction as arrays: points ``xyz`` (N×3) and ``rgb`` (N×3 uint8), the
    registered ``images`` and their world-to-camera ``R`` (M×3×3), ``t`` (M×3) and
    ``centres`` (M×3), in the model's order."""

    xyz: np.ndarray
    rgb: np.ndarray
    images: list
    R: np.ndarray
    t: np.ndarray
    centres: np.ndarray


def model_arrays(model) -> ModelArrays:
    ids = list(model.point3D_ids())
    xyz = np.array([model.point3D(int(i)).xyz for i in ids], float).reshape(-1, 3)
    rgb = np.array([model.point3D(int(i)).color for i in ids], np.uint8).reshape(-1, 3)
    images = [model.image(i) for i in model.reg_image_ids()]
    poses = [im.cam_from_world() for im in images]
    Rs = np.array([p.rotation.matrix() for p in poses]).reshape(-1, 3, 3)
    ts = np.array([np.asarray(p.translation) for p in poses]).reshape(-1, 3)
    return ModelArrays(xyz, rgb, images, Rs, ts, np.einsum("nji,nj->ni", Rs, -ts))


def draw_model(model, path: Path, title: str = "") -> Path:
    """Top and side views of a pycolmap Reconstruction (points in their colours, cameras as
    frusta) as one PNG. Drawn with OpenCV, already loaded: importing matplotlib would be a
    large share of a small run."""
    import cv2

    xyz, rgb, images, Rs, ts, centres = model_arrays(model)
    # the points a viewer cares about: drop the farthest 2% (a stray point sets the scale)
    if len(xyz) > 50:
        far = np.linalg.norm(xyz - np.median(xyz, 0), axis=1)
        keep = far <= np.quantile(far, 0.98)
        xyz, rgb = xyz[keep], rgb[keep]
    axes = view_axes(Rs, np.vstack([xyz, centres]))
    extent = np.ptp(np.vstack([xyz, centres]) @ axes.T, axis=0).max()
    frusta = [
        frustum(
            R, t, im.camera.calibration_matrix(), im.camera.width, im.camera.height, 0.06 * extent
        )
        @ axes.T
        for im, R, t in zip(images, Rs, ts, strict=True)
    ]
    panels = [
        _view(xyz @ axes.T, rgb, frusta, (i, j), name)
        for (i, j), name in (((0, 1), "top view"), ((0, 2), "side view"))
    ]
    header = np.full((44, 2 * PANEL[0], 3), 255, np.uint8)
    text = title or f"{len(images)} cameras, {model.num_points3D()} points"
    size = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)[0]
    cv2.putText(
        header,
        text,
        ((header.shape[1] - size[0]) // 2, 30),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.6,
        (30, 30, 30),
        1,
        cv2.LINE_AA,
    )
    from ..viz import save_image

    return save_image(path, np.vstack([header, np.hstack(panels)]))


def _view(points, colours, frusta, dims, name) -> np.ndarray:
    """One panel: the points and frusta projected on the axes ``dims`` (x right, y up)."""
    import cv2

    width, height = PANEL
    canvas = np.full((height, width, 3), 244, np.uint8)
    i, j = dims
    every = (
        np.vstack([points[:, [i, j]], *[f[:, [i, j]] for f in frusta]])
        if frusta
        else points[:, [i, j]]
    )
    if len(every):
        lo, hi = every.min(axis=0), every.max(axis=0)
        span = np.maximum(hi - lo, 1e-9)
        top = MARGIN + 20  # room for the panel's name
        scale = min((width - 2 * MARGIN) / span[0], (height - top - MARGIN) / span[1])
        offset = np.array(
            [(width - scale * span[0]) / 2, top + (height - top - MARGIN - scale * span[1]) / 2]
        )

        def pixels(xy):  # y up in the model, down in the picture
            u = offset[0] + (xy[:, 0] - lo[0]) * scale
            v = offset[1] + (hi[1] - xy[:, 1]) * scale
            return np.stack([u, v], axis=1)

        if len(points):
            uv = np.rint(pixels(points[:, [i, j]])).astype(int)
            inside = (
                (uv[:, 0] >= 1) & (uv[:, 0] < width - 1) & (uv[:, 1] >= 1) & (uv[:, 1] < height - 1)
            )
            for du, dv in ((0, 0), (1, 0), (0, 1), (1, 1)):  # 2×2 dots
                canvas[uv[inside, 1] + dv, uv[inside, 0] + du] = colours[inside]
        for f in frusta:
            corners = np.rint(pixels(f[:, [i, j]]) * 16).astype(np.int32)  # 4 bits sub-pixel
            for a, b in FRUSTUM_EDGES:
                cv2.line(
                    canvas,
                    tuple(corners[a]),
                    tuple(corners[b]),
                    (220, 20, 60),
                    1,
                    cv2.LINE_AA,
                    shift=4,
                )
    cv2.rectangle(canvas, (0, 0), (width - 1, height - 1), (160, 160, 160), 1)
    cv2.putText(
        canvas,
        name,
        (MARGIN, MARGIN + 6),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.55,
        (30, 30, 30),
        1,
        cv2.LINE_AA,
    )
    return canvas


def registration_sheet(items: list, path: Path, *, columns: int = 6, width: int = 200) -> Path:
    """A sheet of thumbnails, each framed green (registered) or red (not), with its name.
    ``items``: (name, thumbnail RGB array or None when unreadable, None when registered else
    why not)."""
    import cv2

    cell_h = int(width * 0.75) + 24
    rows = max(1, -(-len(items) // columns))
    sheet = np.full((rows * (cell_h + 8) + 8, columns * (width + 8) + 8, 3), 255, np.uint8)
    for k, (name, thumb, why) in enumerate(items):
        y, x = 8 + (k // columns) * (cell_h + 8), 8 + (k % columns) * (width + 8)
        colour = REGISTERED if why is None else MISSING
        sheet[y : y + cell_h, x : x + width] = colour
        if thumb is not None:
            h, w = thumb.shape[:2]
            f = min((width - 8) / w, (cell_h - 30) / h)
            small = cv2.resize(
                thumb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA
            )
            oy, ox = y + 4 + (cell_h - 30 - small.shape[0]) // 2, x + (width - small.shape[1]) // 2
            sheet[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small
        label = f"{'registered' if why is None else why}: {Path(name).name}"
        cv2.putText(
            sheet,
            label[:30],
            (x + 4, y + cell_h - 8),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    from ..viz import save_image

    return save_image(path, sheet)
