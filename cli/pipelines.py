"""``visiontk run`` and ``visiontk stages``: pipelines over folders, and what stages exist."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from visiontk.errors import one_line
from visiontk.pipeline.config import PIPELINES
from visiontk.pipeline.executors import AUTO_WORKERS_MAX, EXECUTORS

from .common import (
    OUT_FOLDER,
    check_cpu_settings,
    not_empty,
    user_errors,
)


@click.command(
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
    callback=not_empty,
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
@user_errors
def run_command(pipeline, images, out, workers, executor, scheduler, colmap, quiet):
    from visiontk.pipeline import Pipeline

    check_cpu_settings()
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
        for warning in m.get("warnings", []):
            click.echo(one_line(f"warning: {name}: {warning}"), err=True)
        if not m["models"]:
            if m["not_registered"]:
                click.echo(one_line(f"{name}: not registered: {_listed(m['not_registered'])}"))
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
        if m["not_registered"]:
            click.echo(one_line(f"{name}: not in the main model: {_listed(m['not_registered'])}"))
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


def _listed(entries: list[dict], shown: int = 5) -> str:
    """ "a.jpg (too few keypoints); b.jpg (no verified pairs); and 3 more (summary.json)"."""
    text = "; ".join(f"{e['image']} ({e['reason']})" for e in entries[:shown])
    more = len(entries) - shown
    return text + (f"; and {more} more (summary.json, report)" if more > 0 else "")


@click.command("stages")
@user_errors
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
