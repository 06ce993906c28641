"""Scaling out and surviving: process workers, a Dask LocalCluster, a run killed mid-way, and
the `visiontk run` / `visiontk stages` commands."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from test_pipeline import assert_same_h5

from visiontk.pipeline import Pipeline

SPEC = [
    {"name": "load"},
    {"name": "sift", "max_features": 400},
    {"name": "pairs-sequential", "window": 2},
    {"name": "match"},
    {"name": "verify", "model": "homography"},
]


@pytest.fixture(scope="module")
def views(tmp_path_factory, astronaut, coffee):
    """Twelve different views (rotations and zooms of two photos)."""
    d = tmp_path_factory.mktemp("views")
    for i in range(12):
        img = astronaut if i % 2 else coffee
        h, w = img.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 6 * i, 1 + 0.03 * i)
        cv2.imwrite(
            str(d / f"view{i:02d}.png"),
            cv2.cvtColor(cv2.warpAffine(img, m, (w, h)), cv2.COLOR_RGB2BGR),
        )
    return d


@pytest.fixture(scope="module")
def reference(views, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    r = Pipeline.from_spec(SPEC).run(views, out, quiet=True)
    assert r.ok and r.images_done == 12 and r.pairs_done == 21
    return r


def test_two_worker_processes_give_identical_outputs(views, reference, tmp_path):
    r = Pipeline.from_spec(SPEC).run(views, tmp_path, workers=2, quiet=True)
    assert r.ok
    assert_same_h5(r.features_path, reference.features_path)
    assert_same_h5(r.matches_path, reference.matches_path)


def test_dask_local_cluster_gives_identical_outputs(views, reference, tmp_path):
    pytest.importorskip("dask.distributed", reason="dask[distributed] is installed with [test]")
    r = Pipeline.from_spec(SPEC).run(views, tmp_path, workers=2, executor="dask", quiet=True)
    assert r.ok
    assert_same_h5(r.features_path, reference.features_path)
    assert_same_h5(r.matches_path, reference.matches_path)


def visiontk_command():
    return str(Path(sys.executable).parent / "visiontk")


def test_killed_run_resumes_to_the_same_result(views, reference, tmp_path):
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(
        "".join(
            "[[stages]]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in s.items())
            for s in SPEC
        )
    )
    out = tmp_path / "out"
    cmd = [
        visiontk_command(),
        "run",
        str(pipeline),
        "--images",
        str(views),
        "--out",
        str(out),
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    cached = out / ".cache" / "features"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if cached.exists() and len(list(cached.glob("*.npz"))) >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(cached.glob("*.npz")))
    assert 4 <= done_before < 12
    assert not (out / "features.h5").exists()  # nothing final was half-written
    again = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert not list(out.rglob("*.part"))
    assert_same_h5(out / "features.h5", reference.features_path)
    assert_same_h5(out / "matches.h5", reference.matches_path)


def test_run_command_reports_and_fails_on_bad_images(views, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("view00.png", "view01.png"):
        (mixed / name).write_bytes((views / name).read_bytes())
    (mixed / "bad.png").write_text("not an image")
    p = subprocess.run(
        [
            visiontk_command(),
            "run",
            "sift-match",
            "--images",
            str(mixed),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 1
    assert "images: 2/3 done" in p.stdout and "pairs: 1/1 done" in p.stdout
    assert "bad.png" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(
        [
            visiontk_command(),
            "run",
            "no-such-preset",
            "--images",
            str(mixed),
            "--out",
            str(tmp_path / "o2"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 2 and "no such pipeline file or preset" in p.stderr


def test_stages_command_lists_options_and_defaults():
    p = subprocess.run([visiontk_command(), "stages"], capture_output=True, text=True, check=False)
    assert p.returncode == 0
    # a SIFT option shows the default preset's value, resolved
    for line in (
        "sift  (image stage",
        "preset = 'accurate'",
        "max_features = 8192",
        "window = 5",
        "pairs stage",
        "model = 'homography'",
    ):
        assert line in p.stdout


def test_progress_lines_when_not_a_terminal(views, tmp_path):
    p = subprocess.run(
        [
            visiontk_command(),
            "run",
            "sift",
            "--images",
            str(views / "view0*.png"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0
    assert "images: 10/10" in p.stderr and "/s" in p.stderr
    q = subprocess.run(
        [
            visiontk_command(),
            "run",
            "sift",
            "--images",
            str(views / "view0*.png"),
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert q.stderr == "" and "10 from earlier runs" in q.stdout


def test_interrupted_run_says_so_and_resumes(views, tmp_path):
    cmd = [visiontk_command(), "run", "sift", "--images", str(views), "--out", str(tmp_path)]
    # A test suite started in the background (a shell's `cmd &`) inherits SIGINT ignored, and
    # an ignored signal stays ignored across exec: the child would never see Ctrl-C. A handler
    # in this process is reset to the default in the child.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    cached = tmp_path / ".cache" / "features"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if cached.exists() and list(cached.glob("*.npz")):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, (
        proc.returncode,
        out[-300:],
        err[-300:],
    )
    again = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "from earlier runs" in again.stdout


def test_workers_share_the_cores_out_in_blas_too(monkeypatch):
    """Two workers on two cores run one BLAS thread each. Setting the variable inside the
    worker came too late (numpy loads before any worker code), and two workers' spinning
    OpenBLAS threads made matching 4× slower."""
    from plugins import blas_threads

    from visiontk.pipeline.workers import WorkerPool

    if blas_threads() is None:
        pytest.skip("numpy is not built on OpenBLAS here: nothing to count")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: OpenBLAS runs one thread whatever the workers are told")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)  # two workers: one thread each
    with WorkerPool(2) as pool:
        replies = [reply for _, reply in pool.map_unordered(blas_threads, [0, 1])]
    assert replies == [1, 1]
