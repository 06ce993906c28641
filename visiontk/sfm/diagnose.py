"""Why an image is not in the main model, and what is wrong with a scene as a whole.

Everything comes from evidence the run already has: the COLMAP database visiontk wrote
(keypoints, matched and verified pairs with their inliers) and the mapper's models. For each
image outside the largest model, :func:`diagnose` gives one reason, the first that holds of

1. ``"unreadable"``: the image failed before it had features (its failure says why);
2. ``"too few keypoints"``: dark, blurred or featureless;
3. ``"no verified pairs"``: no pair with enough inliers (COLMAP's mapper ignores pairs under
   15), to any image: a photo of something else;
4. ``"in another model"``: registered, but in a smaller model that never joined the main one;
5. ``"degenerate geometry"``: nearly all its verified pairs are explained by a homography
   (as COLMAP classifies a pair planar or panoramic): it only turned, or it sees one plane;
6. ``"weak links"``: too few of its keypoints see the main model's 3-D points for the mapper
   to place it (COLMAP's absolute pose needs 30 inliers);
7. ``"rejected by the mapper"``: links enough, but no pose passed the mapper's checks;

with a one-line detail that carries the numbers, and :data:`ADVICE` says what a person can do.
:func:`scene_warnings` flags a set that is mostly homography-dominant (planar, or the camera
only turned) or whose fitted focal lengths spread across the images.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..errors import one_line
from ..pipeline import colmap

REASONS = (
    "unreadable",
    "too few keypoints",
    "no verified pairs",
    "in another model",
    "degenerate geometry",
    "weak links",
    "rejected by the mapper",
)
#: What a person can do about each reason (the report shows it beside the image).
ADVICE = {
    "unreadable": "Check the file: open it, convert it to JPEG or PNG, or remove it.",
    "too few keypoints": "Dark, blurred or plain: retake it with more light and a steady hand, "
    "or lower the sift stage's contrast_threshold.",
    "no verified pairs": "Nothing else in the set shows what it shows: add photos that overlap "
    "it (by half or more), or leave it out.",
    "in another model": "Its group of photos never joined the main one: add photos that bridge "
    "the two groups (sparse/1 and on hold the other models).",
    "degenerate geometry": "Taken from the same spot as its partners, or of one flat surface: "
    "step sideways between photos instead of only turning, and include things at other depths.",
    "weak links": "It overlaps the model too little: add photos between it and its neighbours "
    "(smaller steps), or raise pairs-retrieval's neighbours.",
    "rejected by the mapper": "Its matches to the model gave no consistent pose (repeated "
    "patterns, moving things, a mirror): add photos around it, or try another seed.",
}
#: COLMAP's mapper (IncrementalPipelineOptions.min_num_matches): pairs with fewer inliers are
#: left out of its correspondence graph.
MIN_PAIR_INLIERS = 15
#: COLMAP's abs_pose_min_num_inliers: 2D-3D inliers an image needs to be registered.
MIN_POSE_LINKS = 30
#: Fewer keypoints than this, or than this share of the run's median image, is too few.
MIN_KEYPOINTS = 50
MIN_KEYPOINT_SHARE = 0.05
#: A pair is homography-dominant when a homography (COLMAP's 4 px) explains this share of its
#: verified inliers (COLMAP's max_H_inlier_ratio, two_view_geometry.cc).
HOMOGRAPHY_ERROR = 4.0
HOMOGRAPHY_RATIO = 0.8
#: Pairs tested for the scene's warning (evenly spread over the verified ones).
SCENE_PAIRS = 300
#: An image's geometry is degenerate when this share of its verified pairs is
#: homography-dominant; the scene warning fires at this share of the tested pairs (a box
#: scene on a textured floor has 35% such pairs overall, up to 56% for one image: not
#: degenerate; a panorama 100%).
DEGENERATE_SHARE = 0.8
PLANAR_SHARE = 0.7
#: ... or when the fitted focal lengths of cameras of one size spread by more than this
#: (10th to 90th percentile, over the median).
FOCAL_SPREAD = 0.15


@dataclass
class Evidence:
    """What the run knows of one image."""

    keypoints: int = 0
    matched: int = 0  # pairs matched (tried)
    verified: list = field(default_factory=list)  # (inliers, partner) with enough inliers
    best: tuple = (0, "")  # the strongest pair, verified or not: (inliers, partner)
    most_matches: tuple = (0, "")  # the pair with most matches: (matches, partner)
    model: int = -1  # the model it is registered in, -1: none


def diagnose(
    database: Path,
    models: list,
    names: list,
    failed: dict | None = None,
    min_model_size: int = 3,
) -> tuple[list[dict], list[str]]:
    """``database``: the COLMAP database the models were mapped from; ``models``: pycolmap
    Reconstructions, the main (largest) first; ``names``: every image of the run; ``failed``:
    name -> why, for the images that failed before they had features; ``min_model_size``: the
    mapper's smallest model (images). Returns the entries for
    ``not_registered`` (``{"image", "reason", "detail"}``, in name order) and the scene's
    warnings (one line each)."""
    failed = dict(failed or {})
    db = _Database(database)
    try:
        evidence = db.evidence(names, models)
        registered = {n for n, e in evidence.items() if e.model == 0}
        links = _links_to_model(db, models[0], set(names) - registered) if models else {}
        median = float(np.median([e.keypoints for e in evidence.values()] or [0]))
        entries = []
        for name in sorted(set(names) - registered):
            if name in failed:
                entries.append(_entry(name, "unreadable", one_line(failed[name])))
                continue
            entries.append(
                _judge(db, name, evidence[name], links.get(name, 0), median, models, registered)
            )
        usable = [e for e in entries if e["reason"] == "rejected by the mapper"]
        if not models and len(usable) < min_model_size:  # the mapper had too few to try
            for e in usable:
                e["detail"] = (
                    f"no model: {len(usable)} images with enough keypoints and verified pairs, "
                    f"fewer than min_model_size ({min_model_size})"
                )
        warnings = scene_warnings(db, models)
    finally:
        db.close()
    return entries, warnings


def _entry(name: str, reason: str, detail: str) -> dict:
    return {"image": name, "reason": reason, "detail": detail}


def _judge(
    db, name: str, e: Evidence, links: int, median: float, models: list, registered: set
) -> dict:
    """The first reason that holds of one image (see the module's list); ``links``: its
    keypoints that see the main model's points, ``registered``: the main model's images."""
    if e.keypoints < max(MIN_KEYPOINTS, MIN_KEYPOINT_SHARE * median):
        return _entry(
            name,
            "too few keypoints",
            f"{e.keypoints} keypoints (the run's median image has {median:.0f}): dark, "
            "blurred or without texture",
        )
    if not e.verified:
        if e.best[1]:
            best = f"the strongest pair {e.best[0]} inliers (with {e.best[1]})"
        elif e.most_matches[1]:
            best = f"none verified, at most {e.most_matches[0]} matches (with {e.most_matches[1]})"
        else:
            best = "no matches"
        return _entry(
            name,
            "no verified pairs",
            f"{e.keypoints} keypoints; matched with {e.matched} images, {best}; a pair needs "
            f"{MIN_PAIR_INLIERS} inliers",
        )
    strongest = max(e.verified)
    if e.model > 0:
        return _entry(
            name,
            "in another model",
            f"in model {e.model + 1} of {len(models)} ({models[e.model].num_reg_images()} "
            f"images, sparse/{e.model}); {len(e.verified)} verified pairs, the strongest "
            f"{strongest[0]} inliers with {strongest[1]}",
        )
    ratios = [db.homography_ratio(name, partner) for _, partner in e.verified]
    planar = [r for r in ratios if r >= HOMOGRAPHY_RATIO]
    if len(planar) >= DEGENERATE_SHARE * len(ratios):
        return _entry(
            name,
            "degenerate geometry",
            f"{len(planar)} of its {len(ratios)} verified pairs are homography-dominant (a "
            f"homography explains {np.median(planar):.0%} of their inliers): rotation only or "
            "one plane",
        )
    if not models:
        return _entry(
            name,
            "rejected by the mapper",
            f"no model: the mapper found no initial pair; {len(e.verified)} verified pairs, "
            f"the strongest {strongest[0]} inliers with {strongest[1]}",
        )
    if not any(partner in registered for _, partner in e.verified):
        outside = ", ".join(sorted(p for _, p in e.verified)[:3])
        return _entry(
            name,
            "weak links",
            f"its {len(e.verified)} verified pairs are all with images outside the model "
            f"({outside}{', ...' if len(e.verified) > 3 else ''}): a group too small or too "
            "loosely tied to join it",
        )
    if links < MIN_POSE_LINKS:
        return _entry(
            name,
            "weak links",
            f"{links} of its keypoints see the model's 3-D points ({MIN_POSE_LINKS} needed); "
            f"{len(e.verified)} verified pairs, the strongest {strongest[0]} inliers with "
            f"{strongest[1]}",
        )
    return _entry(
        name,
        "rejected by the mapper",
        f"{links} of its keypoints see the model's 3-D points, but no pose from them passed "
        "the mapper's checks (inlier ratio, triangulation angle)",
    )


def scene_warnings(db: _Database, models: list) -> list[str]:
    """One line per problem of the whole set: mostly homography-dominant pairs (a plane, or the
    camera only turned), fitted focal lengths that spread across cameras of one size."""
    warnings = []
    pairs = db.verified_pairs()
    if pairs:
        step = max(1, len(pairs) // SCENE_PAIRS)
        tested = pairs[::step][:SCENE_PAIRS]
        ratios = [db.homography_ratio(a, b) for a, b in tested]
        share = sum(r >= HOMOGRAPHY_RATIO for r in ratios) / len(ratios)
        if share >= PLANAR_SHARE:
            warnings.append(
                f"planar or rotation-only: {share:.0%} of {len(ratios)} verified pairs are "
                "explained by a homography, so depth, focal length and camera positions are "
                "poorly determined; step sideways between photos and include things at "
                "other depths"
            )
    if models:
        spread = focal_spread(models[0])
        if spread is not None and spread[0] > FOCAL_SPREAD:
            _, low, high, count = spread
            warnings.append(
                f"focal lengths disagree: fitted {low:.0f} to {high:.0f} px across {count} "
                "cameras of one size (the scene does not pin them down: planar, rotation "
                "only, or little depth); give the intrinsics (reconstruct's intrinsics or "
                "single_camera) if one camera took them"
            )
    return warnings


def focal_spread(model) -> tuple[float, float, float, int] | None:
    """(spread, 10th, 90th percentile, cameras) of the fitted focal lengths over the largest
    group of cameras of one image size, spread = (p90 - p10) / median; None with fewer than
    three such cameras."""
    groups = defaultdict(list)
    for camera in model.cameras.values():
        groups[(camera.width, camera.height)].append(float(camera.mean_focal_length()))
    focals = max(groups.values(), key=len, default=[])
    if len(focals) < 3:
        return None
    low, mid, high = np.percentile(focals, [10, 50, 90])
    return float((high - low) / mid), float(low), float(high), len(focals)


def _links_to_model(db: _Database, model, names: set) -> dict[str, int]:
    """name -> how many of its keypoints match a keypoint that sees one of ``model``'s 3-D
    points (through verified inliers): the 2D-3D correspondences the mapper could place it
    with."""
    seen = {}
    for image_id in model.reg_image_ids():
        image = model.image(image_id)
        seen[image.name] = np.array([p.has_point3D() for p in image.points2D], bool)
    links: dict[str, set] = defaultdict(set)
    for a, b, inliers in db.inlier_matches(names):
        for me, other, mine, theirs in ((a, b, *inliers.T), (b, a, *inliers[:, ::-1].T)):
            if me in names and other in seen:
                sees = seen[other]
                keep = theirs < len(sees)
                keep[keep] = sees[theirs[keep]]
                links[me].update(mine[keep].tolist())
    return {n: len(k) for n, k in links.items()}


class _Database:
    """Read access to the COLMAP database visiontk wrote (:mod:`visiontk.pipeline.colmap`)."""

    def __init__(self, path: Path):
        self.con = sqlite3.connect(
            f"file:{quote(Path(path).resolve().as_posix())}?mode=ro&immutable=1", uri=True
        )
        self.ids = {n: i for i, n in self.con.execute("SELECT image_id, name FROM images")}
        self.names = {i: n for n, i in self.ids.items()}
        self._keypoints: dict[int, np.ndarray] = {}
        self._ratios: dict[tuple[str, str], float] = {}

    def close(self) -> None:
        self.con.close()

    def _pair(self, pair_id: int) -> tuple[str, str]:
        return self.names[pair_id // colmap.MAX_IMAGE_ID], self.names[pair_id % colmap.MAX_IMAGE_ID]

    def evidence(self, names: list, models: list) -> dict[str, Evidence]:
        evidence = {n: Evidence() for n in names}
        for image_id, rows in self.con.execute("SELECT image_id, rows FROM keypoints"):
            if self.names.get(image_id) in evidence:
                evidence[self.names[image_id]].keypoints = rows
        for pair_id, rows in self.con.execute("SELECT pair_id, rows FROM matches"):
            a, b = self._pair(pair_id)
            for me, other in ((a, b), (b, a)):
                if me in evidence:
                    evidence[me].matched += 1
                    evidence[me].most_matches = max(evidence[me].most_matches, (rows, other))
        for pair_id, rows in self.con.execute("SELECT pair_id, rows FROM two_view_geometries"):
            a, b = self._pair(pair_id)
            for me, other in ((a, b), (b, a)):
                if me not in evidence:
                    continue
                e = evidence[me]
                e.best = max(e.best, (rows, other))
                if rows >= MIN_PAIR_INLIERS:
                    e.verified.append((rows, other))
        for k, model in enumerate(models):
            for image_id in model.reg_image_ids():
                name = model.image(image_id).name
                if name in evidence and evidence[name].model < 0:
                    evidence[name].model = k
        return evidence

    def verified_pairs(self) -> list[tuple[str, str]]:
        rows = self.con.execute(
            "SELECT pair_id FROM two_view_geometries WHERE rows >= ? ORDER BY pair_id",
            (MIN_PAIR_INLIERS,),
        )
        return [self._pair(p) for (p,) in rows]

    def inlier_matches(self, names: set):
        """(name_a, name_b, K×2 keypoint indices) of every verified pair with an image of
        ``names``."""
        for pair_id, rows, data in self.con.execute(
            "SELECT pair_id, rows, data FROM two_view_geometries WHERE rows >= ?",
            (MIN_PAIR_INLIERS,),
        ):
            a, b = self._pair(pair_id)
            if (a in names or b in names) and data:
                yield a, b, np.frombuffer(data, np.uint32).reshape(rows, 2).astype(np.int64)

    def keypoints(self, name: str) -> np.ndarray:
        image_id = self.ids[name]
        if image_id not in self._keypoints:
            rows, cols, data = self.con.execute(
                "SELECT rows, cols, data FROM keypoints WHERE image_id = ?", (image_id,)
            ).fetchone()
            self._keypoints[image_id] = np.frombuffer(data or b"", np.float32).reshape(rows, cols)[
                :, :2
            ]
        return self._keypoints[image_id]

    def homography_ratio(self, a: str, b: str) -> float:
        """The share of the pair's verified inliers a homography explains (RANSAC, 4 px)."""
        import cv2

        key = (min(a, b), max(a, b))
        if key in self._ratios:
            return self._ratios[key]
        ia, ib = sorted((self.ids[a], self.ids[b]))
        row = self.con.execute(
            "SELECT rows, data FROM two_view_geometries WHERE pair_id = ?",
            (colmap.pair_id(ia, ib),),
        ).fetchone()
        ratio = 0.0
        if row and row[0] >= 4 and row[1]:
            idx = np.frombuffer(row[1], np.uint32).reshape(row[0], 2).astype(np.int64)
            pa = self.keypoints(self.names[ia])[idx[:, 0]]
            pb = self.keypoints(self.names[ib])[idx[:, 1]]
            # a fixed seed for OpenCV's RANSAC: the same verdict every run
            cv2.setRNGSeed(0)
            _, mask = cv2.findHomography(pa, pb, cv2.RANSAC, HOMOGRAPHY_ERROR)
            ratio = float(mask.sum()) / row[0] if mask is not None else 0.0
        self._ratios[key] = ratio
        return ratio
