"""Accuracy and speed of visiontk's SIFT against cv2.SIFT, measured in the same run.

    python bench/sift_bench.py            # full table (about a minute on 2 cores)
    python bench/sift_bench.py --quick    # two photos, fewer repeats

Accuracy: real photos from scikit-image warped by known homographies (rotation, scale 0.5–2,
viewpoint, illumination, blur + JPEG). Both detectors are scored with the same matcher:
  MMA@1/3   share of mutual nearest-neighbour matches within 1/3 px of the true position;
  H@.5/1/3/5 share of pairs whose estimated homography (ratio 0.8 + mutual,
            visiontk.estimate_homography) has mean corner error under 0.5/1/3/5 px, over the
            part of the image both views see;
  rep       repeatability: keypoints re-detected within 3 px, over those visible in both;
  kp        keypoints per image.
Speed: extraction (detection + descriptors) of a 1920×1080 photo, median of N runs, as the
ratio visiontk / OpenCV.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import cv2
import numpy as np
import skimage.data
from readme import publish
from scipy.spatial import cKDTree

import visiontk
from visiontk.geometry import corner_error, estimate_homography

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "gravel", "moon", "coins",
          "immunohistochemistry"]


def similarity(w, h, angle, scale):
    return np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale), [0, 0, 1]])


def viewpoint(w, h, amount):
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[amount * w, amount * h], [w * (1 - amount / 2), 0], [w, h],
                      [0, h * (1 - amount)]])
    return cv2.getPerspectiveTransform(src, dst)


def jpeg(img, quality):
    _, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


# category -> list of (name, homography maker, photometric change)
WARPS = {
    "rotation": [(f"rot {a}°", lambda w, h, a=a: similarity(w, h, a, 1.0), None)
                 for a in (15, 45, 90, 160)],
    "scale": [(f"scale {s}", lambda w, h, s=s: similarity(w, h, 5, s), None)
              for s in (0.5, 0.7, 1.4, 2.0)],
    "viewpoint": [(f"view {v}", lambda w, h, v=v: viewpoint(w, h, v), None)
                  for v in (0.1, 0.2, 0.3)],
    "illumination": [
        ("gamma 2", lambda w, h: np.eye(3),
         lambda g: np.clip(255 * (g / 255.0) ** 2.0, 0, 255).astype(np.uint8)),
        ("gain 0.4", lambda w, h: np.eye(3), lambda g: (g * 0.4).astype(np.uint8)),
        ("gamma 0.5 + rot", lambda w, h: similarity(w, h, 20, 0.9),
         lambda g: np.clip(255 * (g / 255.0) ** 0.5, 0, 255).astype(np.uint8)),
    ],
    "blur+jpeg": [
        ("blur 2", lambda w, h: similarity(w, h, 10, 0.9),
         lambda g: cv2.GaussianBlur(g, (0, 0), 2.0)),
        ("jpeg 20", lambda w, h: similarity(w, h, 10, 0.9), lambda g: jpeg(g, 20)),
        ("blur 1.5 + jpeg 40", lambda w, h: viewpoint(w, h, 0.15),
         lambda g: jpeg(cv2.GaussianBlur(g, (0, 0), 1.5), 40)),
    ],
}


def gray_photo(name):
    img = getattr(skimage.data, name)()
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img


def extract_visiontk(gray):
    return visiontk.sift(gray)


OPENCV_SIFT = cv2.SIFT_create()


def extract_opencv(gray):
    kps, desc = OPENCV_SIFT.detectAndCompute(gray, None)
    return visiontk.Features.from_keypoints(kps, desc, gray.shape)


def project(H, xy):
    return cv2.perspectiveTransform(xy.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2)


def inside(xy, w, h):
    return (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)


def repeatability(fa, fb, H, w, h, eps=3.0):
    a = np.unique(fa.xy, axis=0)
    b = np.unique(fb.xy, axis=0)
    pa = project(H, a)
    a_vis = inside(pa, w, h)
    pb = project(np.linalg.inv(H), b)
    b_vis = inside(pb, w, h)
    denom = min(a_vis.sum(), b_vis.sum())
    if denom == 0 or b_vis.sum() == 0:
        return 0.0
    d, _ = cKDTree(b[b_vis]).query(pa[a_vis])
    return float(min((d <= eps).sum(), denom) / denom)


def score_pair(extract, gray_a, gray_b, H):
    h, w = gray_b.shape
    fa, fb = extract(gray_a), extract(gray_b)
    nn = visiontk.match(fa, fb, ratio=1.0, mutual=True)
    if len(nn):
        err = np.linalg.norm(project(H, fa.xy[nn.pairs[:, 0]]) - fb.xy[nn.pairs[:, 1]], axis=1)
        mma = [float(np.mean(err <= t)) for t in (1, 3)]
    else:
        mma = [0.0, 0.0]
    m = visiontk.match(fa, fb, ratio=0.8, mutual=True)
    # every model counts, however few its inliers: the bench scores detectors, not a policy
    g = estimate_homography(fa.xy[m.pairs[:, 0]], fb.xy[m.pairs[:, 1]], min_inliers=0)
    cerr = np.inf if g.model is None else corner_error(g.model, H, w, h, visible=True)
    return {"mma1": mma[0], "mma3": mma[1], "h05": float(cerr <= 0.5), "h1": float(cerr <= 1),
            "h3": float(cerr <= 3),
            "h5": float(cerr <= 5), "rep": repeatability(fa, fb, H, w, h),
            "kp": (len(fa) + len(fb)) / 2}


def accuracy(photos):
    rows = {}
    for category, warps in WARPS.items():
        scores = {"visiontk": [], "opencv": []}
        for photo in photos:
            gray = gray_photo(photo)
            h, w = gray.shape
            for _name, make_h, change in warps:
                H = make_h(w, h)
                warped = cv2.warpPerspective(gray, H, (w, h), flags=cv2.INTER_LINEAR)
                if change is not None:
                    warped = change(warped)
                scores["visiontk"].append(score_pair(extract_visiontk, gray, warped, H))
                scores["opencv"].append(score_pair(extract_opencv, gray, warped, H))
        rows[category] = {k: {**{m: float(np.mean([s[m] for s in v])) for m in v[0]},
                              "pairs": len(v)} for k, v in scores.items()}
    return rows


def speed(repeats):
    img = cv2.resize(skimage.data.coffee(), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    extract_visiontk(gray)  # load compiled kernels once
    extract_opencv(gray)
    ours, theirs = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        n_ours = len(extract_visiontk(gray))
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        n_theirs = len(extract_opencv(gray))
        theirs.append(time.perf_counter() - t)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    return {"visiontk_s": mo, "opencv_s": mt, "ratio": mo / mt, "keypoints": [n_ours, n_theirs],
            "repeats": repeats}


def table(acc):
    head = "| warp (pairs) | detector | MMA@1 | MMA@3 | H@0.5 | H@1 | H@3 | H@5 | rep | kp |"
    lines = [head, "|" + "---|" * 10]
    for category, by in acc.items():
        for det, s in by.items():
            cells = [f"{category} ({s['pairs']})", det, f"{s['mma1']:.3f}", f"{s['mma3']:.3f}",
                     *(f"{s[k]:.2f}" for k in ("h05", "h1", "h3", "h5")), f"{s['rep']:.3f}",
                     f"{s['kp']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two photos, 3 timing runs")
    parser.add_argument("--repeats", type=int, default=7, help="timing runs (median)")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--readme", action="store_true", help="write the tables into README.md")
    args = parser.parse_args()
    photos = PHOTOS[:2] if args.quick else PHOTOS
    acc = accuracy(photos)
    spd = speed(3 if args.quick else args.repeats)
    print(f"# visiontk {visiontk.__version__} vs OpenCV {cv2.__version__} "
          f"({platform.machine()}, {cv2.getNumThreads()} OpenCV threads), photos: "
          f"{', '.join(photos)}\n")
    print(table(acc))
    speed_line = (f"Extraction of a 1920×1080 photo (coffee, upscaled), median of "
                  f"{spd['repeats']}: **visiontk {spd['visiontk_s'] * 1000:.0f} ms, OpenCV "
                  f"{spd['opencv_s'] * 1000:.0f} ms: visiontk/OpenCV = {spd['ratio']:.2f}×** "
                  f"(keypoints {spd['keypoints'][0]} vs {spd['keypoints'][1]}).")
    print(f"\n{speed_line}")
    if args.readme and not args.quick:
        publish("sift_bench", table(acc), command="python bench/sift_bench.py --readme")
        publish("sift_speed", speed_line, command="python bench/sift_bench.py --readme")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"accuracy": acc, "speed": spd}, fh, indent=2)


if __name__ == "__main__":
    main()
