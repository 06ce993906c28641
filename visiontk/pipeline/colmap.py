"""Export features and verified matches to a COLMAP database (sqlite3).

Follows COLMAP 4's schema (cameras, rigs, frames, images, keypoints, descriptors, matches,
two_view_geometries), one SIMPLE_RADIAL camera per image with COLMAP's default focal length
guess (1.2 × the longer side), a trivial rig and frame per camera/image as COLMAP's own feature
extractor makes them. Keypoints move by +0.5 px: COLMAP puts the centre of the top-left pixel
at (0.5, 0.5); visiontk (like OpenCV) at (0, 0).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._files import atomic_write

if TYPE_CHECKING:
    from ..features import Features, Matches
    from ..geometry import Geometry
    from ..sfm.cameras import Camera

#: COLMAP's pair ids: image_id1 * 2147483647 + image_id2 with image_id1 < image_id2.
MAX_IMAGE_ID = 2147483647
SIMPLE_RADIAL = 2
#: two_view_geometries.config (COLMAP TwoViewGeometry: 3 UNCALIBRATED, 6 PLANAR_OR_PANORAMIC).
CONFIG = {"fundamental": 3, "homography": 6}
SENSOR_CAMERA = 0
#: COLMAP's FeatureExtractorType for SIFT descriptors (descriptors.type).
DESCRIPTOR_SIFT = 0

SCHEMA = """
CREATE TABLE cameras (camera_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    model INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, params BLOB,
    prior_focal_length INTEGER NOT NULL);
CREATE TABLE rigs (rig_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    ref_sensor_id INTEGER NOT NULL, ref_sensor_type INTEGER NOT NULL);
CREATE UNIQUE INDEX rig_ref_sensor_assignment ON rigs(ref_sensor_id, ref_sensor_type);
CREATE TABLE rig_sensors (rig_id INTEGER NOT NULL, sensor_id INTEGER NOT NULL,
    sensor_type INTEGER NOT NULL, sensor_from_rig BLOB,
    FOREIGN KEY(rig_id) REFERENCES rigs(rig_id) ON DELETE CASCADE);
CREATE UNIQUE INDEX rig_sensor_assignment ON rig_sensors(sensor_id, sensor_type);
CREATE TABLE frames (frame_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    rig_id INTEGER NOT NULL, FOREIGN KEY(rig_id) REFERENCES rigs(rig_id) ON DELETE CASCADE);
CREATE TABLE frame_data (frame_id INTEGER NOT NULL, data_id INTEGER NOT NULL,
    sensor_id INTEGER NOT NULL, sensor_type INTEGER NOT NULL,
    FOREIGN KEY(frame_id) REFERENCES frames(frame_id) ON DELETE CASCADE);
CREATE UNIQUE INDEX frame_sensor_assignment ON frame_data(data_id, sensor_type);
CREATE TABLE images (image_id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    name TEXT NOT NULL UNIQUE, camera_id INTEGER NOT NULL,
    CONSTRAINT image_id_check CHECK(image_id >= 0 and image_id < 2147483647),
    FOREIGN KEY(camera_id) REFERENCES cameras(camera_id));
CREATE UNIQUE INDEX index_name ON images(name);
CREATE TABLE pose_priors (pose_prior_id INTEGER PRIMARY KEY NOT NULL,
    corr_data_id INTEGER NOT NULL, corr_sensor_id INTEGER NOT NULL,
    corr_sensor_type INTEGER NOT NULL, position BLOB, position_covariance BLOB, gravity BLOB,
    coordinate_system INTEGER NOT NULL);
CREATE TABLE keypoints (image_id INTEGER PRIMARY KEY NOT NULL, rows INTEGER NOT NULL,
    cols INTEGER NOT NULL, data BLOB,
    FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
CREATE TABLE descriptors (image_id INTEGER PRIMARY KEY NOT NULL, type INTEGER NOT NULL,
    rows INTEGER NOT NULL, cols INTEGER NOT NULL, data BLOB,
    FOREIGN KEY(image_id) REFERENCES images(image_id) ON DELETE CASCADE);
CREATE TABLE matches (pair_id INTEGER PRIMARY KEY NOT NULL, rows INTEGER NOT NULL,
    cols INTEGER NOT NULL, data BLOB);
CREATE TABLE two_view_geometries (pair_id INTEGER PRIMARY KEY NOT NULL, rows INTEGER NOT NULL,
    cols INTEGER NOT NULL, data BLOB, config INTEGER NOT NULL, F BLOB, E BLOB, H BLOB,
    qvec BLOB, tvec BLOB, camera1 BLOB, camera2 BLOB);
"""


def pair_id(image_id1: int, image_id2: int) -> int:
    a, b = sorted((image_id1, image_id2))
    return a * MAX_IMAGE_ID + b


def export_colmap(
    path: str | os.PathLike[str],
    features: Iterable[tuple[str, Features]],
    pairs: Iterable[tuple[str, str, Matches, Geometry | None]],
    cameras: Callable[[str, tuple[int, int]], Camera] | None = None,
) -> Path:
    """Write a COLMAP database at ``path`` (replaced atomically).

    ``features``: (image name, Features) in image-id order (ids from 1);
    ``pairs``: (name_a, name_b, Matches, Geometry or None). Both may be generators: they are
    read once, one item at a time. ``cameras(name, image_size)`` gives an image's
    :class:`visiontk.sfm.cameras.Camera` (images given one Camera object share one camera and
    rig); without it, one SIMPLE_RADIAL camera per image with COLMAP's focal length guess.
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.unlink()  # sqlite creates the file itself
        con = sqlite3.connect(tmp)
        try:
            # no rollback journal, no syncs: the file is this function's alone until it is
            # renamed into place (a crash leaves a temporary, removed by the next run), so
            # they would only cost time
            con.execute("PRAGMA journal_mode = OFF")
            con.execute("PRAGMA synchronous = OFF")
            con.executescript(SCHEMA)
            ids: dict[str, int] = {}
            # one row per Camera object (by id()), or per image without one
            camera_ids: dict[object, tuple[int, Camera | None]] = {}
            for image_id, (name, f) in enumerate(features, start=1):
                camera = cameras(name, f.image_size) if cameras is not None else None
                # one row per Camera object (kept here so that its id() stays its own)
                key = id(camera) if camera is not None else ("own", image_id)
                if key not in camera_ids:
                    camera_ids[key] = (
                        _insert_camera(con, len(camera_ids) + 1, camera, f.image_size),
                        camera,
                    )
                camera_id = camera_ids[key][0]
                con.execute("INSERT INTO frames VALUES (?, ?)", (image_id, camera_id))
                con.execute(
                    "INSERT INTO frame_data VALUES (?, ?, ?, ?)",
                    (image_id, image_id, camera_id, SENSOR_CAMERA),
                )
                con.execute("INSERT INTO images VALUES (?, ?, ?)", (image_id, name, camera_id))
                # x, y, scale, orientation: COLMAP's angle turns the same way as OpenCV's (both
                # atan2 of the gradient in y-down image coordinates; checked against pycolmap's
                # own SIFT on a rotated image in tests/pipeline/test_pipeline.py)
                kp = np.zeros((len(f), 4), np.float32)
                kp[:, :2] = f.xy + 0.5
                kp[:, 2] = f.size / 2
                kp[:, 3] = np.radians(f.angle) % (2 * np.pi)
                con.execute(
                    "INSERT INTO keypoints VALUES (?, ?, ?, ?)", (image_id, len(f), 4, kp.tobytes())
                )
                con.execute(
                    "INSERT INTO descriptors VALUES (?, ?, ?, ?, ?)",
                    (
                        image_id,
                        DESCRIPTOR_SIFT,
                        len(f),
                        128,
                        np.ascontiguousarray(f.descriptors, np.uint8).tobytes(),
                    ),
                )
                ids[name] = image_id
            for name_a, name_b, m, geometry in pairs:
                ia, ib = ids[name_a], ids[name_b]
                idx = m.pairs.astype(np.uint32)
                if ia > ib:  # COLMAP stores a pair's matches with the lower image id first
                    ia, ib, idx = ib, ia, idx[:, ::-1]
                pid = pair_id(ia, ib)
                con.execute(
                    "INSERT INTO matches VALUES (?, ?, ?, ?)",
                    (pid, len(idx), 2, np.ascontiguousarray(idx).tobytes()),
                )
                if geometry is not None and geometry.model is not None:
                    inl = np.ascontiguousarray(idx[geometry.inliers])
                    model = _to_colmap_pixels(geometry)
                    if ids[name_a] > ids[name_b]:
                        model = model.T if geometry.kind == "fundamental" else np.linalg.inv(model)
                    # only the estimated matrix: COLMAP reads a missing one as unset (zeros)
                    blobs: dict[str, bytes | None] = {"F": None, "E": None, "H": None}
                    blobs["F" if geometry.kind == "fundamental" else "H"] = model.tobytes()
                    con.execute(
                        "INSERT INTO two_view_geometries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                        "NULL, NULL)",
                        (
                            pid,
                            len(inl),
                            2,
                            inl.tobytes(),
                            CONFIG[geometry.kind],
                            blobs["F"],
                            blobs["E"],
                            blobs["H"],
                            np.array([1.0, 0, 0, 0]).tobytes(),
                            np.zeros(3).tobytes(),
                        ),
                    )
            con.commit()
        finally:
            con.close()
    return path


def _insert_camera(
    con: sqlite3.Connection, camera_id: int, camera: Camera | None, image_size: tuple[int, int]
) -> int:
    """A camera row and its trivial rig (rig id = camera id, as COLMAP's extractor makes)."""
    if camera is None:
        h, w = image_size
        model, width, height, prior = SIMPLE_RADIAL, w, h, 0
        params = np.array([1.2 * max(h, w), w / 2, h / 2, 0.0], np.float64)
    else:
        model, width, height = camera.model_id, camera.width, camera.height
        params, prior = np.array(camera.params, np.float64), int(camera.prior)
    con.execute(
        "INSERT INTO cameras VALUES (?, ?, ?, ?, ?, ?)",
        (camera_id, model, width, height, params.tobytes(), prior),
    )
    con.execute("INSERT INTO rigs VALUES (?, ?, ?)", (camera_id, camera_id, SENSOR_CAMERA))
    return camera_id


def _to_colmap_pixels(geometry: Geometry) -> np.ndarray:
    """H or F for points moved by +0.5 px: H' = T H T⁻¹, F' = T⁻ᵀ F T⁻¹ (T: the shift)."""
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    back = np.linalg.inv(shift)
    if geometry.kind == "fundamental":
        return back.T @ geometry.model @ back
    return shift @ geometry.model @ back
