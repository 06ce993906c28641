"""Faults around a run: a worker that crashes, a parent killed with SIGKILL or SIGTERM,
temporaries a killed run left behind, the umask, outputs that cannot be written, and problems
that every item would hit, found before the first one."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from plugins import install_plugin

from visiontk._files import atomic_write
from visiontk.errors import VisiontkError
from visiontk.pipeline import Pipeline, registry
from visiontk.pipeline.store import read_features_h5

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_images"


def visiontk_command() -> str:
    return str(Path(sys.executable).parent / "visiontk")


@pytest.fixture
def images(tmp_path):
    """Three small photos; the one named crash.png is where the crashing stage crashes."""
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    coffee = cv2.imread(str(SAMPLES / "coffee.png"))
    for i, name in enumerate(("a.png", "crash.png", "b.png")):
        cv2.imwrite(str(folder / name), coffee[40 * i : 40 * i + 200, 60 * i : 60 * i + 260])
    return folder


@pytest.fixture
def crashing_stage(tmp_path, monkeypatch):
    """A plugin stage that dies of SIGSEGV (as native code does) on images named crash.png."""
    install_plugin(
        tmp_path,
        "vt_crash",
        '''
        import ctypes
        from dataclasses import dataclass
        from visiontk.pipeline import Stage

        @dataclass(frozen=True)
        class Options:
            pass

        class Crash(Stage):
            """Crash on crash.png."""
            name = "crash"
            kind = "image"
            inputs = ("features",)
            outputs = ("features",)
            Options = Options

            def run(self, context):
                if context["name"] == "crash.png":
                    ctypes.string_at(0)  # read address 0: SIGSEGV
                return {}

        @dataclass(frozen=True)
        class SleepOptions:
            marker: str = ""
            seconds: float = 60.0

        class Sleep(Stage):
            """Say so in a file (if given a marker), then take a while."""
            name = "sleep"
            kind = "image"
            inputs = ("path",)
            outputs = ()
            Options = SleepOptions

            def run(self, context):
                import os, time
                if self.options.marker:
                    open(f"{self.options.marker}.{os.getpid()}", "w").close()
                time.sleep(self.options.seconds)
                return {}
    ''',
        {"crash": "vt_crash:Crash", "sleep": "vt_crash:Sleep"},
        monkeypatch,
    )
    registry.refresh()
    yield [
        {"name": "load"},
        {"name": "sift", "max_features": 300},
        {"name": "crash"},
        {"name": "match"},
    ]
    registry.refresh()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_crashing_item_costs_only_itself(images, crashing_stage, tmp_path, workers):
    out = tmp_path / f"out{workers}"
    result = Pipeline.from_spec(crashing_stage).run(images, out, workers=workers, quiet=True)
    assert result.images_done == 2 and result.pairs_done == 1
    [failure] = result.failures
    assert failure["item"].endswith("crash.png") and "SIGSEGV" in failure["reason"]
    assert set(read_features_h5(out / "features.h5")) == {"a.png", "b.png"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_done"] == 2 and summary["stage_seconds"]["sift"] > 0
    assert json.loads((out / "failures.json").read_text()) == [failure]


def test_crash_through_the_command_line(images, crashing_stage, tmp_path):
    spec = tmp_path / "p.yaml"
    spec.write_text(json.dumps({"stages": crashing_stage}))
    p = subprocess.run(
        [
            visiontk_command(),
            "run",
            str(spec),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert p.returncode == 1, p.stderr
    assert "images: 2/3 done" in p.stdout
    assert "crash.png" in p.stderr and "SIGSEGV" in p.stderr and "Traceback" not in p.stderr
    assert (tmp_path / "o" / "summary.json").exists()


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with open(task / "children") as fh:
            found.update(int(c) for c in fh.read().split())
    return found


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie is dead, waiting for its reaper


def _start_run(images, out, *extra, pipeline="sift", settle=0.0):
    """A run slow enough to be killed mid-way: the same images many times over; returned
    ``settle`` seconds after the first image is in the cache."""
    many = out.parent / f"{out.name}-many"
    many.mkdir()
    for i in range(60):
        for p in images.glob("*.png"):
            (many / f"{i:02d}{p.name}").write_bytes(p.read_bytes())
    cmd = [visiontk_command(), "run", pipeline, "--images", str(many), "--out", str(out), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cached = out / ".cache" / "features"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if cached.exists() and list(cached.glob("*.npz")):
            time.sleep(settle)
            return proc, cmd
        time.sleep(0.05)
    raise AssertionError(f"the run did not start: {proc.communicate()}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_parent(images, crashing_stage, tmp_path):
    """Killed while both workers are busy for another minute: none of them outlives it."""
    marker = tmp_path / "busy"
    spec = tmp_path / "p.yaml"
    spec.write_text(json.dumps({"stages": [{"name": "sleep", "marker": str(marker)}]}))
    proc = subprocess.Popen(
        [
            visiontk_command(),
            "run",
            str(spec),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "2",
            "--quiet",
        ]
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(tmp_path.glob("busy.*"))) < 2:
        time.sleep(0.05)
    children = _children(proc.pid)
    busy = {int(p.suffix[1:]) for p in tmp_path.glob("busy.*")}
    assert len(busy) == 2 and busy <= children  # (and multiprocessing's resource tracker)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.1)
    assert not [c for c in children if _alive(c)], "orphaned processes"


def test_sigterm_stops_like_ctrl_c_and_the_rerun_resumes(images, crashing_stage, tmp_path):
    """Items that take 0.2 s each: SIGTERM lands while most are still to do."""
    spec = tmp_path / "slow.yaml"
    spec.write_text(
        json.dumps(
            {"stages": [{"name": "load"}, {"name": "sift"}, {"name": "sleep", "seconds": 0.2}]}
        )
    )
    out = tmp_path / "out"
    # a moment after the first image is cached its reply is counted (SIGTERM sent at once could
    # land before the parent heard of any); the copies of it that follow are cache hits
    proc, cmd = _start_run(images, out, "--workers", "2", pipeline=str(spec), settle=0.1)
    children = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["images_done"] < summary["images"]
    time.sleep(0.5)
    assert not [c for c in children if _alive(c)]
    again = subprocess.run(
        [*cmd, "--quiet"], capture_output=True, text=True, check=False, timeout=300
    )
    assert again.returncode == 0, again.stderr
    earlier = int(re.search(r"\((\d+) from earlier runs\)", again.stdout).group(1))
    assert earlier >= summary["images_done"]  # a worker may finish one the parent never heard of


def test_stale_temporaries_are_cleaned_and_nothing_else(images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = [
        out / ".features.h5.a1b2c3d4.part",
        out / ".database.db.zz_99xyz.part-journal",
        out / ".cache" / "features" / ".0123.npz.abcdefgh.part",
    ]
    keep = [out / "notes.part", out / "mine.txt"]
    for p in stale + keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    result = Pipeline.from_spec([{"name": "load"}, {"name": "sift"}]).run(images, out, quiet=True)
    assert result.ok
    assert not [p for p in stale if p.exists()]
    assert all(p.exists() for p in keep)


def test_outputs_respect_the_umask(images, tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "out"
        Pipeline.from_spec([{"name": "load"}, {"name": "sift"}]).run(images, out, quiet=True)
        with atomic_write(tmp_path / "x.txt") as tmp:
            tmp.write_text("x")
        files = [
            out / "features.h5",
            out / "summary.json",
            tmp_path / "x.txt",
            *(out / ".cache" / "features").glob("*.npz"),
        ]
        for f in files:
            assert stat.S_IMODE(f.stat().st_mode) == 0o640, f
    finally:
        os.umask(old)


def test_a_second_run_on_the_same_folder_is_refused(images, tmp_path):
    out = tmp_path / "out"
    proc, _ = _start_run(images, out, "--quiet")
    try:
        with pytest.raises(VisiontkError, match="another visiontk run"):
            Pipeline.from_spec([{"name": "load"}, {"name": "sift"}]).run(images, out, quiet=True)
    finally:
        proc.kill()
        proc.wait()


# --- fail before the work ---------------------------------------------------------------------


def _unprivileged(cmd, **kw):
    """Run a command without root's power to write anywhere: as root, inside a user namespace
    where our files are owned by an ordinary user (so permission bits apply to us)."""
    if os.geteuid() == 0:
        cmd = ["unshare", "--user", "--map-user=1000", "--map-group=1000", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


@pytest.fixture
def read_only(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    probe = _unprivileged(["touch", str(folder / "probe")])
    if probe.returncode == 0 or not shutil.which("touch"):
        pytest.skip("cannot drop the right to write everywhere here (root without user namespaces)")
    return folder


@pytest.mark.parametrize(
    "command",
    [
        ["run", "sift", "--images", "{samples}", "--out", "{ro}/run"],
        ["run", "sift", "--images", "{samples}", "--out", "{ro}"],
        ["extract", "{samples}/coffee.png", "--out", "{ro}/x"],
        ["match", "{samples}/coffee.png", "{samples}/coffee_warped.png", "--out", "{ro}/m.png"],
        ["branches", "{fixtures}/planted_alexnet.pth", "--out", "{ro}/b"],
        [
            "attention",
            "{samples}/coffee.png",
            "--weights",
            "{fixtures}/dino_tiny_p16.pth",
            "--out",
            "{ro}/a",
        ],
    ],
)
def test_unwritable_outputs_fail_at_once(command, read_only):
    args = [
        a.format(samples=SAMPLES, ro=read_only, fixtures=ROOT / "tests" / "fixtures")
        for a in command
    ]
    t0 = time.monotonic()
    p = _unprivileged([visiontk_command(), *args], timeout=120)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert str(read_only) in p.stderr and "permission denied" in p.stderr.lower()
    assert len(p.stderr.strip().splitlines()) == 1 and p.stdout == ""
    assert time.monotonic() - t0 < 30


def test_match_out_that_is_a_folder(tmp_path):
    p = subprocess.run(
        [
            visiontk_command(),
            "match",
            str(SAMPLES / "coffee.png"),
            str(SAMPLES / "coffee_warped.png"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 1 and "is a folder" in p.stderr and p.stdout == ""


def test_missing_or_malformed_pairs_file_fails_before_any_image(images, tmp_path):
    for text, words in ((None, "cannot read pairs file"), ("a.png b.png c.png\n", "two image")):
        pairs = tmp_path / "pairs.txt"
        pairs.unlink(missing_ok=True)
        if text is not None:
            pairs.write_text(text)
        spec = [
            {"name": "load"},
            {"name": "sift"},
            {"name": "pairs-file", "path": str(pairs)},
            {"name": "match"},
        ]
        out = tmp_path / f"out{text is None}"
        with pytest.raises(VisiontkError, match=words):
            Pipeline.from_spec(spec).run(images, out, quiet=True)
        assert not list((out / ".cache").rglob("*.npz"))


def test_dino_attention_without_weights_fails_once_before_any_image(images, tmp_path, monkeypatch):
    monkeypatch.delenv("VISIONTK_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch"))
    p = subprocess.run(
        [
            visiontk_command(),
            "run",
            "dino-attention",
            "--images",
            str(images),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ},
    )
    assert p.returncode == 1
    [line] = p.stderr.strip().splitlines()
    assert "weights option" in line and "--weights" not in line
    assert not (tmp_path / "o" / "attention").exists()


def test_attention_outputs_never_collide(tmp_path):
    import cv2

    coffee = cv2.imread(str(SAMPLES / "coffee.png"))
    for sub, flip in (("a", False), ("b", True)):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "x.png"), coffee[:, ::-1] if flip else coffee)
    cv2.imwrite(str(tmp_path / "a" / "x.jpg"), coffee)
    out = tmp_path / "att"
    p = subprocess.run(
        [
            visiontk_command(),
            "attention",
            str(tmp_path / "a" / "x.png"),
            str(tmp_path / "b" / "x.png"),
            str(tmp_path / "a" / "x.jpg"),
            "--weights",
            str(ROOT / "tests" / "fixtures" / "dino_tiny_p16.pth"),
            "--image-size",
            "64",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert {s.stem for s in out.glob("*.json")} == {"a%2Fx.png", "b%2Fx.png", "a%2Fx.jpg"}
    a, b = (cv2.imread(str(out / f"{s}%2Fx.png_heads.png")) for s in "ab")
    assert a.shape == b.shape and not np.array_equal(a, b)  # each image its own pictures


def test_a_script_without_a_main_guard_can_run_a_pipeline(images, tmp_path):
    """Workers are fresh interpreters: nothing re-imports the caller's script (multiprocessing's
    spawn would run it again in every worker and fail)."""
    script = tmp_path / "plain.py"
    script.write_text(
        "from visiontk.pipeline import Pipeline\n"
        f"r = Pipeline.from_spec([{{'name': 'load'}}, {{'name': 'sift'}}]).run({str(images)!r}, "
        f"{str(tmp_path / 'out')!r}, workers=2, quiet=True)\n"
        "print('done', r.images_done)\n"
    )
    p = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines() == ["done 3"]


def test_a_crashing_item_on_dask_costs_only_itself(images, crashing_stage, tmp_path):
    dask = pytest.importorskip("dask", reason="dask is installed with [test]")
    pytest.importorskip("distributed", reason="dask.distributed is installed with [test]")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        result = Pipeline.from_spec(crashing_stage).run(
            images, tmp_path / "out", workers=2, executor="dask", quiet=True
        )
    assert result.images_done == 2 and result.pairs_done == 1
    [failure] = result.failures
    assert failure["item"].endswith("crash.png") and "KilledWorker" in failure["reason"]


def test_workers_import_what_the_parent_imports_whatever_the_current_folder_holds(images, tmp_path):
    """A clone named visiontk run from its parent (a bare ``visiontk/`` folder where the user
    stands) and a ``cv2.py`` there: workers used to import both (``python -m`` puts the current
    folder first on sys.path) and every item failed, or ran the stranger's code."""
    here = tmp_path / "here"
    (here / "visiontk").mkdir(parents=True)
    (here / "visiontk" / "README.md").write_text("a clone's root, not the package\n")
    marker = tmp_path / "cv2_ran"
    (here / "cv2.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nraise ImportError('not OpenCV')\n"
    )
    p = subprocess.run(
        [
            visiontk_command(),
            "run",
            "sift-match",
            "--images",
            str(images),
            "--out",
            "run1",
            "--workers",
            "2",
            "--quiet",
        ],
        cwd=here,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    summary = json.loads((here / "run1" / "summary.json").read_text())
    assert (summary["images_done"], summary["pairs_done"]) == (3, 3)
    assert not marker.exists()


def test_the_first_run_compiles_the_kernels_once_and_says_so(images, tmp_path):
    """With an empty kernel cache, every worker used to compile the same kernels at once, in
    silence (16 s for 5 images on 2 cores); one worker compiles them now, the others load
    them, and the console says what is happening; the next run does not compile again."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    runs = []
    for out in ("first", "second"):
        p = subprocess.run(
            [
                visiontk_command(),
                "run",
                "sift-match",
                "--images",
                str(images),
                "--out",
                str(tmp_path / out),
                "--workers",
                "2",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert p.returncode == 0, p.stderr
        runs.append((p.stderr, json.loads((tmp_path / out / "summary.json").read_text())))
    (stderr, first), (again, second) = runs
    assert stderr.count("compiling visiontk's CPU kernels") == 1
    seconds = first["stage_seconds"]
    # compiling is ~10 s, SIFT on three small images a fraction of one: had the workers
    # compiled again, their sift time would hold it
    assert seconds["sift"] < seconds["compile kernels"] / 3, seconds
    assert "compiling" not in again and "compile kernels" not in second["stage_seconds"]


def _first_member_end(path) -> int:
    """Offset just past the data of a zip's first member (its local header: 30 bytes, then the
    name and the extra field, whose lengths are at 26 and 28)."""
    import struct
    import zipfile

    info = zipfile.ZipFile(path).infolist()[0]
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack(
        "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
    )
    return info.header_offset + 30 + name_len + extra_len + info.compress_size


def _h5_contents(path) -> dict:
    import h5py

    found = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(
            lambda name, obj: (
                found.__setitem__(name, obj[()].tobytes())
                if isinstance(obj, h5py.Dataset)
                else None
            )
        )
    return found


@pytest.mark.parametrize("damage", ["empty", "truncated", "flipped byte"])
def test_damaged_cache_files_are_computed_again(images, tmp_path, damage):
    """A cached result used to be trusted as soon as its file existed: an emptied features
    file (a power cut after a rename without fsync) aborted every later run on that item, a
    corrupt pair file gave 'internal error (BadZipFile)' for good."""
    out = tmp_path / "out"
    pipeline = Pipeline.from_spec(
        [
            {"name": "load"},
            {"name": "sift", "max_features": 300},
            {"name": "match"},
            {"name": "verify"},
        ]
    )
    first = pipeline.run(images, out, quiet=True)
    assert first.ok and first.pairs_done == 3
    features, matches = _h5_contents(first.features_path), _h5_contents(first.matches_path)
    for kind in ("features", "pairs"):
        victim = sorted((out / ".cache" / kind).glob("*.npz"))[0]
        data = victim.read_bytes()
        if damage == "empty":
            data = b""
        elif damage == "truncated":
            data = data[: len(data) // 2]
        else:  # the last byte of the first array's data (stored uncompressed)
            data = bytearray(data)
            data[_first_member_end(victim) - 1] ^= 0x55
            data = bytes(data)
        victim.write_bytes(data)
    again = pipeline.run(images, out, quiet=True)
    assert again.ok, again.failures
    assert (again.images_done, again.pairs_done) == (3, 3)
    # the zip's CRC of each array finds a flipped byte too: the two damaged files were made
    # again, the same as before
    assert again.images_cached == 2 and again.pairs_cached == 2
    assert _h5_contents(again.features_path) == features
    assert _h5_contents(again.matches_path) == matches


def test_file_names_that_are_not_utf8_are_run_and_shown_escaped(images, tmp_path):
    """Every image was extracted, then 'internal error (UnicodeEncodeError ... surrogates)',
    no file named, no features.h5, on every rerun."""
    folder = os.fsencode(images)
    os.rename(os.path.join(folder, b"b.png"), os.path.join(folder, b"bad\xff\xfe.png"))
    with open(os.path.join(folder, b"broken\xff.png"), "wb") as fh:
        fh.write(b"not an image")
    p = subprocess.run(
        [
            visiontk_command(),
            "run",
            "sift-match",
            "--images",
            str(images),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--colmap",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert p.returncode == 1 and "internal error" not in p.stderr  # only broken\xff.png failed
    assert "broken\\xff.png: not an image" in p.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["images_done"], summary["pairs_done"]) == (3, 3)
    groups = read_features_h5(tmp_path / "out" / "features.h5")
    assert "bad\\xff\\xfe.png" in groups and len(groups) == 3
    assert "bad\\xff\\xfe.png" in (tmp_path / "out" / "index.html").read_text()


def test_a_pairs_file_with_a_failed_image_runs_the_other_pairs(images, tmp_path):
    """'view_02.png is not one of the run's images' dropped every pair: no matches.h5, no
    report. The pairs of the failed image are listed; the others run."""
    (images / "crash.png").write_bytes(b"not an image any more")
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.png b.png\na.png crash.png\ncrash.png b.png\n")
    result = Pipeline.from_spec(
        [
            {"name": "load"},
            {"name": "sift", "max_features": 300},
            {"name": "pairs-file", "path": str(pairs)},
            {"name": "match"},
        ]
    ).run(images, tmp_path / "out", quiet=True)
    assert (result.images_done, result.pairs, result.pairs_done) == (2, 1, 1)
    listed = {f["item"]: f["reason"] for f in result.failures}
    assert set(listed) == {str(images / "crash.png"), "a.png crash.png", "crash.png b.png"}
    assert "image crash.png failed" in listed["a.png crash.png"]
    assert result.matches_path.exists() and (tmp_path / "out" / "index.html").exists()
    pairs.write_text("a.png nothere.png\n")  # a name that is none of the run's: an error
    with pytest.raises(VisiontkError, match=r"'nothere\.png' is not one of the run's images"):
        Pipeline.from_spec(
            [
                {"name": "load"},
                {"name": "sift", "max_features": 300},
                {"name": "pairs-file", "path": str(pairs)},
                {"name": "match"},
            ]
        ).run(images, tmp_path / "out2", quiet=True)


def test_symlinks_inside_out_are_never_followed(images, tmp_path):
    """A dangling OUT/.lock created its target outside OUT (as root, /etc/nologin); OUT/report
    and OUT/.cache as links wrote the report and the cache elsewhere."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / ".lock").symlink_to(elsewhere / "nologin")
    (out / "report").symlink_to(elsewhere, target_is_directory=True)
    (out / ".cache").symlink_to(elsewhere, target_is_directory=True)
    result = Pipeline.from_spec(
        [{"name": "load"}, {"name": "sift", "max_features": 300}, {"name": "match"}]
    ).run(images, out, quiet=True)
    assert result.ok and result.pairs_done == 3
    assert list(elsewhere.iterdir()) == []
    for name in (".lock", "report", ".cache"):
        assert not (out / name).is_symlink()
    assert len(list((out / "report" / "thumbs").iterdir())) == 3


def test_a_lock_that_is_a_folder_is_one_line(images, tmp_path):
    (tmp_path / "out" / ".lock").mkdir(parents=True)
    p = subprocess.run(
        [
            visiontk_command(),
            "run",
            "sift",
            "--images",
            str(images),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert p.returncode == 1 and "internal error" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'out' / '.lock'}: is a folder where visiontk keeps its lock file; "
        "remove it"
    ]


def test_symlinked_subfolders_are_searched_and_aliases_keep_their_names(images, tmp_path):
    """Images in a linked subfolder were skipped without a word; a linked alias of an image was
    reported under its target's name."""
    import shutil

    shelf = tmp_path / "shelf"
    shelf.mkdir()
    shutil.copy(images / "a.png", shelf / "c.png")
    (images / "linked").symlink_to(shelf, target_is_directory=True)
    (images / "loop").symlink_to(images, target_is_directory=True)  # must not loop
    (images / "alias.png").symlink_to(images / "b.png")
    result = Pipeline.from_spec([{"name": "load"}, {"name": "sift", "max_features": 100}]).run(
        images, tmp_path / "out", quiet=True
    )
    names = set(read_features_h5(result.features_path))
    assert names == {"a.png", "alias.png", "b.png", "crash.png", "linked/c.png"}


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB file system of its own (tmpfs), for a full disk; needs root (CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small file system here ({made.stderr.strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("room_kb", [40, 240, 1200])  # in the cache, the h5 files, the rest
def test_a_full_disk_is_said_once_and_the_rerun_finishes(images, small_disk, room_kb):
    """It was reported as a problem of the input images ('[load] view_11.png: No space left
    on device'), then as a long HDF5 internal error."""
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * max(0, free - room_kb * 1024))
    out = small_disk / "out"
    command = [
        visiontk_command(),
        "run",
        "sift-match",
        "--images",
        str(images),
        "--out",
        str(out),
        "--quiet",
    ]
    p = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        f"error: {out}: no space left on its disk; free some and run again (the finished "
        "work is kept and not redone)"
    ]
    if (out / "summary.json").exists():  # when there was room for it: never "ok"
        assert json.loads((out / "summary.json").read_text())["ok"] is False
    filler.unlink()
    p = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert p.returncode == 0, p.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["images_done"], summary["pairs_done"], summary["failures"]) == (3, 3, [])
    # a finished run is rerun on a nearly full disk: nothing changed, nothing big is written
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * max(0, free - 60 * 1024))
    p = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert p.returncode == 0, p.stderr


@pytest.fixture
def dask_cluster(tmp_path):
    """A Dask scheduler and one worker as separate processes, the worker in a working folder
    of its own; yields (address, start, stop) to stop and restart them."""
    pytest.importorskip("distributed", reason="dask.distributed is installed with [test]")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    dask = str(Path(sys.executable).parent / "dask")
    procs = []

    def start():
        procs.append(
            subprocess.Popen(
                [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                cwd=elsewhere,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                [dask, "worker", address, "--nthreads", "1", "--no-dashboard"],
                cwd=elsewhere,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        from dask.distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)

    def stop():
        for p in procs:
            p.kill()
            p.wait()
        procs.clear()

    start()
    yield address, start, stop, elsewhere
    stop()


def test_dask_runs_with_relative_paths_and_a_lost_scheduler_ends_the_run(
    images, crashing_stage, tmp_path, dask_cluster, monkeypatch
):
    """Relative --images/--out failed every image on workers whose working folder differs
    (and made OUT there); a scheduler killed mid-run hung the run until an outside timeout."""
    address, start, stop, elsewhere = dask_cluster
    monkeypatch.chdir(tmp_path)
    run = [
        visiontk_command(),
        "run",
        "sift-match",
        "--images",
        "images",
        "--out",
        "out",
        "--executor",
        "dask",
        "--scheduler",
        address,
        "--quiet",
    ]
    p = subprocess.run(run, capture_output=True, text=True, check=False, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["pairs_done"] == 3
    assert not (elsewhere / "out").exists()
    # a run whose items take a minute; its scheduler goes away once one has started
    spec = tmp_path / "slow.toml"
    spec.write_text(f'[[stages]]\nname = "sleep"\nmarker = "{tmp_path / "started"}"\n')
    slow = subprocess.Popen(
        [*run[:2], str(spec), *run[3:6], "slow", *run[7:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("started.*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(tmp_path.glob("started.*")), "no item started"
    stop()
    t0 = time.monotonic()
    _, stderr = slow.communicate(timeout=120)
    assert time.monotonic() - t0 < 60 and slow.returncode == 1
    [line] = stderr.strip().splitlines()  # no tracebacks from dask's own logs
    assert line.startswith("error: lost the Dask scheduler")
    start()  # the scheduler back: the runs resume from what is done
    p = subprocess.run(run, capture_output=True, text=True, check=False, timeout=300)
    assert p.returncode == 0, p.stderr
    again = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (again["images_cached"], again["pairs_cached"]) == (3, 3)


def test_other_runs_dangling_links_and_unreadable_folders_in_images(images, tmp_path):
    """Another run's output folder inside --images was read as input (4 -> 10 -> 22 -> 46
    images with a new --out each time); a dangling link and an unreadable subfolder were
    skipped without a word."""
    from privileges import permissions_apply

    def run(out):
        return subprocess.run(
            [
                visiontk_command(),
                "run",
                "sift-match",
                "--images",
                str(images),
                "--out",
                str(out),
                "--quiet",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            preexec_fn=permissions_apply,
        )

    for out in ("run1", "run2"):
        assert run(images / out).returncode == 0
    summary = json.loads((images / "run2" / "summary.json").read_text())
    assert summary["images"] == 3  # run1's thumbnails and pair pictures are no inputs
    (images / "gone.png").symlink_to(images / "nowhere.png")
    (images / "locked").mkdir()
    (images / "locked").chmod(0)
    p = run(tmp_path / "out")
    (images / "locked").chmod(0o755)
    assert p.returncode == 1
    listed = json.loads((tmp_path / "out" / "failures.json").read_text())
    reasons = sorted(f["reason"] for f in listed)
    assert reasons == [
        f"{images / 'gone.png'}: No such file or directory",
        f"{images / 'locked'}: cannot read this folder (Permission denied)",
    ]


def test_a_scheduler_without_workers_is_said_not_waited_on_in_silence(images, tmp_path):
    """The run printed nothing for ten minutes until a worker came."""
    pytest.importorskip("distributed", reason="dask.distributed is installed with [test]")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scheduler = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)
        run = subprocess.Popen(
            [
                visiontk_command(),
                "run",
                "sift",
                "--images",
                str(images),
                "--out",
                str(tmp_path / "out"),
                "--executor",
                "dask",
                "--scheduler",
                f"tcp://127.0.0.1:{port}",
                "--quiet",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        line = run.stderr.readline()  # blocks until the run says something
        run.terminate()
        run.communicate(timeout=60)
    finally:
        scheduler.kill()
        scheduler.wait()
    assert line.startswith("waiting for Dask workers: none is connected to tcp://127.0.0.1")
