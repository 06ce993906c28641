"""``visiontk attention`` and ``visiontk branches``: looking inside networks (DINO attention,
branch specialization of CNN weights)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from visiontk._files import writable_folder
from visiontk.errors import OptionError, VisiontkError, one_line
from visiontk.vit.attention import MAX_IMAGE_SIZE, METHODS
from visiontk.vit.checkpoints import OFFICIAL as OFFICIAL_VITS
from visiontk.vit.cuts import MASKCUT_OBJECTS

from .common import (
    DEVICE,
    INPUT,
    OUT_FOLDER,
    exit_if_failed,
    user_errors,
)


@click.command("attention")
@click.argument("images", nargs=-1, required=True, type=INPUT)
@click.option(
    "--weights",
    "-w",
    type=INPUT,
    default=None,
    help="DINO, DINOv2 or DINOv3 weights (.pth, .safetensors or a Hugging Face folder; "
    "official, timm or Hugging Face layout) "
    "[default: look --model up in $VISIONTK_WEIGHTS, then the torch hub cache].",
)
@click.option(
    "--model",
    type=click.Choice(list(OFFICIAL_VITS)),
    default="dino_vits8",
    show_default=True,
    help="Which official weights to look up (DINO; DINOv2, _reg: with 4 registers; DINOv3).",
)
@click.option(
    "--out",
    "-o",
    type=OUT_FOLDER,
    required=True,
    help="Folder for <name>_heads.png, <name>_overlay.png, <name>_mask.png, <name>.json "
    "(and <name>_object<k>.png with --method maskcut, <name>_features.npy and "
    "<name>_pca.png with --features).",
)
@click.option(
    "--method",
    type=click.Choice(list(METHODS)),
    default="attention",
    show_default=True,
    help="Mask shown in the overlay and written as the mask PNG: the mean attention's mass "
    "mask, TokenCut's one object, or MaskCut's several (one colour and one "
    "<name>_object<k>.png each).",
)
@click.option(
    "--objects",
    type=click.IntRange(1, 20),
    default=MASKCUT_OBJECTS,
    show_default=True,
    help="With --method maskcut: most objects to cut out.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.6,
    show_default=True,
    help="Share of attention mass the attention masks keep (the heads' and --method attention's).",
)
@click.option(
    "--image-size",
    type=click.IntRange(0, MAX_IMAGE_SIZE),
    default=480,
    show_default=True,
    help="Shorter side fed to the ViT (0 keeps the size), then cropped from the top-left to "
    "a multiple of the patch size; at least 2 patches.",
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
@user_errors
def attention_command(
    images,
    weights,
    model,
    out,
    method,
    objects,
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
        for p in (
            _without_outputs([q for _, q in resolve_images(i, outputs=out)], out)
            if i.is_dir()
            else [i]
        )
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
        objects=objects if method == "maskcut" else 0,
    ):
        if isinstance(result, VisiontkError):
            failed.append(str(result))
            continue
        stem = stems[path]
        try:
            s = write_attention(result, out, stem, method, protect=images)
        except VisiontkError as exc:
            failed.append(str(exc))
            continue
        except OSError as exc:  # e.g. a name the file system refuses once suffixed
            failed.append(one_line(f"{out / stem}: cannot write the outputs ({exc.strerror})"))
            continue
        n = len(s.get("objects", []))
        found = f"{n} object{'' if n == 1 else 's'}, " if method == "maskcut" else ""
        click.echo(
            one_line(
                f"{path}: {s['heads']} heads, {s['grid'][0]}×{s['grid'][1]} "
                f"patches, {found}{method} mask covers "
                f"{100 * s['foreground_fraction']:.0f}% -> "
                f"{out / (stem + '_overlay.png')}"
            )
        )
    exit_if_failed(failed, len(images))


#: What `visiontk attention` writes beside <stem>: pictures that a folder must not yield back.
_OUTPUT_NAME = re.compile(r"(.+)_(heads|overlay|mask|pca|object[1-9]\d*)\.png")


def _without_outputs(paths: list[Path], out: Path) -> list[Path]:
    """A folder's images less the pictures an earlier run wrote into it, when ``out`` is that
    folder (those its JSON files account for: a user's photo named like one stays an input,
    and is then never replaced)."""
    from visiontk.vit.outputs import written_before

    out = out.resolve()
    kept = []
    for p in paths:
        found = _OUTPUT_NAME.fullmatch(p.name)
        if found and p.parent.resolve() == out and p.name in written_before(out, found[1]):
            continue
        kept.append(p)
    return kept


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


@click.command("branches")
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
@user_errors
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
