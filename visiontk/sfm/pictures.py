"""Pictures of a model: a top and a side view of the points and camera frusta, and a sheet of
the images marked registered or not.

The model's frame is arbitrary, so the views are chosen from the cameras: "up" is the direction
all the cameras' x axes are perpendicular to (people hold cameras level), the horizontal axes
the principal directions of the points and cameras across it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._files import atomic_write

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


def draw_model(model, path: Path, title: str = "") -> Path:
    """Top and side views of a pycolmap Reconstruction (points in their colours, cameras as
    frusta) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = list(model.point3D_ids())
    xyz = np.array([model.point3D(int(i)).xyz for i in ids]).reshape(-1, 3)
    rgb = np.array([model.point3D(int(i)).color for i in ids], float).reshape(-1, 3) / 255
    images = [model.image(i) for i in model.reg_image_ids()]
    poses = [im.cam_from_world() for im in images]
    Rs = np.array([p.rotation.matrix() for p in poses])
    ts = np.array([np.asarray(p.translation) for p in poses])
    centres = np.einsum("nji,nj->ni", Rs, -ts)
    # the points a viewer cares about: drop the farthest 2% (a stray point sets the scale)
    if len(xyz) > 50:
        far = np.linalg.norm(xyz - np.median(xyz, 0), axis=1)
        keep = far <= np.quantile(far, 0.98)
        xyz, rgb = xyz[keep], rgb[keep]
    axes = view_axes(Rs, np.vstack([xyz, centres]))
    extent = np.ptp(np.vstack([xyz, centres]) @ axes.T, axis=0).max()
    fig, panels = plt.subplots(1, 2, figsize=(13, 6.2))
    for panel, (i, j), name in zip(panels, ((0, 1), (0, 2)), ("top view", "side view"),
                                   strict=True):
        p = xyz @ axes.T
        panel.scatter(p[:, i], p[:, j], s=1.5, c=rgb if len(rgb) else None, linewidths=0)
        for im, R, t in zip(images, Rs, ts, strict=True):
            cam = im.camera
            f = frustum(R, t, cam.calibration_matrix(), cam.width, cam.height,
                        0.06 * extent) @ axes.T
            for a, b in ((0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1)):
                panel.plot(f[[a, b], i], f[[a, b], j], color="crimson", lw=0.8)
        panel.set_aspect("equal", adjustable="datalim")
        panel.set_title(name)
        panel.set_xticks([])
        panel.set_yticks([])
        panel.set_facecolor("#f4f4f4")
    fig.suptitle(title or f"{len(images)} cameras, {len(ids)} points")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def registration_sheet(items: list, path: Path, *, columns: int = 6,
                       width: int = 200) -> Path:
    """A sheet of thumbnails, each framed green (registered) or red (not), with its name.
    ``items``: (name, thumbnail RGB array or None when unreadable, registered)."""
    import cv2

    cell_h = int(width * 0.75) + 24
    rows = max(1, -(-len(items) // columns))
    sheet = np.full((rows * (cell_h + 8) + 8, columns * (width + 8) + 8, 3), 255, np.uint8)
    for k, (name, thumb, registered) in enumerate(items):
        y, x = 8 + (k // columns) * (cell_h + 8), 8 + (k % columns) * (width + 8)
        colour = REGISTERED if registered else MISSING
        sheet[y:y + cell_h, x:x + width] = colour
        if thumb is not None:
            h, w = thumb.shape[:2]
            f = min((width - 8) / w, (cell_h - 30) / h)
            small = cv2.resize(thumb, (max(1, round(w * f)), max(1, round(h * f))),
                               interpolation=cv2.INTER_AREA)
            oy, ox = y + 4 + (cell_h - 30 - small.shape[0]) // 2, x + (width - small.shape[1]) // 2
            sheet[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
        label = ("" if registered else "NOT ") + "registered: " + Path(name).name
        cv2.putText(sheet, label[:30], (x + 4, y + cell_h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
    from ..viz import save_image

    return save_image(path, sheet)
