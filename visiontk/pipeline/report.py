"""The run report: ``OUT/index.html``, one page a person opens to see what a run did.

Counts, time per stage, every failure, a thumbnail per image (at most :data:`THUMBNAILS`: the
failed images first, then spread evenly over the rest), the match pictures of the strongest and
the weakest verified pairs, and the pictures of whole-run stages (the model of ``reconstruct``).
Pictures are made in a worker (:func:`make_pictures`: decoding images is the workers' job, so a
hostile file cannot take the runner down); the page itself is text written here. Everything the
page shows lives in ``OUT/report/`` and is linked relatively, so the folder can be moved.
"""

from __future__ import annotations

import errno
import html
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from .._files import atomic_write, own_folder
from ..errors import as_text
from .store import escape

if TYPE_CHECKING:
    from .tasks import PairPicture, PairReply, PicturesReply, PicturesTask

#: Images shown as thumbnails at most (a 10k-image run would otherwise decode 10k files).
THUMBNAILS = 200
THUMB_WIDTH = 240


def choose_thumbnails(named: list, failed: set) -> list:
    """(name, path) of the images to show: the failed first, then evenly spread."""
    bad = [item for item in named if item[0] in failed]
    good = [item for item in named if item[0] not in failed]
    room = max(0, THUMBNAILS - len(bad))
    step = max(1, -(-len(good) // room)) if room else len(good) + 1
    return (bad + good[::step])[:THUMBNAILS]


def choose_pairs(replies: list[PairReply]) -> dict[str, PairReply]:
    """The pairs the report draws: the strongest, and the weakest pair that is of any use (one
    with inliers, else the weakest of all) when it is not the same pair."""
    ranked = sorted(replies, key=lambda r: (r.strength, r.a, r.b))
    if not ranked:
        return {}
    useful = [r for r in ranked if r.strength[0] > 0] or ranked
    chosen = {"strongest": ranked[-1]}
    if useful[0] is not ranked[-1]:  # one useful pair is not two pictures of it
        chosen["weakest"] = useful[0]
    return chosen


def make_pictures(task: PicturesTask) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """In a worker: thumbnails and the pair pictures for the report. Returns the files made
    (relative to OUT): {name: thumbnail}, {label: {picture, caption}}; a picture that cannot
    be made is left out, never an error."""
    from ..viz import save_image, thumbnail

    out = Path(task.out)
    own_folder(out / "report" / "thumbs", out)
    thumbs, pairs = {}, {}
    for name, path in task.thumbs:
        small = thumbnail(path, THUMB_WIDTH)
        if small is not None:
            relative = f"report/thumbs/{escape(name)}.jpg"
            try:
                save_image(out / relative, small)
            except OSError as exc:  # an escaped name past 255 bytes: this one goes without
                if exc.errno != errno.ENAMETOOLONG:
                    raise
                continue
            thumbs[name] = relative
    for label, pair in task.pairs.items():
        try:
            pairs[label] = _pair_picture(out, label, pair)
        except Exception:  # an image that changed or vanished since: no picture of it
            continue
    return thumbs, pairs


def _pair_picture(out: Path, label: str, pair: PairPicture) -> dict[str, str]:
    from ..features import Features
    from ..io import load_rgb
    from ..viz import draw_matches, save_image
    from .store import read_pair

    matches, geometry = read_pair(Path(pair.pair_file))
    fa, fb = Features.load(pair.features_a), Features.load(pair.features_b)
    inliers = geometry.inliers if geometry is not None else None
    n = int(inliers.sum()) if inliers is not None else len(matches)
    caption = f"{label}: {pair.a} - {pair.b}, {n} inliers of {len(matches)} matches"
    picture = draw_matches(
        load_rgb(pair.path_a),
        load_rgb(pair.path_b),
        fa.xy[matches.pairs[:, 0]],
        fb.xy[matches.pairs[:, 1]],
        inliers,
        max_side=1200,
        title=caption,
    )
    relative = f"report/pair_{label}.jpg"
    save_image(out / relative, picture)
    return {"picture": relative, "caption": caption}


def write_index(
    out: Path,
    summary: dict,
    images: list,
    made: PicturesReply,
    pairs: list[PairReply],
    links: dict | None = None,
) -> Path:
    """``OUT/index.html`` from the run's summary; ``images``: (name, path) of every input;
    ``made``: what :func:`make_pictures` made; ``pairs``: the finished pairs' replies;
    ``links``: name -> the page (relative to OUT) a click on its thumbnail opens."""
    links = links or {}
    e = html.escape
    failures = summary.get("failures", [])
    parts = [_HEAD.format(title=e(f"visiontk run: {out.name}"))]
    parts.append(f"<h1>visiontk run <code>{e(str(out))}</code></h1>")
    rows = [
        (
            "images",
            f"{summary['images_done']} of {summary['images']} done "
            f"({summary['images_cached']} from earlier runs)",
        )
    ]
    if summary.get("pairs"):
        rows.append(
            (
                "pairs",
                f"{summary['pairs_done']} of {summary['pairs']} done"
                + _pair_medians([(r.matches, r.inliers) for r in pairs]),
            )
        )
    rows.append(("failed", str(len(failures))))
    for folder in summary.get("folders", []):
        name = Path(folder).name
        rows.append(("outputs", f'<a href="{_url(name)}/">{e(name)}/</a>'))
    rows.append(("time", f"{summary['seconds']:.1f} s"))
    parts.append(_table(None, rows))
    unregistered = {}  # name -> why, over the whole-run stages
    for stage, model in summary.get("models", {}).items():
        parts.append(f"<h2>{e(stage)}</h2>")
        parts.extend(f'<p class="warn">warning: {e(w)}</p>' for w in model.get("warnings", []))
        parts.append(_table(None, _model_rows(model)))
        for picture in model.get("pictures", []):
            parts.append(
                f'<p><a href="{_url(picture)}"><img class="wide" '
                f'src="{_url(picture)}" alt="{e(picture)}"></a></p>'
            )
        parts.extend(_viewer(Path(out), model))
        parts.extend(_not_registered(Path(out), model))
        unregistered.update({n["image"]: n["reason"] for n in model.get("not_registered", [])})
    if made.pairs:
        parts.append("<h2>The strongest pair, and the weakest that matched</h2>")
        for label in ("strongest", "weakest"):
            if label in made.pairs:
                pair = made.pairs[label]
                parts.append(
                    f'<figure class="pair"><img class="wide" '
                    f'src="{_url(pair["picture"])}" alt="{label} pair">'
                    f"<figcaption>{e(pair['caption'])}</figcaption></figure>"
                )
    parts.append("<h2>Time per stage</h2>")
    parts.append(
        _table(
            ["stage", "seconds"],
            [(e(k), f"{v:.2f}") for k, v in summary.get("stage_seconds", {}).items()],
        )
    )
    parts.append(f"<h2>Failures ({len(failures)})</h2>")
    if failures:
        parts.append(
            _table(
                ["item", "stage", "reason"],
                [(e(str(f["item"])), e(f["stage"]), e(f["reason"])) for f in failures],
            )
        )
    else:
        parts.append("<p>none</p>")
    failed = {str(f["item"]) for f in failures}
    shown = made.thumbs
    listed = [(n, p) for n, p in images if n in shown or str(p) in failed]
    parts.append(f"<h2>Images ({len(listed)} of {len(images)} shown)</h2><div class=grid>")
    for name, path in listed:
        bad = str(path) in failed
        why = "failed" if bad else unregistered.get(name)
        img = (
            f'<img src="{_url(shown[name])}" alt="{e(name)}">'
            if name in shown
            else "<div class=missing>no picture</div>"
        )
        if name in links and not bad:
            img = f'<a href="{_url(links[name])}">{img}</a>'

        look = "bad" if bad else "unregistered" if why else "ok"
        parts.append(
            f'<figure class="{look}">{img}'
            f"<figcaption>{e(name)}{f' ({e(why)})' if why else ''}</figcaption></figure>"
        )
    parts.append("</div></body></html>")
    path = Path(out) / "index.html"
    with atomic_write(path) as tmp:
        # a failed file's path that is not UTF-8 is shown with \\x escapes
        tmp.write_text(as_text("\n".join(parts)), encoding="utf-8")
    return path


def _url(relative: str) -> str:
    """A file under OUT as a relative URL: thumbnails are named by the escaped image name
    ("a%2Fx.png.jpg"), and a browser would read that "%2F" as a "/"."""
    return html.escape(quote(relative))


def _pair_medians(counts) -> str:
    """ "; median N inliers" over the verified pairs, or matches when none was verified."""
    counts = list(counts)
    verified = [k for _, k in counts if k >= 0]
    if verified:
        return f"; median {_median(verified)} inliers"
    return f"; median {_median([m for m, _ in counts])} matches" if counts else ""


def _model_rows(model: dict) -> list:
    e = html.escape
    if not model.get("models"):
        rows = [
            ("registered", f"{model.get('registered')} of {model.get('images')} images: no model")
        ]
    else:
        rows = [
            (
                "registered",
                f"{model.get('registered')} of {model.get('images')} images "
                f"in {model.get('models')} model(s)",
            ),
            ("3-D points", str(model.get("points"))),
            ("mean reprojection error", f"{model.get('mean_reprojection_error')} px"),
            ("mean track length", str(model.get("mean_track_length"))),
        ]
    if model.get("not_registered"):
        count = Counter(n["reason"] for n in model["not_registered"]).most_common()
        rows.append(("not registered", e(", ".join(f"{k} {why}" for why, k in count))))
    if model.get("cameras"):
        rows.append(("cameras", f"{model['cameras']} (one set of intrinsics each)"))
    if model.get("focal_length_from"):
        rows.append(
            (
                "focal length from",
                e(", ".join(f"{k} {v}" for k, v in model["focal_length_from"].items())),
            )
        )
    return rows


def _viewer(out: Path, model: dict) -> list[str]:
    """The interactive 3-D view of the model (its own page, shown in a frame), or how to get
    it."""
    from ..sfm.viewer import MISSING

    if not model.get("models"):
        return []
    viewer = model.get("viewer")
    if not viewer or not (out / viewer).is_file():
        return [f"<p>{html.escape(MISSING)}</p>"]
    url = _url(viewer)
    return [
        f'<p><a href="{url}">The model in 3-D</a> (turn it with the mouse, click a camera to '
        "see its photo; opens offline)</p>",
        f'<iframe class="viewer" src="{url}" title="the model in 3-D"></iframe>',
    ]


#: Rows of the table of images not registered (the rest are in summary.json).
NOT_REGISTERED_ROWS = 200


def _not_registered(out: Path, model: dict) -> list[str]:
    """The images a model left out: thumbnail, name, why (with the numbers) and what to do."""
    from ..sfm.diagnose import ADVICE

    e = html.escape
    entries = model.get("not_registered", [])
    if not entries:
        return []
    thumbs = model.get("thumbnails", {})
    rows = []
    for entry in entries[:NOT_REGISTERED_ROWS]:
        name, reason = entry["image"], entry["reason"]
        thumb = thumbs.get(name)
        picture = (
            f'<img class="thumb" src="{_url(thumb)}" alt="{e(name)}">'
            if thumb and (out / thumb).is_file()
            else "<div class=missing>no picture</div>"
        )
        rows.append(
            (
                picture,
                e(name),
                f"<b>{e(reason)}</b><br>{e(entry['detail'])}",
                e(ADVICE.get(reason, "")),
            )
        )
    more = len(entries) - len(rows)
    return [
        f"<h3>Not registered ({len(entries)})</h3>",
        _table(["", "image", "why", "what you can do"], rows),
        *([f"<p>and {more} more: summary.json lists them all</p>"] if more > 0 else []),
    ]


def _median(values) -> str:
    values = sorted(values)
    return str(values[len(values) // 2]) if values else "-"


def _table(header, rows) -> str:
    """An HTML table; ``header`` None for a two-column list of names and values."""
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; max-width: 1300px; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; vertical-align: top; }}
img.wide {{ max-width: 100%; border: 1px solid #ccc; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; width: 240px; border: 3px solid #2e7d32; }}
figure.bad {{ border-color: #c62828; }}
figure.unregistered {{ border-color: #ef6c00; }}
img.thumb {{ width: 200px; display: block; }}
iframe.viewer {{ width: 100%; height: 640px; border: 1px solid #ccc; }}
.warn {{ background: #fff3e0; border-left: 4px solid #ef6c00; padding: 6px 10px; }}
figure.pair {{ width: auto; border: none; margin: 8px 0 16px; }}
figure img {{ width: 100%; display: block; }}
figcaption {{ font-size: 12px; padding: 3px; word-break: break-all; }}
.missing {{ height: 180px; background: #eee; text-align: center; line-height: 180px; }}
</style></head><body>"""
