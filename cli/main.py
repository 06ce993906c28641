"""``visiontk``: SIFT matching and extraction from the shell.

Errors in the input are reported in one line on stderr; exit status 1 for failures, 2 for
usage errors, never a traceback (set VISIONTK_DEBUG=1 to see one for an internal error).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path

import click

import visiontk
from visiontk._files import writable_file, writable_folder
from visiontk.devices import DEVICES
from visiontk.errors import OptionError, VisiontkError, one_line, out_of_memory
from visiontk.extract import DEFAULT_PRESET, SIFT_PRESETS
from visiontk.geometry import DEFAULT_THRESHOLD, MIN_INLIERS
from visiontk.io import DEFAULT_MAX_PIXELS
from visiontk.matching import DEFAULT_RATIO
from visiontk.pipeline.config import PIPELINES
from visiontk.pipeline.executors import AUTO_WORKERS_MAX, EXECUTORS
from visiontk.vit.attention import MAX_IMAGE_SIZE
from visiontk.vit.checkpoints import OFFICIAL as OFFICIAL_VITS

#: Input files: an unreadable one is reported by the readers, listed like a missing one, not
#: refused as a usage error before anything is done.
INPUT = click.Path(path_type=Path, readable=False)


class OutputFolder(click.Path):
    """An output folder, never the empty string (which a Path reads as the current folder,
    so that ``--out ''`` wrote a run into it)."""

    def __init__(self):
        super().__init__(file_okay=False)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty name; give a folder", param, ctx)
        # click types what it returns as str | bytes | PathLike: it is the str it was given
        return Path(os.fsdecode(super().convert(value, param, ctx)))


OUT_FOLDER = OutputFolder()

# Flags take their defaults from the one definition of each option (SiftOptions, io, backend);
# SIFT flags left out take the preset's value.
_ACCURATE, _OPENCV = SIFT_PRESETS["accurate"], SIFT_PRESETS["opencv"]
PRESET = click.option(
    "--preset",
    type=click.Choice(list(SIFT_PRESETS)),
    default=DEFAULT_PRESET,
    show_default=True,
    help="SIFT preset: accurate (COLMAP's choices, "
    f"{'RootSIFT, ' if _ACCURATE['rootsift'] else ''}COLMAP's cap of "
    f"{_ACCURATE['max_features']} detections) or opencv (cv2.SIFT's "
    "keypoints and descriptors); the flags below override it.",
)
DEVICE = click.option(
    "--device",
    type=click.Choice(DEVICES),
    default="auto",
    show_default=True,
    help="Where to compute: cuda needs CuPy and an NVIDIA GPU; auto uses one when present.",
)
MAX_FEATURES = click.option(
    "--max-features",
    type=click.IntRange(min=0),
    default=None,
    help="Keypoint cap (0 = all): accurate keeps COLMAP's whole "
    "coarsest levels past N detections, opencv the strongest N  "
    f"[default: as the preset, {_ACCURATE['max_features']} or "
    f"{_OPENCV['max_features']}]",
)
MAX_PIXELS = click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Refuse larger images.",
)
UPRIGHT = click.option(
    "--upright/--no-upright", default=None, help="No orientation: every angle is 0."
)
ROOTSIFT = click.option(
    "--rootsift/--no-rootsift", default=None, help="RootSIFT descriptors [default: as the preset]."
)


def sift_options(func):
    """The SIFT options every command that extracts features takes."""
    for option in reversed((PRESET, MAX_FEATURES, UPRIGHT, ROOTSIFT, MAX_PIXELS, DEVICE)):
        func = option(func)
    return func


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: work so far kept, one line, a rerun resumes."""


def _on_sigterm(signum, frame):
    raise Terminated


def _user_errors(func):
    """Turn visiontk's errors into one line on stderr and the error's exit status."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except VisiontkError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, SystemExit):
            raise
        except BrokenPipeError:
            # the reader went away (`visiontk stages | head`): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + signal.SIGPIPE)
        except KeyboardInterrupt as exc:
            # finished items are already on disk (atomically); a rerun resumes from them
            terminated = isinstance(exc, Terminated)
            click.echo("terminated" if terminated else "interrupted", err=True)
            sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
        except Exception as exc:
            if not out_of_memory(exc):
                if os.environ.get("VISIONTK_DEBUG"):
                    raise
                click.echo(
                    f"error: internal error ({type(exc).__name__}: {one_line(exc)}); "
                    "set VISIONTK_DEBUG=1 for details",
                    err=True,
                )
                sys.exit(1)
            params = {p.name for p in click.get_current_context().command.params}
            hint = " (try --max-features or a smaller image)" if "max_features" in params else ""
            click.echo(f"error: out of memory{hint}", err=True)
            sys.exit(1)

    return wrapper


def _not_empty(ctx, param, value: str) -> str:
    """``--images ''`` searched the current folder (a Path reads '' as '.')."""
    if not value.strip():
        raise click.BadParameter("an empty name; give a folder, a pattern or a list", ctx, param)
    return value


def _compile_first(device: str) -> None:
    """On the first use after an install, say why this run takes longer, and
    compile the CPU kernels into the cache (the GPU runs other code)."""
    from visiontk._numba_cache import COMPILE_NOTICE, compile_kernels, kernels_compiled
    from visiontk.devices import resolve_device

    if device != "cuda" and resolve_device(device) == "cpu" and not kernels_compiled():
        click.echo(COMPILE_NOTICE, err=True)
        compile_kernels()


def _exit_if_failed(failed: list, total: int) -> None:
    """After a batch: list the inputs that failed on stderr and exit 1 if there were any."""
    if failed:
        click.echo(f"{len(failed)} of {total} images failed:", err=True)
        for line in failed:
            click.echo(f"  {one_line(line)}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(visiontk.__version__, prog_name="visiontk")
def main():
    """visiontk: SIFT features, matching and two-view geometry."""
    from visiontk.extract import own_process

    own_process()
    signal.signal(signal.SIGTERM, _on_sigterm)


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
@_user_errors
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
    _compile_first(device)
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
@_user_errors
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
    _compile_first(device)
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
    _exit_if_failed(failed, len(images))


@main.command(
    "run",
    help=f"""Run PIPELINE (a .toml/.yaml file or a preset: {", ".join(PIPELINES)})
over a folder of images. Reruns skip finished work; exit status 1 if any item failed; SIGTERM
or Ctrl-C stop it with the work so far kept.""",
)
@click.argument("pipeline")
@click.option(
    "--images",
    "-i",
    required=True,
    callback=_not_empty,
    help="A folder (searched recursively), a glob pattern, or a .txt list of paths.",
)
@click.option(
    "--out",
    "-o",
    type=OUT_FOLDER,
    required=True,
    help="Output folder (features.h5, matches.h5, summary.json, failures.json).",
)
@click.option(
    "--workers",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes [default: one per core, at most "
    f"{AUTO_WORKERS_MAX}, at most one per image].",
)
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default="local",
    show_default=True,
    help="local processes, or a Dask cluster.",
)
@click.option(
    "--scheduler",
    default=None,
    help="Dask scheduler address (default: a LocalCluster of --workers processes).",
)
@click.option("--colmap", is_flag=True, help="Also write a COLMAP database (database.db).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@_user_errors
def run_command(pipeline, images, out, workers, executor, scheduler, colmap, quiet):
    from visiontk.pipeline import Pipeline

    result = Pipeline.from_file(pipeline).run(
        images,
        out,
        workers=workers,
        executor=executor,
        scheduler=scheduler,
        quiet=quiet,
        colmap=colmap,
    )
    s = result.summary()
    click.echo(
        f"images: {s['images_done']}/{s['images']} done ({s['images_cached']} from "
        f"earlier runs)"
        + (
            f"; pairs: {s['pairs_done']}/{s['pairs']} done ({s['pairs_cached']} from earlier runs)"
            if s["pairs"]
            else ""
        )
    )
    for key in ("features_path", "matches_path", "colmap_path"):
        if s[key] and (s["pairs_done"] if key == "matches_path" else s["images_done"]):
            click.echo(one_line(f"{key.split('_')[0]}: {s[key]}"))
    for folder in s["folders"]:  # what stages wrote of their own (OUT/attention, ...)
        click.echo(one_line(f"{Path(folder).name}: {folder}"))
    if (out / "index.html").exists():
        click.echo(one_line(f"report: {out / 'index.html'}"))
    no_model = []
    for name, m in s["models"].items():
        files = ", ".join(str(out / f) for f in m["files"][1:])
        if not m["models"]:
            why = m.get("why", "too few matches between them")
            no_model.append(
                f"{name}: no model ({m['registered']} of {m['images']} images "
                f"registered: {why}) -> {files}"
            )
            continue
        click.echo(
            one_line(
                f"{name}: {m['registered']} of {m['images']} images registered in "
                f"{m['models']} model(s), {m.get('cameras', '?')} camera(s); {m['points']} "
                f"points, reprojection error {m['mean_reprojection_error']} px, track length "
                f"{m['mean_track_length']} -> " + files
            )
        )
    click.echo(
        f"time: {s['seconds']:.1f} s ("
        + ", ".join(f"{k} {v:.1f}" for k, v in s["stage_seconds"].items())
        + ")"
    )
    if result.failures:
        click.echo(
            one_line(f"{len(result.failures)} failed (listed in {out / 'failures.json'}):"),
            err=True,
        )
        for f in result.failures:
            click.echo(f"  [{f['stage']}] {one_line(f['reason'])}", err=True)
    for line in no_model:  # the run's purpose failed: say so last, where it is seen
        click.echo(one_line(f"error: {line}"), err=True)
    if not result.ok:
        sys.exit(1)


@main.command("attention")
@click.argument("images", nargs=-1, required=True, type=INPUT)
@click.option(
    "--weights",
    "-w",
    type=INPUT,
    default=None,
    help="DINO or DINOv2 weights (.pth or .safetensors; official, timm or Hugging "
    "Face layout) "
    "[default: look --model up in $VISIONTK_WEIGHTS, then the torch hub cache].",
)
@click.option(
    "--model",
    type=click.Choice(list(OFFICIAL_VITS)),
    default="dino_vits8",
    show_default=True,
    help="Which official weights to look up (DINO; DINOv2, _reg: with 4 registers).",
)
@click.option(
    "--out",
    "-o",
    type=OUT_FOLDER,
    required=True,
    help="Folder for <name>_heads.png, <name>_overlay.png, <name>_mask.png, <name>.json.",
)
@click.option(
    "--method",
    type=click.Choice(["attention", "tokencut"]),
    default="attention",
    show_default=True,
    help="Mask shown in the overlay and written as the mask PNG.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.6,
    show_default=True,
    help="Share of attention mass the masks keep.",
)
@click.option(
    "--image-size",
    type=click.IntRange(0, MAX_IMAGE_SIZE),
    default=480,
    show_default=True,
    help="Shorter side fed to the ViT (0 keeps the size).",
)
@click.option("--largest-component", is_flag=True, help="Keep each mask's largest component.")
@click.option(
    "--features",
    is_flag=True,
    help="Also write the last layer's normalised patch features (<name>_features.npy, "
    "h×w×D float32) and their first three principal components (<name>_pca.png).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Images of one size per forward pass [default: 1 on the CPU, where "
    "batches do not pay, 16 on a GPU].",
)
@DEVICE
@_user_errors
def attention_command(
    images,
    weights,
    model,
    out,
    method,
    threshold,
    image_size,
    largest_component,
    features,
    batch_size,
    device,
):
    """DINO attention maps and object masks of each IMAGE (a file, or a folder of them),
    without labels."""
    from visiontk.io.inputs import resolve_images
    from visiontk.vit import ViT
    from visiontk.vit.attention import MIN_GRID, dino_attention_batches
    from visiontk.vit.outputs import write_attention

    images = [
        p
        for i in images
        for p in ([q for _, q in resolve_images(i, outputs=out)] if i.is_dir() else [i])
    ]
    writable_folder(out)
    vit = ViT.from_weights(weights, model=model, device=device)
    if 0 < image_size < MIN_GRID * vit.config.patch:
        raise OptionError(
            f"--image-size {image_size} gives fewer than {MIN_GRID}×{MIN_GRID} "
            f"patches of {vit.config.patch} pixels; use 0 or at least "
            f"{MIN_GRID * vit.config.patch}"
        )
    stems = dict(zip(images, _output_stems(images), strict=True))
    failed = []
    for path, result in dino_attention_batches(
        images,
        vit=vit,
        batch_size=batch_size,
        threshold=threshold,
        image_size=image_size,
        keep_largest=largest_component,
        features=features,
    ):
        if isinstance(result, VisiontkError):
            failed.append(str(result))
            continue
        stem = stems[path]
        s = write_attention(result, out, stem, method)
        click.echo(
            one_line(
                f"{path}: {s['heads']} heads, {s['grid'][0]}×{s['grid'][1]} "
                f"patches, {method} mask covers "
                f"{100 * s['foreground_fraction']:.0f}% -> "
                f"{out / (stem + '_overlay.png')}"
            )
        )
    _exit_if_failed(failed, len(images))


def _output_stems(paths: list[Path]) -> list[str]:
    """Output names for ``paths``: their stems when those are unique (and printable), else
    their paths relative to their common folder, escaped as the pipeline names images
    ("a%2Fx.png"), so two inputs never write the same files."""
    from visiontk.io.inputs import resolve_images
    from visiontk.pipeline.store import escape

    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems) and all(s.isprintable() and s for s in stems):
        return stems
    names = dict((path, name) for name, path in resolve_images(list(paths)))
    return [escape(names[p]) for p in paths]


@main.command("branches")
@click.argument("weights", type=INPUT)
@click.option(
    "--layer",
    default=None,
    help="Conv layer whose units are analysed [default: the first conv in the file].",
)
@click.option(
    "--branches",
    "spec",
    default=None,
    help="Channel ranges per branch, e.g. 1x1=0:64,3x3=64:192,5x5=192:224,"
    "pool=224:256 [default: from the next conv's groups].",
)
@click.option(
    "--out",
    "-o",
    type=OUT_FOLDER,
    required=True,
    help="Folder for the report (report.html, PNGs, branches.json).",
)
@_user_errors
def branches_command(weights, layer, spec, out):
    """Branch specialization of a CNN layer: colour and frequency per branch, statistics,
    SVD placement, and a report (WEIGHTS: .pth, .safetensors, .npz or .onnx)."""
    from visiontk.branches import analyse, read_conv_layers
    from visiontk.branches.report import write_report

    writable_folder(out)
    result = analyse(read_conv_layers(weights), layer=layer, branches=spec)
    data = write_report(result, out)
    click.echo(f"{result.layer}: {data['units']} units in {len(data['branches'])} branches")
    for b in data["branches"]:
        click.echo(
            f"  {b['name']} [{b['start']}:{b['stop']}]  mean colour {b['mean_colour']:.3f}"
            f"  mean frequency {b['mean_frequency']:.3f}  colour units "
            f"{b['colour_units']}"
        )
    click.echo(
        f"branch vs colour: p = {data['p_value']:.3g} (Mann-Whitney), "
        f"{data['permutation_p_value']:.3g} (permutation)"
    )
    click.echo(one_line(f"report: {out / 'report.html'}"))


@main.command("stages")
@_user_errors
def stages_command():
    """List the registered pipeline stages with their options and defaults."""
    from visiontk.pipeline import load_stage, option_fields, stage_names
    from visiontk.pipeline.stage import type_name

    for name in stage_names():
        cls = load_stage(name)
        click.echo(
            f"{name}  ({cls.kind} stage: {', '.join(cls.inputs)} -> {', '.join(cls.outputs)})"
        )
        doc = (cls.__doc__ or "").strip().splitlines()
        if doc:
            click.echo(f"    {doc[0]}")
        for option, typ, default in option_fields(cls):
            click.echo(f"    {option} = {default!r}  ({type_name(typ)})")


if __name__ == "__main__":
    main()
