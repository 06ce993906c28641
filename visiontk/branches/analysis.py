"""Scores per filter, per branch, and the statistics that say whether branches specialise.

* Colour score of an RGB kernel: split each pixel's (r, g, b) weight vector into its projection
  on (1, 1, 1)/√3 (luminance) and the rest (chroma); score = chroma energy / total energy
  (0: black and white, 1: pure colour contrast).
* Spatial frequency: radial centroid of the kernel's 2-D DFT power (cycles/pixel, DC excluded,
  zero-padded to 32×32), and the orientation (degrees, 0–180) of the strongest frequency.
* Deeper units: the |W|-weighted mean of the scores of the units they read (:func:`unit_scores`).
* Branch vs colour: Mann–Whitney U of each branch's scores against the others' (asymptotic
  normal p-values, which stay faithful far below 1e-8), a permutation test as a cross-check
  (its p-value cannot go below 1/(resamples+1)), and the hypergeometric chance that the colour
  units (score ≥ 0.5) land in one branch as observed, C(n_b, k)/C(N, k) when all of them do.
* SVD (Voss et al.): |W| of the next conv summed over kernel positions (out × in), its first two
  right singular vectors place the layer's units in a plane.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import OptionError
from .structure import Branch, infer_branches, parse_branch_spec
from .weights import ConvLayer

#: A unit is a "colour unit" when at least half its kernel energy is chroma.
COLOUR_UNIT = 0.5
#: Resamples of the permutation test.
PERMUTATIONS = 9999
_LUMA = np.ones(3) / np.sqrt(3.0)
_PAD = 32


def colour_scores(weight: np.ndarray) -> np.ndarray:
    """Chroma energy / total energy per filter of an (N, 3, kh, kw) kernel."""
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise OptionError(f"colour scores need RGB kernels (N, 3, kh, kw), got {weight.shape}")
    w = weight.astype(np.float64)
    luma = np.einsum("nchw,c->nhw", w, _LUMA)
    total = (w**2).sum(axis=(1, 2, 3))
    chroma = total - (luma**2).sum(axis=(1, 2))
    return np.divide(chroma, total, out=np.zeros_like(total), where=total > 0)


def frequency_and_orientation(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radial centroid of DFT power (cycles/pixel) and orientation of its peak (degrees)."""
    w = weight.astype(np.float64)
    spectrum = np.abs(np.fft.fft2(w, s=(_PAD, _PAD))) ** 2
    power = spectrum.sum(axis=1)  # over input channels
    fy = np.fft.fftfreq(_PAD)[:, None]
    fx = np.fft.fftfreq(_PAD)[None, :]
    radius = np.hypot(fy, fx)
    power[:, 0, 0] = 0.0  # the mean is not a frequency
    total = power.sum(axis=(1, 2))
    centroid = np.divide(
        (power * radius).sum(axis=(1, 2)), total, out=np.zeros_like(total), where=total > 0
    )
    peak = power.reshape(len(w), -1).argmax(axis=1)
    angle = (
        np.degrees(
            np.arctan2(
                np.broadcast_to(fy, radius.shape).ravel()[peak],
                np.broadcast_to(fx, radius.shape).ravel()[peak],
            )
        )
        % 180.0
    )
    return centroid, angle


def unit_scores(layers: list[ConvLayer], index: int) -> tuple[np.ndarray, np.ndarray]:
    """Colour and frequency scores of the units of ``layers[index]``.

    First-layer (RGB) units are scored from their kernels. A deeper unit inherits the mean of
    the scores of the units it reads, weighted by |W| summed over kernel positions (within its
    group): a proxy through the weights, meaningful when the layers form a plain chain (each conv
    reads the previous conv's units), as AlexNet's do.
    """
    layer = layers[index]
    if layer.weight.shape[1] == 3 and (index == 0 or layers[index - 1].out_channels != 3):
        colour = colour_scores(layer.weight)
        frequency, _ = frequency_and_orientation(layer.weight)
        return colour, frequency
    if index == 0:
        raise OptionError(
            f"layer {layer.name} reads {layer.weight.shape[1]} channels, not RGB, "
            "and no earlier conv is in the file"
        )
    prev_colour, prev_freq = unit_scores(layers, index - 1)
    n_prev = len(prev_colour)
    per_group = layer.in_per_group
    groups = layer.groups or n_prev // per_group
    if per_group * groups != n_prev or layer.out_channels % groups:
        raise OptionError(
            f"layer {layer.name} does not read {layers[index - 1].name}'s "
            f"{n_prev} units directly; scores of deeper units need a plain chain"
        )
    mag = np.abs(layer.weight.astype(np.float64)).sum(axis=(2, 3))  # (out, in per group)
    step = layer.out_channels // groups
    inputs = (np.arange(layer.out_channels)[:, None] // step) * per_group + np.arange(per_group)
    total = np.maximum(mag.sum(axis=1), 1e-12)
    return (
        (mag * prev_colour[inputs]).sum(axis=1) / total,
        (mag * prev_freq[inputs]).sum(axis=1) / total,
    )


def chance_all_in_branch(k: int, n_branch: int, n_total: int) -> float:
    """C(n_b, k) / C(N, k): all k units of a kind land in one branch of n_b by chance."""
    from scipy.special import gammaln

    if k > n_branch:
        return 0.0
    log = (
        gammaln(n_branch + 1)
        - gammaln(k + 1)
        - gammaln(n_branch - k + 1)
        - gammaln(n_total + 1)
        + gammaln(k + 1)
        + gammaln(n_total - k + 1)
    )
    return float(np.exp(log))


@dataclass
class BranchAnalysis:
    layer: str
    branches: list
    colour: np.ndarray
    frequency: np.ndarray
    orientation: np.ndarray
    weight: np.ndarray
    per_branch: list = field(default_factory=list)
    p_value: float = 1.0
    permutation_p_value: float = 1.0
    colour_units: dict = field(default_factory=dict)
    svd: dict | None = None

    def to_json(self) -> dict:
        return {
            "schema": "visiontk.branches/1",
            "layer": self.layer,
            "units": int(len(self.colour)),
            "p_value": self.p_value,
            "permutation_p_value": self.permutation_p_value,
            "colour_units": self.colour_units,
            "branches": self.per_branch,
            "units_detail": [
                {
                    "unit": i,
                    "colour": float(c),
                    "frequency": float(f),
                    "orientation": None if np.isnan(o) else float(o),
                }
                for i, (c, f, o) in enumerate(
                    zip(self.colour, self.frequency, self.orientation, strict=True)
                )
            ],
            "svd": self.svd,
        }


def analyse(
    layers: list[ConvLayer], *, layer: str | None = None, branches: str | None = None, seed: int = 0
) -> BranchAnalysis:
    """Scores, per-branch summaries, tests and the SVD placement for one layer's units.

    ``layer``: name of the conv whose units are analysed (default: the first);
    ``branches``: "name=start:stop,..." or None to infer them from the next conv's groups.
    """
    from scipy import stats

    index = (
        0 if layer is None else next((i for i, lay in enumerate(layers) if lay.name == layer), None)
    )
    if index is None:
        names = ", ".join(lay.name for lay in layers)
        raise OptionError(f"no conv layer named {layer!r} (layers: {names})")
    this = layers[index]
    following = layers[index + 1] if index + 1 < len(layers) else None
    parts = (
        parse_branch_spec(branches, this.out_channels)
        if branches
        else infer_branches(this, following)
    )
    colour, frequency = unit_scores(layers, index)
    if this.weight.shape[1] == 3:
        _, orientation = frequency_and_orientation(this.weight)
    else:
        orientation = np.full(this.out_channels, np.nan)
    result = BranchAnalysis(this.name, parts, colour, frequency, orientation, this.weight)

    member = np.full(this.out_channels, -1)
    for b, part in enumerate(parts):
        member[part.start : part.stop] = b
    rng = np.random.default_rng(seed)
    for b, part in enumerate(parts):
        inside, outside = colour[member == b], colour[(member != b) & (member >= 0)]
        u = stats.mannwhitneyu(inside, outside, alternative="two-sided", method="asymptotic")
        result.per_branch.append(
            {
                "name": part.name,
                "start": part.start,
                "stop": part.stop,
                "units": part.size,
                "mean_colour": float(inside.mean()),
                "median_colour": float(np.median(inside)),
                "mean_frequency": float(frequency[member == b].mean()),
                "colour_units": int((inside >= COLOUR_UNIT).sum()),
                "p_value": float(u.pvalue),
                "u_statistic": float(u.statistic),
            }
        )
    groups = [colour[member == b] for b in range(len(parts))]
    if len(parts) == 2:
        result.p_value = result.per_branch[0]["p_value"]
    else:
        result.p_value = float(stats.kruskal(*groups).pvalue)
    perm = stats.permutation_test(
        groups,
        _spread,
        permutation_type="independent",
        n_resamples=PERMUTATIONS,
        alternative="greater",
        random_state=rng,
    )
    result.permutation_p_value = float(perm.pvalue)

    analysed = member >= 0
    k = int((colour[analysed] >= COLOUR_UNIT).sum())
    counts = [int((g >= COLOUR_UNIT).sum()) for g in groups]
    best = int(np.argmax(counts))
    n_total, n_best = int(analysed.sum()), parts[best].size
    result.colour_units = {
        "threshold": COLOUR_UNIT,
        "total": k,
        "per_branch": counts,
        "branch": parts[best].name,
        # chance of at least the observed number in that branch (hypergeometric tail)
        "p_at_least_observed": float(stats.hypergeom.sf(counts[best] - 1, n_total, n_best, k))
        if k
        else 1.0,
        # the article's figure, when every colour unit is in that one branch
        "p_all_in_one_branch": chance_all_in_branch(k, n_best, n_total)
        if k and counts[best] == k
        else None,
    }
    if following is not None:
        result.svd = svd_placement(this, following, colour, frequency)
    return result


def _spread(*groups, axis=-1):
    means = [np.mean(g, axis=axis) for g in groups]
    return np.max(means, axis=0) - np.min(means, axis=0)


def svd_placement(layer: ConvLayer, following: ConvLayer, colour, frequency) -> dict:
    """Place ``layer``'s units by the first two right singular vectors of |W_next| (summed over
    kernel positions; a grouped conv contributes zeros between groups)."""
    out_n, per_group = following.weight.shape[:2]
    groups = following.groups or max(1, layer.out_channels // per_group)
    mag = np.abs(following.weight).sum(axis=(2, 3))
    full = np.zeros((out_n, per_group * groups))
    step = out_n // groups
    for g in range(groups):
        full[g * step : (g + 1) * step, g * per_group : (g + 1) * per_group] = mag[
            g * step : (g + 1) * step
        ]
    full = full[:, : layer.out_channels]
    _, s, vt = np.linalg.svd(full, full_matrices=False)
    coords = vt[:2].T
    corr = [
        [
            float(abs(np.corrcoef(coords[:, a], v)[0, 1])) if np.std(v) > 0 else 0.0
            for v in (colour, frequency)
        ]
        for a in range(2)
    ]
    return {
        "next_layer": following.name,
        "singular_values": [float(x) for x in s[:5]],
        "coordinates": coords.tolist(),
        "abs_correlation": {
            "axis1": {"colour": corr[0][0], "frequency": corr[0][1]},
            "axis2": {"colour": corr[1][0], "frequency": corr[1][1]},
        },
    }


__all__ = [
    "Branch",
    "BranchAnalysis",
    "analyse",
    "chance_all_in_branch",
    "colour_scores",
    "frequency_and_orientation",
]
