"""Objects from a graph of patch features, without labels: TokenCut (one object) and MaskCut
(several).

* TokenCut (Wang et al. 2022): a graph over the last block's keys (cosine similarity, edge 1
  where ≥ 0.2 else 1e-5), the second smallest generalised eigenvector of (D − W, D), split at
  its mean; the foreground is the side holding the largest |value|, kept as the connected
  component of that seed patch.
* MaskCut (Wang et al. 2023, CutLER ``maskcut/maskcut.py``): the same cut with τ = 0.15, the
  foreground being the side that does not hold three or more of the grid's corners; then the
  found object's patches are zeroed out of the features (their edges fall to ε) and the graph
  is cut again, up to N objects. A cut that repeats an earlier object (IoU > 0.5) or keeps
  1% of the patches or less ends the search (CutLER lets its first cut keep less; a one-patch
  object is noise, and a blank image then gives none).
"""

from __future__ import annotations

import numpy as np

from ..errors import OptionError

#: TokenCut's similarity threshold and the weight of the edges below it.
TOKENCUT_TAU = 0.2
TOKENCUT_EPS = 1e-5
#: MaskCut's similarity threshold and number of objects (CutLER's defaults: --tau 0.15, N 3).
MASKCUT_TAU = 0.15
MASKCUT_OBJECTS = 3
#: MaskCut stops at a cut that overlaps an earlier object more than this (IoU) ...
MASKCUT_MAX_IOU = 0.5
#: ... or keeps this share of the patches or less (CutLER's ratio <= 0.01).
MASKCUT_MIN_SHARE = 0.01


#: Largest graph cut: its dense affinity is N² float64 (4096 patches: 134 MB). Larger grids
#: (ViT-S/8 at 2048², 65,536 patches, would need 34 GB) are cut on keys averaged over f × f
#: patches, and the masks are scaled back up.
MAX_CUT_PATCHES = 4096
#: Graphs of at least this many patches are solved with Lanczos iterations (ARPACK) instead of a
#: dense eigensolver: a 60 × 60 grid (ViT-S/8 at 480) took 5.7 s dense, 0.12 s this way, with the
#: same partition.
LANCZOS_PATCHES = 256


def second_eigenvector(
    feats: np.ndarray, tau: float, eps: float = TOKENCUT_EPS
) -> np.ndarray | None:
    """The second smallest generalised eigenvector of (D − W, D) of the graph whose edges are 1
    where the cosine similarity of two rows of ``feats`` (N × D) is ≥ ``tau``, else ``eps``.
    Rows of zeros (patches masked out) are joined to every patch by ``eps`` only. None when
    every edge weighs the same (a blank image): every cut is as good, so none is made."""
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    unit = feats / np.maximum(norms, 1e-12)
    weights = np.where(unit @ unit.T >= tau, 1.0, eps)
    if weights.min() == weights.max():
        return None
    degree = weights.sum(axis=1)
    if len(degree) < LANCZOS_PATCHES:
        from scipy.linalg import eigh

        _, vectors = eigh(np.diag(degree) - weights, np.diag(degree), subset_by_index=[1, 1])
        return vectors[:, 0]
    from scipy.sparse.linalg import eigsh

    # (D − W)x = λDx  <=>  D^-1/2 W D^-1/2 y = (1 − λ)y with x = D^-1/2 y: the second largest
    # eigenvector of a symmetric matrix, found by Lanczos from a fixed start (reproducible)
    scale = 1.0 / np.sqrt(degree)
    weights *= scale[:, None]
    weights *= scale[None, :]
    start = 1.0 + np.linspace(0.0, 1.0, len(degree))
    values, vectors = eigsh(weights, k=2, which="LA", v0=start)
    return vectors[:, int(np.argmin(values))] * scale


def _seed_component(part: np.ndarray, seed: int, grid: tuple[int, int]) -> np.ndarray:
    """The 4-connected component of the h × w bool grid ``part`` that holds patch ``seed``."""
    from scipy import ndimage

    labels, _ = ndimage.label(part.reshape(grid))
    return labels == labels.reshape(-1)[seed]


def coarse_grid(keys: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int], int]:
    """(keys, grid, f): the keys averaged over f × f patches (edge blocks over what they hold),
    f the smallest that leaves at most :data:`MAX_CUT_PATCHES` (1: unchanged)."""
    h, w = grid
    f = 1
    while -(-h // f) * -(-w // f) > MAX_CUT_PATCHES:
        f += 1
    if f == 1:
        return keys.astype(np.float64), grid, 1
    rows, cols = -(-h // f), -(-w // f)
    padded = np.zeros((rows * f, cols * f, keys.shape[-1]), np.float64)
    counts = np.zeros((rows * f, cols * f, 1), np.float64)
    padded[:h, :w] = keys.reshape(h, w, -1)
    counts[:h, :w] = 1
    sums = padded.reshape(rows, f, cols, f, -1).sum(axis=(1, 3))
    held = counts.reshape(rows, f, cols, f, 1).sum(axis=(1, 3))
    return (sums / held).reshape(rows * cols, -1), (rows, cols), f


def _fine(grid_values: np.ndarray, f: int, grid: tuple[int, int]) -> np.ndarray:
    """A coarse h' × w' array back on the h × w patch grid (each value over its f × f)."""
    return np.repeat(np.repeat(grid_values, f, axis=0), f, axis=1)[: grid[0], : grid[1]]


def tokencut(
    keys: np.ndarray, grid: tuple[int, int], tau: float = TOKENCUT_TAU, eps: float = TOKENCUT_EPS
) -> tuple[np.ndarray, np.ndarray]:
    """TokenCut foreground (h × w bool) and the eigenvector (h × w) from patch keys (N × D)."""
    feats, small, f = coarse_grid(keys, grid)
    vec = second_eigenvector(feats, tau, eps)
    if vec is None:
        return np.zeros(grid, bool), np.zeros(grid)
    part = vec > vec.mean()
    seed = int(np.argmax(np.abs(vec)))
    if not part[seed]:
        vec, part = -vec, ~part
    mask = _seed_component(part, seed, small)
    return _fine(mask, f, grid), _fine(vec.reshape(small), f, grid)


def maskcut(
    keys: np.ndarray,
    grid: tuple[int, int],
    objects: int = MASKCUT_OBJECTS,
    tau: float = MASKCUT_TAU,
    eps: float = TOKENCUT_EPS,
) -> list[np.ndarray]:
    """Up to ``objects`` disjoint object masks (each h × w bool), in the order they were cut,
    from patch keys (N × D, N = h·w).

    Example
    -------
    >>> masks = maskcut(result_keys, (30, 40), objects=3)  # doctest: +SKIP
    >>> [m.sum() for m in masks]  # doctest: +SKIP
    [212, 96, 41]
    """
    if objects < 1:
        raise OptionError(f"objects must be >= 1, got {objects}")
    feats, small, f = coarse_grid(keys, grid)
    return [_fine(m, f, grid) for m in _maskcut(feats, small, objects, tau, eps)]


def _maskcut(feats, grid, objects, tau, eps) -> list[np.ndarray]:
    h, w = grid
    painted = np.zeros(h * w, bool)
    corners = [0, w - 1, (h - 1) * w, h * w - 1]
    found: list[np.ndarray] = []
    for _ in range(objects):
        if (~painted).sum() < 2:
            break
        vec = second_eigenvector(np.where(painted[:, None], 0.0, feats), tau, eps)
        if vec is None:
            break
        part = vec > vec.mean()
        # the background is the side at the corners; else the side of the largest |value|
        if part[corners].sum() >= 3 or not part[int(np.argmax(np.abs(vec)))]:
            vec, part = -vec, ~part
        seed = int(np.argmax(vec))
        if not part[seed]:  # a constant vector: the graph has nothing to cut
            break
        component = _seed_component(part, seed, grid)
        mask = component & ~painted.reshape(grid)
        if mask.mean() <= MASKCUT_MIN_SHARE or any(
            (component & m).sum() > MASKCUT_MAX_IOU * (component | m).sum() for m in found
        ):
            break
        found.append(mask)
        painted |= mask.reshape(-1)
    return found
