"""A genuinely 3-D scene with known cameras, for testing and benchmarking structure from motion.

Textured boxes on a textured floor (photographs from ``skimage.data``), rendered from cameras on
an arc around them: every planar face is warped into the image by its plane-induced homography
(OpenCV's warpPerspective), and a per-pixel depth buffer keeps the nearest face, so boxes occlude
the floor and each other as in a photograph. World frame: z up, metres; cameras look at the
scene's centre. Conventions are COLMAP's: ``R``, ``t`` map world to camera (x right, y down,
z forward), pixel centres at integer + 0.5 in :attr:`Scene.K` — the renderer samples pixel
``(col, row)`` at ``(col + 0.5, row + 0.5)``.

>>> scene = make_scene(views=3, size=(160, 120), focal=130.0)
>>> [im.shape for im in scene.images]
[(120, 160, 3), (120, 160, 3), (120, 160, 3)]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: (centre x, y; half sizes x, y; height; texture) of each box on the floor.
BOXES = (
    ((-0.9, -0.4), (0.45, 0.35), 0.9, "astronaut"),
    ((0.8, 0.5), (0.35, 0.5), 1.2, "chelsea"),
    ((0.2, -1.2), (0.4, 0.3), 0.5, "rocket"),
)
FLOOR_HALF = 2.6


@dataclass
class Scene:
    """Rendered views and the truth: intrinsics ``K`` (shared), per view ``R`` (3×3) and ``t``."""

    images: list
    K: np.ndarray
    R: list
    t: list
    names: list = field(default_factory=list)

    @property
    def centres(self) -> np.ndarray:
        """Camera centres in the world, one row per view."""
        return np.array([-r.T @ t for r, t in zip(self.R, self.t, strict=True)])

    def write(self, folder) -> list[Path]:
        """The views as PNG files ``view_00.png``... in ``folder``; returns their paths."""
        import cv2

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, image in zip(self.names, self.images, strict=True):
            path = folder / name
            cv2.imwrite(str(path), image[:, :, ::-1])
            paths.append(path)
        return paths


def look_at(centre, target, up=(0.0, 0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera ``R``, ``t`` of a camera at ``centre`` looking at ``target``."""
    centre, target = np.asarray(centre, float), np.asarray(target, float)
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ centre


def make_scene(
    views: int = 10,
    size: tuple[int, int] = (640, 480),
    focal: float = 520.0,
    radius: float = 4.2,
    height: float = 2.4,
    arc_degrees: float = 110.0,
    seed: int = 0,
) -> Scene:
    """``views`` cameras on an arc of ``arc_degrees`` around the boxes, ``size`` = (width,
    height) pixels, ``focal`` in pixels; the camera heights and aim points jitter a little
    (``seed``) so that no two views share a plane of motion."""
    rng = np.random.default_rng(seed)
    w, h = size
    K = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1.0]])
    faces = _faces()
    images, Rs, ts = [], [], []
    for a in np.radians(np.linspace(-arc_degrees / 2, arc_degrees / 2, views)):
        centre = [radius * np.cos(a), radius * np.sin(a), height + rng.uniform(-0.3, 0.3)]
        R, t = look_at(centre, [rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), 0.3])
        images.append(_render(faces, K, R, t, w, h))
        Rs.append(R)
        ts.append(t)
    return Scene(images, K, Rs, ts, [f"view_{i:02d}.png" for i in range(views)])


def make_turning_scene(
    views: int = 8,
    size: tuple[int, int] = (640, 480),
    focal: float = 520.0,
    pan_degrees: float = 50.0,
) -> Scene:
    """``views`` of the same boxes from one spot, the camera only turning (a panorama): no
    baseline, so no depth, structure from motion's degenerate case."""
    w, h = size
    K = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1.0]])
    faces = _faces()
    centre = np.array([4.2, 0.0, 2.4])
    images, Rs, ts = [], [], []
    for a in np.radians(np.linspace(-pan_degrees / 2, pan_degrees / 2, views)):
        aim = np.array([-np.cos(a), np.sin(a), -0.45])  # towards the boxes, turned by a
        R, t = look_at(centre, centre + aim)
        images.append(_render(faces, K, R, t, w, h))
        Rs.append(R)
        ts.append(t)
    return Scene(images, K, Rs, ts, [f"turn_{i:02d}.png" for i in range(views)])


def _texture(name: str) -> np.ndarray:
    from skimage import color, data

    image = getattr(data, name)()
    return color.gray2rgb(image) if image.ndim == 2 else image[:, :, :3]


def _floor_texture() -> np.ndarray:
    """Four different photographs side by side: no repeated pattern for matching to confuse."""
    import cv2

    tiles = [
        cv2.resize(_texture(n), (512, 512), interpolation=cv2.INTER_AREA)
        for n in ("coffee", "astronaut", "immunohistochemistry", "hubble_deep_field")
    ]
    return np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])


def _faces() -> list:
    """(corners: origin, +u end, +v end as 3-D points; texture) of every planar face."""
    f = FLOOR_HALF
    faces = [
        (
            (np.array([-f, -f, 0.0]), np.array([f, -f, 0.0]), np.array([-f, f, 0.0])),
            _floor_texture(),
        )
    ]
    for (cx, cy), (hx, hy), top, name in BOXES:
        texture = _texture(name)
        x0, x1, y0, y1 = cx - hx, cx + hx, cy - hy, cy + hy
        ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
        for (ax, ay), (bx, by) in itertools.pairwise(ring):  # four walls, upright
            faces.append(
                (
                    (np.array([ax, ay, top]), np.array([bx, by, top]), np.array([ax, ay, 0.0])),
                    texture,
                )
            )
        faces.append(
            (
                (np.array([x0, y0, top]), np.array([x1, y0, top]), np.array([x0, y1, top])),
                texture[::-1],
            )
        )
    return faces


def _render(faces, K, R, t, w, h) -> np.ndarray:
    import cv2

    rows, cols = np.mgrid[0:h, 0:w]
    rays = (
        np.stack([cols + 0.5, rows + 0.5, np.ones_like(cols)], -1).astype(float)
        @ np.linalg.inv(K).T
    )  # camera-frame rays with z = 1
    depth = np.full((h, w), np.inf)
    ys = np.linspace(90, 150, h)[:, None, None]  # a plain sky: no features
    image = np.broadcast_to(np.concatenate([ys, ys + 20, ys + 40], -1), (h, w, 3)).astype(np.uint8)
    image = image.copy()
    for (origin, u_end, v_end), full_texture in faces:
        corners = np.array([origin, u_end, v_end, u_end + v_end - origin]) @ R.T + t
        if corners[:, 2].min() < 0.05:
            raise ValueError("a face crosses behind a camera: move the cameras back")
        texture = full_texture
        H = _homography(K, R, t, origin, u_end, v_end, texture.shape)
        try:
            scale = _scale(H, corners, K)
        except np.linalg.LinAlgError:  # the face seen exactly edge-on: it covers no pixel
            continue
        if scale < 0.9:  # shrink the texture first: warping alone would alias
            th, tw = full_texture.shape[:2]
            texture = cv2.resize(
                full_texture,
                (max(2, round(tw * scale)), max(2, round(th * scale))),
                interpolation=cv2.INTER_AREA,
            )
            H = _homography(K, R, t, origin, u_end, v_end, texture.shape)
        th, tw = texture.shape[:2]
        warped = cv2.warpPerspective(texture, H, (w, h), flags=cv2.INTER_LINEAR)
        inside = (
            cv2.warpPerspective(np.ones((th, tw), np.uint8), H, (w, h), flags=cv2.INTER_NEAREST) > 0
        )
        normal = R @ np.cross(u_end - origin, v_end - origin)
        offset = normal @ (R @ origin + t)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = offset / (rays @ normal)
        nearer = inside & (z > 0) & (z < depth)
        depth[nearer] = z[nearer]
        image[nearer] = warped[nearer]
    return image


def _homography(K, R, t, origin, u_end, v_end, shape) -> np.ndarray:
    """Texture pixel (u, v) -> image pixel: the face's points are origin + u/tw (u_end −
    origin) + v/th (v_end − origin), pixel centres at integer positions in both images."""
    th, tw = shape[:2]
    A = np.column_stack([(u_end - origin) / tw, (v_end - origin) / th, origin])
    to_pixels = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    from_pixels = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    return (
        to_pixels @ K @ np.column_stack([R @ A[:, 0], R @ A[:, 1], R @ A[:, 2] + t]) @ from_pixels
    )


def _scale(H, corners_cam, K) -> float:
    """Image pixels per texture pixel near the face's closest corner (where it is largest)."""
    nearest = np.argmin(corners_cam[:, 2])
    p = K @ corners_cam[nearest]
    p = p[:2] / p[2] - 0.5
    x = np.linalg.solve(H, [p[0], p[1], 1.0])
    x = x / x[2]
    J = np.empty((2, 2))
    for k, d in enumerate(np.eye(2)):
        q = H @ np.array([x[0] + d[0], x[1] + d[1], 1.0])
        J[:, k] = q[:2] / q[2] - p
    return float(np.sqrt(abs(np.linalg.det(J))))


def main(argv=None) -> None:
    """``python -m visiontk.testing.scene FOLDER [--views N] [--width W --height H]``: write
    the views (and ``cameras.txt``, the true intrinsics in the format ``reconstruct`` reads)."""
    import argparse

    parser = argparse.ArgumentParser(description="Render the test scene's views into FOLDER.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args(argv)
    if args.views < 3 or min(args.width, args.height) < 64:
        parser.error("at least 3 views of at least 64×64 pixels")
    scale = args.width / 640
    scene = make_scene(views=args.views, size=(args.width, args.height), focal=520.0 * scale)
    try:
        paths = scene.write(args.folder)
    except OSError as exc:
        raise SystemExit(
            f"error: {args.folder}: cannot write the views ({exc.strerror or exc})"
        ) from None
    K = scene.K
    (args.folder / "cameras.txt").write_text(
        f"# name MODEL width height params: the true camera of every view\n* PINHOLE "
        f"{args.width} {args.height} {K[0, 0]} {K[1, 1]} {K[0, 2]} {K[1, 2]}\n"
    )
    print(f"{len(paths)} views of the test scene in {args.folder}")


if __name__ == "__main__":
    main()
