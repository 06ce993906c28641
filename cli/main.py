"""``visiontk``: SIFT matching and extraction from the shell.

Errors in the input are reported in one line on stderr; exit status 1 for failures, 2 for
usage errors, never a traceback (set VISIONTK_DEBUG=1 to see one for an internal error).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import click

import visiontk
from visiontk._files import writable_file, writable_folder
from visiontk.errors import VisiontkError, one_line
from visiontk.geometry import DEFAULT_THRESHOLD, MIN_INLIERS
from visiontk.matching import DEFAULT_RATIO

from . import networks, pipelines
from .common import (
    INPUT,
    OUT_FOLDER,
    compile_first,
    exit_if_failed,
    on_sigterm,
    sift_options,
    user_errors,
)


def print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: the version and the SIMD level of visiontk's CPU kernels (what a bug
    report about speed needs)."""
    if not value or ctx.resilient_parsing:
        return
    from visiontk import simd
    from visiontk.errors import OptionError

    try:
        level = simd.describe()
    except OptionError as exc:
        level = f"not chosen: {exc}"
    click.echo(f"visiontk {visiontk.__version__}; CPU kernels: {level}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=print_version,
    help="Show the version and the SIMD level of the CPU kernels, then exit.",
)
def main():
    """visiontk: SIFT features, matching and two-view geometry."""
    from visiontk.extract import own_process

    own_process()
    signal.signal(signal.SIGTERM, on_sigterm)


@main.command("match")
@click.argument("image_a", type=INPUT)
@click.argument("image_b", type=INPUT)
@click.option(
    "--out",
    "-o",
    type=click.Path(),
    default=None,
    help="Picture of the inlier matches [default: matches_<A>_<B>.png here].",
)
@click.option("--no-picture", is_flag=True, help="Do not write the picture.")
@click.option(
    "--model",
    type=click.Choice(["homography", "fundamental", "none"]),
    default="homography",
    show_default=True,
    help="Geometry to verify the matches with (fundamental for 3-D scenes).",
)
@click.option(
    "--ratio",
    type=click.FloatRange(0, 1, min_open=True),
    default=DEFAULT_RATIO,
    show_default=True,
    help="Lowe's ratio test.",
)
@click.option(
    "--mutual/--no-mutual",
    default=True,
    show_default=True,
    help="Keep only mutual nearest neighbours.",
)
@click.option(
    "--symmetric",
    is_flag=True,
    help="The ratio test from both images' sides (COLMAP's cross-check).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Inlier threshold in pixels [default: "
    f"{DEFAULT_THRESHOLD['homography']:g} for H, "
    f"{DEFAULT_THRESHOLD['fundamental']:g} for F].",
)
@click.option(
    "--min-inliers",
    type=click.IntRange(min=0),
    default=MIN_INLIERS,
    show_default=True,
    help="Fewer inliers than this: no model.",
)
@sift_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@user_errors
def match_command(
    image_a,
    image_b,
    out,
    no_picture,
    model,
    ratio,
    mutual,
    symmetric,
    threshold,
    min_inliers,
    preset,
    max_features,
    upright,
    rootsift,
    max_pixels,
    device,
    as_json,
):
    """Match two images: keypoints, matches, inliers, the model and time per stage."""
    from visiontk.io import load_rgb
    from visiontk.viz import MAX_LINES, draw_matches, save_image

    if not no_picture:  # an unwritable picture fails now, not after the work
        out = writable_file(out or Path(f"matches_{_safe_stem(image_a)}_{_safe_stem(image_b)}.png"))
    compile_first(device)
    result = visiontk.match_images(
        image_a,
        image_b,
        model=model,
        ratio=ratio,
        mutual=mutual,
        symmetric=symmetric,
        threshold=threshold,
        min_inliers=min_inliers,
        device=device,
        preset=preset,
        max_features=max_features,
        upright=upright,
        rootsift=rootsift,
        max_pixels=max_pixels,
    )
    summary = result.summary()
    if not no_picture:
        m = result.inlier_matches if model != "none" else result.matches
        title = f"{image_a.name} - {image_b.name}: {len(result.matches)} matches, " + (
            f"{summary['inliers']} {model} inliers" if model != "none" else "unverified"
        )
        if len(m) > MAX_LINES:
            title += f" ({MAX_LINES} drawn)"
        picture = draw_matches(
            load_rgb(image_a, max_pixels=max_pixels),
            load_rgb(image_b, max_pixels=max_pixels),
            result.features_a.xy[m.pairs[:, 0]],
            result.features_b.xy[m.pairs[:, 1]],
            title=title,
        )
        save_image(out, picture)
        summary["picture"] = str(out)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(_format_summary(summary))


def _safe_stem(path: Path) -> str:
    """A file stem fit for a default output name: no control characters, no separators."""
    return "".join(c if c.isprintable() and c not in "/\\" else "_" for c in path.stem)


def _format_summary(s: dict) -> str:
    lines = []
    rows = zip("AB", s["images"], s["image_sizes"], s["keypoints"], strict=True)
    for label, name, (h, w), n in rows:
        lines.append(f"{label}: {one_line(name)}  {w}×{h}  {n} keypoints")
    lines.append(f"matches: {s['matches']}")
    if s["model"] is not None:
        share = f" ({100 * s['inliers'] / s['matches']:.1f}%)" if s["matches"] else ""
        lines.append(f"{s['model']}: {s['inliers']} inliers{share}")
        if s["matrix"] is None:
            lines.append("  no model: too few consistent matches")
        else:
            lines.extend("  [" + "  ".join(f"{v: .6g}" for v in row) + "]" for row in s["matrix"])
    lines.append("time: " + ", ".join(f"{k} {v:.3f} s" for k, v in s["seconds"].items()))
    if "picture" in s:
        lines.append(f"picture: {one_line(s['picture'])}")
    return "\n".join(lines)


@main.command("extract")
@click.argument("images", nargs=-1, required=True, type=INPUT)
@click.option(
    "--out",
    "-o",
    type=OUT_FOLDER,
    required=True,
    help="Folder for the features files (<image file name>.npz).",
)
@sift_options
@user_errors
def extract_command(images, out, preset, max_features, upright, rootsift, max_pixels, device):
    """Extract SIFT features of each IMAGE into OUT/<name>.npz.

    Good images are all processed; bad ones are listed at the end and make the exit status 1.
    """
    names = [p.name for p in images]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise click.UsageError(
            f"several inputs share the file name {one_line(clashes[0])}; "
            "their outputs would overwrite each other"
        )
    writable_folder(out)
    compile_first(device)
    failed = []
    # iter_sift decodes (and on a GPU uploads) the next image while this one is processed.
    for path, feats in visiontk.iter_sift(
        images,
        device=device,
        preset=preset,
        max_features=max_features,
        upright=upright,
        rootsift=rootsift,
        max_pixels=max_pixels,
    ):
        if isinstance(feats, VisiontkError):
            failed.append(str(feats))
            continue
        target = feats.save(out / f"{path.name}.npz")
        click.echo(one_line(f"{path}: {len(feats)} keypoints -> {target}"))
    exit_if_failed(failed, len(images))


# the commands of the other modules (imported here: they need nothing from this one)
main.add_command(pipelines.run_command)
main.add_command(pipelines.stages_command)
main.add_command(networks.attention_command)
main.add_command(networks.branches_command)

if __name__ == "__main__":
    main()
