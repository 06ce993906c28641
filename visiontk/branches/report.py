"""The branch report: filter grids per branch, score histograms, the SVD scatter with filter
thumbnails, a statistics table, a JSON of every number and an HTML page holding them."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from .._files import atomic_write
from ..viz import save_image
from .analysis import BranchAnalysis

_THUMB = 4  # pixels per kernel tap in the filter grids


def filter_image(kernel: np.ndarray) -> np.ndarray:
    """An RGB kernel (3, kh, kw) as an RGB uint8 picture, 0 weight at mid grey."""
    k = kernel.transpose(1, 2, 0).astype(np.float64)
    scale = np.abs(k).max() or 1.0
    return np.clip(127.5 + 127.5 * k / scale, 0, 255).astype(np.uint8)


def filter_grid(weight: np.ndarray, order, columns: int = 12) -> np.ndarray:
    """Filters in ``order`` as a grid of upscaled thumbnails on white."""
    kh, kw = weight.shape[2:]
    cell_h, cell_w = kh * _THUMB + 4, kw * _THUMB + 4
    rows = max(1, -(-len(order) // columns))
    canvas = np.full((rows * cell_h, columns * cell_w, 3), 255, np.uint8)
    for n, unit in enumerate(order):
        r, c = divmod(n, columns)
        thumb = np.kron(filter_image(weight[unit]), np.ones((_THUMB, _THUMB, 1), np.uint8))
        canvas[
            r * cell_h + 2 : r * cell_h + 2 + kh * _THUMB,
            c * cell_w + 2 : c * cell_w + 2 + kw * _THUMB,
        ] = thumb
    return canvas


def _figure_to_array(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()


def write_report(result: BranchAnalysis, out: Path) -> dict:
    """Write every picture, ``branches.json`` and ``report.html`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    rgb = result.weight.shape[1] == 3  # deeper kernels have no picture of their own
    for b, part in enumerate(result.branches if rgb else []):
        units = np.arange(part.start, part.stop)
        order = units[np.argsort(-result.colour[units], kind="stable")]
        name = f"filters_{b}_{part.name}.png"
        save_image(out / name, filter_grid(result.weight, order))
        files[f"filters {part.name} (most colourful first)"] = name

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = np.linspace(0, 1, 21)
    fbins = np.linspace(0, max(0.05, float(result.frequency.max())) * 1.05, 21)
    for part in result.branches:
        sl = slice(part.start, part.stop)
        axes[0].hist(result.colour[sl], bins=bins, alpha=0.6, label=part.name)
        axes[1].hist(result.frequency[sl], bins=fbins, alpha=0.6, label=part.name)
    axes[0].set(xlabel="colour score (chroma energy / total)", ylabel="units")
    axes[1].set(xlabel="spatial frequency (cycles/pixel)", ylabel="units")
    axes[0].legend()
    fig.suptitle(f"{result.layer}: Mann–Whitney p = {result.p_value:.3g}")
    fig.tight_layout()
    save_image(out / "histograms.png", _figure_to_array(fig))
    plt.close(fig)
    files["score histograms per branch"] = "histograms.png"

    if result.svd is not None:
        coords = np.asarray(result.svd["coordinates"])
        fig, ax = plt.subplots(figsize=(8, 8))
        ax.scatter(coords[:, 0], coords[:, 1], s=4, c="k")
        for unit, (x, y) in enumerate(coords if rgb else []):
            thumb = np.kron(filter_image(result.weight[unit]), np.ones((2, 2, 1), np.uint8))
            ax.add_artist(AnnotationBbox(OffsetImage(thumb, zoom=1.0), (x, y), frameon=False))
        corr = result.svd["abs_correlation"]
        ax.set(
            xlabel=f"singular vector 1 (|r| colour {corr['axis1']['colour']:.2f}, "
            f"frequency {corr['axis1']['frequency']:.2f})",
            ylabel=f"singular vector 2 (|r| colour {corr['axis2']['colour']:.2f}, "
            f"frequency {corr['axis2']['frequency']:.2f})",
            title=f"{result.layer} units placed by SVD of |W({result.svd['next_layer']})|",
        )
        pad = 0.1 * (np.ptp(coords, axis=0).max() or 1)
        ax.set_xlim(coords[:, 0].min() - pad, coords[:, 0].max() + pad)
        ax.set_ylim(coords[:, 1].min() - pad, coords[:, 1].max() + pad)
        fig.tight_layout()
        save_image(out / "svd.png", _figure_to_array(fig))
        plt.close(fig)
        files["SVD placement"] = "svd.png"

    data = result.to_json()
    data["files"] = files
    with atomic_write(out / "branches.json") as tmp:
        tmp.write_text(json.dumps(data, indent=2))
    _write_html(out / "report.html", result, files)
    return data


def _write_html(path: Path, result: BranchAnalysis, files: dict) -> None:
    rows = "".join(
        f"<tr><td>{html.escape(b['name'])}</td><td>{b['start']}–{b['stop']}</td>"
        f"<td>{b['mean_colour']:.3f}</td><td>{b['mean_frequency']:.3f}</td>"
        f"<td>{b['colour_units']}</td><td>{b['p_value']:.3g}</td></tr>"
        for b in result.per_branch
    )
    cu = result.colour_units
    pictures = "".join(
        f"<h3>{html.escape(t)}</h3><img src='{html.escape(f)}'>" for t, f in files.items()
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>Branches of "
        f"{html.escape(result.layer)}</title><body style='font-family:sans-serif'>"
        f"<h1>Branch specialization: {html.escape(result.layer)}</h1>"
        f"<table border=1 cellpadding=4><tr><th>branch</th><th>units</th>"
        f"<th>mean colour</th><th>mean frequency</th><th>colour units</th>"
        f"<th>p (Mann–Whitney, vs rest)</th></tr>{rows}</table>"
        f"<p>Association of branch and colour: p = {result.p_value:.3g} (permutation test: "
        f"{result.permutation_p_value:.3g}). Colour units (score ≥ {cu['threshold']}): "
        f"{cu['total']}, per branch {cu['per_branch']}; chance of at least as many in "
        f"{html.escape(str(cu['branch']))}: {cu['p_at_least_observed']:.3g}.</p>"
        f"{pictures}</body>"
    )
    with atomic_write(path) as tmp:
        tmp.write_text(page)
