"""An interactive 3-D view of a model: one self-contained HTML file (plotly, inlined), so it
opens offline and moves with the run's folder.

Points in their colours, each registered camera as a frustum, and a dot at its centre; a click
on a camera shows its photo (small JPEGs inlined as data URIs) and its name beside the plot.
plotly is an optional dependency (``pip install 'visiontk[sfm]'`` brings it): without it
:func:`write_viewer` returns None and the report says how to get the view.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from .._files import atomic_write
from .pictures import FRUSTUM_EDGES, frustum, model_arrays, view_axes

#: Points drawn at most (an even sample beyond): the browser stays responsive and the file
#: small (about 60 bytes a point).
MAX_POINTS = 60000
#: Photos inlined at most (shown on click; the others show their name only).
MAX_PHOTOS = 300
PHOTO_WIDTH = 200
MISSING = "the interactive 3-D view needs plotly: pip install 'visiontk[sfm]'"


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("plotly") is not None


def write_viewer(model, path: Path, photos: dict | None = None, title: str = "") -> Path | None:
    """``OUT/model.html`` for a pycolmap Reconstruction; ``photos``: image name -> a small RGB
    array (shown when its camera is clicked). None when plotly is not installed."""
    if not available():
        return None
    import plotly.graph_objects as go

    xyz, rgb, images, Rs, ts, centres = model_arrays(model)
    count = len(xyz)
    if count > MAX_POINTS:
        keep = np.linspace(0, count - 1, MAX_POINTS).astype(np.int64)
        xyz, rgb = xyz[keep], rgb[keep]
    order = sorted(range(len(images)), key=lambda k: images[k].name)  # cameras by name
    images, Rs, ts, centres = [images[k] for k in order], Rs[order], ts[order], centres[order]
    # the model's frame is arbitrary: turn it so that up is up (as model.png)
    axes = view_axes(Rs, xyz if len(xyz) else centres)
    spread = np.ptp(centres @ axes.T, axis=0).max() if len(centres) > 1 else 1.0
    # frusta 6% of the cameras' spread, smaller when many crowd the view
    depth = 0.06 * min(1.0, np.sqrt(20 / len(images))) * spread if spread > 0 else 0.1
    segments = []
    for image, R, t in zip(images, Rs, ts, strict=True):
        camera = model.camera(image.camera_id)
        corners = frustum(R, t, camera.calibration_matrix(), camera.width, camera.height, depth)
        for a, b in FRUSTUM_EDGES:
            segments += [corners[a] @ axes.T, corners[b] @ axes.T, [np.nan] * 3]
    lines = np.array(segments, float).reshape(-1, 3)
    shown_xyz, shown_centres = xyz @ axes.T, centres @ axes.T
    names = [im.name for im in images]
    figure = go.Figure(
        [
            go.Scatter3d(
                x=shown_xyz[:, 0],
                y=shown_xyz[:, 1],
                z=shown_xyz[:, 2],
                mode="markers",
                marker={"size": 2, "color": [f"rgb({r},{g},{b})" for r, g, b in rgb]},
                hoverinfo="skip",
                name=f"{count} points",
            ),
            go.Scatter3d(
                x=lines[:, 0],
                y=lines[:, 1],
                z=lines[:, 2],
                mode="lines",
                line={"color": "#d32f2f", "width": 2},
                hoverinfo="skip",
                name="cameras",
            ),
            go.Scatter3d(
                x=shown_centres[:, 0],
                y=shown_centres[:, 1],
                z=shown_centres[:, 2],
                mode="markers",
                marker={"size": 5, "color": "#d32f2f"},
                text=names,
                hovertemplate="%{text}<extra>click: its photo</extra>",
                name=f"{len(images)} cameras (click one)",
            ),
        ]
    )
    figure.update_layout(
        title={"text": html.escape(title), "font": {"size": 14}},
        scene={
            "aspectmode": "data",
            "xaxis_visible": False,
            "yaxis_visible": False,
            "zaxis_visible": False,
        },
        margin={"l": 0, "r": 0, "t": 36, "b": 0},
        legend={"x": 0, "y": 1},
        paper_bgcolor="white",
    )
    plot = figure.to_html(
        full_html=False,
        include_plotlyjs=True,  # inlined: the page opens offline
        div_id="model",
        default_height="88vh",
        config={"displaylogo": False},
    )
    page = _PAGE.format(
        title=html.escape(title or "visiontk model"),
        plot=plot,
        photos=json.dumps(_photo_urls(names, photos or {})).replace("</", "<\\/"),
    )
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def _photo_urls(names: list[str], photos: dict) -> dict[str, str]:
    """name -> a data: URL of its photo as a small JPEG, for at most MAX_PHOTOS images spread
    evenly over the cameras."""
    import cv2

    from ..viz import shrink

    have = [n for n in names if photos.get(n) is not None]
    step = max(1, -(-len(have) // MAX_PHOTOS))
    urls = {}
    for name in have[::step]:
        photo = photos[name]
        ok, data = cv2.imencode(
            ".jpg",
            cv2.cvtColor(shrink(photo, PHOTO_WIDTH), cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, 80],
        )
        if ok:
            urls[name] = "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode()
    return urls


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 0; color: #222; }}
#side {{ position: fixed; top: 48px; right: 12px; width: 212px; padding: 8px; z-index: 10;
  background: rgba(255, 255, 255, 0.92); border: 1px solid #ccc; font-size: 13px; }}
#side img {{ width: 200px; border: 3px solid #d32f2f; display: none; }}
#name {{ word-break: break-all; margin-top: 6px; }}
</style></head><body>
<div id="plot">{plot}</div>
<div id="side"><b>Click a camera</b> (a red dot) to see its photo.
<p><img id="photo" alt=""></p><div id="name"></div></div>
<script>
const photos = {photos};
document.getElementById("model").on("plotly_click", function (event) {{
  const point = event.points[0];
  if (point.curveNumber !== 2) return;
  const name = point.text, img = document.getElementById("photo");
  document.getElementById("name").textContent = name;
  if (photos[name]) {{ img.src = photos[name]; img.style.display = "block"; }}
  else {{ img.style.display = "none"; }}
}});
</script></body></html>
"""
