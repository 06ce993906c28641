"""The visiontk command, through click's runner and as the installed executable."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from privileges import permissions_apply
from visiontk_cli.main import main

import visiontk


def run(*args, cwd=None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def truncated_png(path: Path) -> Path:
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8))
    path.write_bytes(path.read_bytes()[:5000])
    return path


def run_installed(*args, preexec_fn=None) -> subprocess.CompletedProcess:
    """Run the installed ``visiontk`` console script, as a user would."""
    candidate = Path(sys.executable).parent / "visiontk"
    found = str(candidate) if candidate.exists() else shutil.which("visiontk")
    assert found, "the visiontk console script is not installed (pip install -e .)"
    return subprocess.run(
        [found, *map(str, args)], capture_output=True, text=True, check=False, preexec_fn=preexec_fn
    )


def unreadable_copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    target.chmod(0)
    return target


def test_unreadable_inputs_are_listed_like_missing_ones(samples, tmp_path):
    """A file without read permission used to be a usage error (exit 2) that processed
    nothing; it is one more bad input, listed at the end (exit 1), the good ones done."""
    noperm = unreadable_copy(samples / "coffee.png", tmp_path / "noperm.png")
    out = tmp_path / "feats"
    p = run_installed(
        "extract",
        noperm,
        tmp_path / "missing.png",
        samples / "coffee.png",
        "--out",
        out,
        "--max-features",
        "50",
        preexec_fn=permissions_apply,
    )
    assert p.returncode == 1, p.stderr
    assert sorted(q.name for q in out.iterdir()) == ["coffee.png.npz"]
    assert "2 of 3 images failed" in p.stderr and "Traceback" not in p.stderr
    assert "noperm.png: permission denied" in p.stderr and "missing.png: no such file" in p.stderr
    p = run_installed(
        "match", noperm, samples / "coffee.png", "--no-picture", preexec_fn=permissions_apply
    )
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [f"error: {noperm}: permission denied"]


def test_version_and_help(monkeypatch):
    from visiontk import simd

    out = run("--version").output
    assert visiontk.__version__ in out and f"CPU kernels: {simd.level()}" in out
    monkeypatch.setenv(simd.ENV, "generic")
    assert "CPU kernels: generic" in run("--version").output
    monkeypatch.setenv(simd.ENV, "sse9")
    assert "VISIONTK_SIMD='sse9': expected one of" in run("--version").output
    assert run("match", "--help").exit_code == 0  # help still shows
    monkeypatch.delenv(simd.ENV)
    for args in ([], ["match"], ["extract"]):
        result = run(*args, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_match_homography_pair_prints_summary_and_writes_picture(samples, tmp_path):
    out = tmp_path / "m.png"
    r = run("match", samples / "coffee.png", samples / "coffee_warped.png", "--out", out)
    assert r.exit_code == 0, r.output
    assert "matches:" in r.output and "homography:" in r.output and "time:" in r.output
    inliers = int(r.output.split("homography: ")[1].split()[0])
    assert inliers > 100
    pic = cv2.imread(str(out))
    assert pic.shape == (400, 1200, 3)


def test_match_json_and_fundamental(samples, tmp_path):
    r = run(
        "match",
        samples / "motorcycle_left.png",
        samples / "motorcycle_right.png",
        "--model",
        "fundamental",
        "--json",
        "--out",
        tmp_path / "f.png",
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert s["model"] == "fundamental" and s["inliers"] > 200
    F = np.array(s["matrix"])
    assert F.shape == (3, 3) and abs(np.linalg.det(F)) < 1e-6 * np.abs(F).max() ** 3 + 1e-12
    assert {"sift_a", "sift_b", "match", "verify"} <= set(s["seconds"])


def test_match_symmetric_keeps_the_two_sided_matches(samples):
    """--symmetric: the matches visiontk.match(symmetric=True) keeps, fewer than one-sided."""
    a, b = samples / "motorcycle_left.png", samples / "motorcycle_right.png"
    counts = {}
    for flag in ([], ["--symmetric"]):
        r = run("match", a, b, "--model", "none", "--json", "--no-picture", *flag)
        assert r.exit_code == 0, r.output
        counts[bool(flag)] = json.loads(r.output)["matches"]
    fa, fb = visiontk.sift(a), visiontk.sift(b)
    assert counts[True] == len(visiontk.match(fa, fb, symmetric=True)) < counts[False]


def test_match_true_homography_is_recovered(samples, tmp_path):
    r = run(
        "match", samples / "coffee.png", samples / "coffee_warped.png", "--json", "--no-picture"
    )
    H = np.array(json.loads(r.output)["matrix"])
    truth = np.loadtxt(samples / "coffee_warped_H.txt")
    assert visiontk.geometry.corner_error(H, truth, 600, 400, visible=True) < 1.0


def test_match_default_picture_name(samples, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("match", samples / "coffee.png", samples / "coffee_warped.png")
    assert r.exit_code == 0
    assert (tmp_path / "matches_coffee_coffee_warped.png").exists()


def test_match_out_in_a_missing_folder_is_an_error_before_the_work(samples, tmp_path):
    r = run(
        "match",
        samples / "coffee.png",
        samples / "coffee.png",
        "--out",
        tmp_path / "typo" / "m.png",
    )
    assert r.exit_code == 1 and "typo does not exist" in r.output
    assert "keypoints" not in r.output and not (tmp_path / "typo").exists()
    # a device or a pipe is not replaced by the picture (as root, /dev/full was), nor does
    # a name ending in a slash become a file
    os.mkfifo(tmp_path / "pipe.png")
    for target, words in (
        (tmp_path / "pipe.png", "not a regular file"),
        (f"{tmp_path}/new/", "is a folder"),
    ):
        r = run("match", samples / "coffee.png", samples / "coffee.png", "--out", target)
        assert r.exit_code == 1 and words in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.png"]
    assert (tmp_path / "pipe.png").is_fifo()


def test_flat_images_give_zero_matches_not_a_crash(tmp_path):
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((64, 64), 90, np.uint8))
    r = run("match", flat, flat, "--out", tmp_path / "x.png")
    assert r.exit_code == 0, r.output
    assert "matches: 0" in r.output and "no model" in r.output


def test_extract_good_and_bad(samples, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "feats"
    r = run(
        "extract",
        samples / "astronaut.png",
        bad,
        samples / "coffee.png",
        "--out",
        out,
        "--max-features",
        "50",
    )
    assert r.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png.npz", "coffee.png.npz"]
    assert "broken.jpg" in r.output and "1 of 3 images failed" in r.output
    # the flag reached the extractor: what the library gives for the same options
    assert len(visiontk.Features.load(out / "coffee.png.npz")) == len(
        visiontk.sift(samples / "coffee.png", max_features=50)
    )


def test_extract_name_clash_is_usage_error(samples, tmp_path):
    r = run("extract", samples / "coffee.png", samples / "coffee.png", "--out", tmp_path)
    assert r.exit_code == 2


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d / "missing.png", ["missing.png", "no such file"]),
        (lambda d: d, ["directory"]),
        (lambda d: (d / "t.txt").write_text("x") and d / "t.txt", ["t.txt", "not an image"]),
        (lambda d: truncated_png(d / "cut.png"), ["cut.png", "truncated"]),
        (
            lambda d: cv2.imwrite(str(d / "dot.png"), np.zeros((1, 1), np.uint8)) and d / "dot.png",
            ["dot.png", "1×1"],
        ),
    ],
)
def test_installed_command_bad_input_one_line_exit_1(tmp_path, samples, make, words):
    bad = make(tmp_path)
    p = run_installed("match", bad, samples / "coffee.png", "--no-picture")
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for w in words:
        assert w in lines[0]


def test_installed_command_usage_errors_exit_2(samples):
    p = run_installed("match", samples / "coffee.png")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    p = run_installed("match", "a", "b", "--ratio", "7")
    assert p.returncode == 2


@pytest.mark.skipif(visiontk.devices.cuda_status()[0], reason="a GPU is present")
def test_installed_command_cuda_without_gpu_is_explained(samples):
    coffee = samples / "coffee.png"
    p = run_installed("match", coffee, coffee, "--device", "cuda", "--no-picture")
    assert p.returncode == 1
    assert "device 'cuda': " in p.stderr and "Traceback" not in p.stderr
    assert ("visiontk[cuda12]" in p.stderr) or ("GPU" in p.stderr)


@pytest.mark.skipif(visiontk.devices.cuda_status()[0], reason="a GPU is present")
@pytest.mark.parametrize("stage", ["sift", "match"])
def test_pipeline_on_cuda_without_gpu_fails_once_before_any_image(samples, tmp_path, stage):
    """Every image (or pair) used to fail with the same message, and the console still named
    an empty features.h5."""
    spec = tmp_path / "gpu.toml"
    spec.write_text(
        '[[stages]]\nname = "load"\n\n[[stages]]\nname = "sift"\n\n[[stages]]\nname = "match"\n'
    )
    spec.write_text(
        spec.read_text().replace(f'name = "{stage}"\n', f'name = "{stage}"\ndevice = "cuda"\n')
    )
    p = run_installed("run", spec, "--images", samples, "--out", tmp_path / "out", "--quiet")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    [line] = p.stderr.strip().splitlines()
    assert line.startswith(f"error: stage {stage}: device 'cuda': ")
    assert not (tmp_path / "out" / "features.h5").exists() and "features:" not in p.stdout


def test_installed_command_huge_image_refused(tmp_path, samples):
    coffee = samples / "coffee.png"
    p = run_installed("match", coffee, coffee, "--max-pixels", 1000, "--no-picture")
    assert p.returncode == 1 and "limit" in p.stderr and "coffee.png" in p.stderr


def test_installed_command_accepts_16_bit_and_rgba(tmp_path, astronaut):
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    cv2.imwrite(
        str(tmp_path / "g16.png"),
        cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257,
    )
    p = run_installed(
        "match", tmp_path / "rgba.png", tmp_path / "g16.png", "--json", "--out", tmp_path / "m.png"
    )
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["inliers"] > 0.9 * summary["keypoints"][0]
    assert cv2.imread(str(tmp_path / "m.png")).shape == (512, 1024, 3)


def test_the_first_match_says_it_compiles_the_kernels(samples, tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    command = [
        str(Path(sys.executable).parent / "visiontk"),
        "match",
        samples / "coffee.png",
        samples / "coffee_warped.png",
        "--no-picture",
        "--device",
        "cpu",
    ]
    first, again = (
        subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        for _ in range(2)
    )
    assert first.returncode == again.returncode == 0
    assert first.stderr.startswith("compiling visiontk's CPU kernels") and again.stderr == ""
    times = first.stdout.split("time: ")[1].split("\n")[0]  # e.g. "sift_a 0.283 s, ..."
    assert "-" not in times, times  # the compile was once subtracted from sift_a


def test_an_image_too_large_for_memory_fails_alone(samples, tmp_path):
    """One image that took more memory than the process may have aborted the whole extract
    ('out of memory'): the good image was neither extracted nor listed."""
    import resource

    huge = tmp_path / "huge.png"
    cv2.imwrite(str(huge), np.zeros((16000, 16000), np.uint8))  # 256 MP: GBs of octaves

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

    p = run_installed(
        "extract",
        huge,
        samples / "coffee.png",
        "--out",
        tmp_path / "o",
        "--max-pixels",
        10**9,
        "--device",
        "cpu",
        preexec_fn=limit_memory,
    )
    assert p.returncode == 1, p.stderr
    assert sorted(q.name for q in (tmp_path / "o").iterdir()) == ["coffee.png.npz"]
    assert "1 of 2 images failed" in p.stderr and "huge.png: out of memory" in p.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["run", "sift", "--images", "", "--out", "o"],
        ["run", "sift", "--images", "IMAGES", "--out", ""],
        ["extract", "IMAGE", "--out", " "],
    ],
)
def test_empty_names_are_usage_errors_not_the_current_folder(samples, tmp_path, monkeypatch, args):
    """--images '' searched the current folder (a venv's 167 images); --out '' wrote a run
    into it."""
    monkeypatch.chdir(tmp_path)
    args = [
        str(samples) if a == "IMAGES" else str(samples / "coffee.png") if a == "IMAGE" else a
        for a in args
    ]
    r = run(*args)
    assert r.exit_code == 2 and "an empty name" in r.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("variable", "value"), [("VISIONTK_SIMD", "avx512"), ("NUMBA_CPU_FEATURES", "+avx2, +fma")]
)
def test_a_bad_cpu_setting_stops_a_run_before_any_item(
    samples, tmp_path, monkeypatch, variable, value
):
    """Said once with exit 2 (not once per pair, not an LLVM abort in every worker)."""
    monkeypatch.setenv(variable, value)
    out = tmp_path / "out"
    result = run("run", "sift-match", "--images", samples, "--out", out, "--quiet")
    assert result.exit_code == 2
    assert f"{variable}=" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()
    result = run("match", samples / "coffee.png", samples / "coffee_warped.png", "--no-picture")
    assert result.exit_code == 2 and f"{variable}=" in result.output
