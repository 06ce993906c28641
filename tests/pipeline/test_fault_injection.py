"""Fault injection: a run killed at random moments, and every kind of output and cache file
truncated or with a byte flipped, each followed by a rerun. Every case ends with the same
final result as an undisturbed run, or with one clear line and nothing lost. (A full disk and
a lost Dask scheduler: tests/pipeline/test_faults.py.)"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import pytest

ROOT = Path(__file__).resolve().parents[2]
VISIONTK = str(Path(sys.executable).parent / "visiontk")


def views(folder: Path, per_photo: int) -> Path:
    """Different small views (crops of the sample photos), ``per_photo`` of each."""
    folder.mkdir()
    k = 0
    for name in ("coffee.png", "astronaut.png", "motorcycle_left.png"):
        image = cv2.imread(str(ROOT / "sample_images" / name))
        for i in range(per_photo):
            cv2.imwrite(
                str(folder / f"v{k:02d}.png"), image[15 * i : 15 * i + 240, 20 * i : 20 * i + 320]
            )
            k += 1
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return views(tmp_path_factory.mktemp("twelve") / "photos", 4)


def command(photos, out, *extra):
    return [
        VISIONTK,
        "run",
        "sift-match-sequential",
        "--images",
        str(photos),
        "--out",
        str(out),
        "--quiet",
        "--colmap",
        *extra,
    ]


def contents(out: Path) -> dict:
    """Everything of a run that must come out the same: both HDF5 files, dataset by dataset,
    the COLMAP database's rows, and the summary's counts."""
    found = {}
    for name in ("features.h5", "matches.h5"):
        with h5py.File(out / name, "r") as h5:
            h5.visititems(
                lambda key, obj, name=name: (
                    found.__setitem__(f"{name}/{key}", obj[()].tobytes())
                    if isinstance(obj, h5py.Dataset)
                    else None
                )
            )
    with sqlite3.connect(out / "database.db") as db:
        for table in ("images", "keypoints", "descriptors", "matches", "two_view_geometries"):
            found[table] = sorted(db.execute(f"SELECT * FROM {table}").fetchall())
    summary = json.loads((out / "summary.json").read_text())
    found["counts"] = [summary[k] for k in ("images", "images_done", "pairs", "pairs_done")]
    return found


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    p = subprocess.run(command(photos, out), capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    return contents(out)


def test_killed_at_random_moments_then_resumed_gives_the_same_result(tmp_path):
    """Each attempt is killed once a random number (1 to 3) of images more are done, within a
    random 50 ms after: the kills land mid-run whatever the machine's speed (30 images, so
    that six attempts cannot finish them)."""
    photos = views(tmp_path / "photos", 10)
    clean = tmp_path / "clean"
    assert subprocess.run(command(photos, clean), capture_output=True, check=False).returncode == 0
    reference = contents(clean)
    out = tmp_path / "out"
    cached = out / ".cache" / "features"
    rng = random.Random(2026)
    kills = 0
    for _ in range(6):
        before = len(list(cached.glob("*.npz")))
        target = before + rng.randint(1, 3)
        proc = subprocess.Popen(
            command(photos, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while (
            proc.poll() is None
            and time.monotonic() < deadline
            and len(list(cached.glob("*.npz"))) < target
        ):
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 5  # the attempts land mid-run
    p = subprocess.run(command(photos, out), capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert contents(out) == reference
    assert not list(out.rglob("*.part"))  # no temporaries left behind


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        del data[len(data) // 2 :]
    elif how == "emptied":
        data.clear()
    else:
        data[len(data) * 2 // 3] ^= 0x5A
    path.write_bytes(bytes(data))


OUTPUTS = [
    "features.h5",
    "matches.h5",
    "database.db",
    "summary.json",
    "failures.json",
    "index.html",
    ".cache/features/*.npz",
    ".cache/pairs/*.npz",
]


@pytest.mark.parametrize("how", ["truncated", "emptied", "flipped"])
@pytest.mark.parametrize("target", OUTPUTS)
def test_each_kind_of_file_damaged_then_rerun_gives_the_same_result(
    photos, reference, tmp_path, target, how
):
    out = tmp_path / "out"
    p = subprocess.run(command(photos, out), capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    for path in sorted(out.glob(target))[:3]:
        _damage(path, how)
    p = subprocess.run(command(photos, out), capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert contents(out) == reference
