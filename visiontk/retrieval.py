"""Image retrieval by a global descriptor: which images of a set look alike.

Each image's local descriptors are summarised into one VLAD vector (Jégou et al. 2010): the
residuals of its descriptors to their nearest visual word, summed per word, each word's block
normalised (intra-normalisation), signed square root, L2. The vocabulary comes from the set
itself (k-means of a sample of its descriptors), so nothing is trained or downloaded. Similar
images have a large dot product; :func:`nearest_images` pairs each image with its nearest.
"""

from __future__ import annotations

import numpy as np

#: Descriptors sampled for the vocabulary (from at most this many images, spread evenly).
VOCABULARY_SAMPLE, VOCABULARY_IMAGES = 100_000, 200


def vocabulary(descriptor_sets, words: int, seed: int = 0) -> np.ndarray:
    """``words`` × 128 centres: k-means (OpenCV) of a sample of the descriptors."""
    import cv2

    rng = np.random.default_rng(seed)
    per_image = max(1, VOCABULARY_SAMPLE // max(1, len(descriptor_sets)))
    sample = [
        d[rng.choice(len(d), min(len(d), per_image), replace=False)]
        for d in descriptor_sets
        if len(d)
    ]
    data = np.vstack(sample).astype(np.float32) if sample else np.zeros((0, 128), np.float32)
    if len(data) < words:
        raise ValueError(f"{len(data)} descriptors cannot make {words} visual words")
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, _, centres = cv2.kmeans(data, words, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    return centres


def vlad(descriptors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The VLAD vector (words × 128, flattened, unit length; zeros without descriptors)."""
    out: np.ndarray = np.zeros(centres.shape, np.float32)
    if len(descriptors):
        d = descriptors.astype(np.float32)
        dist = (d * d).sum(1)[:, None] - 2 * d @ centres.T + (centres * centres).sum(1)[None]
        nearest = dist.argmin(1)
        np.add.at(out, nearest, d - centres[nearest])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
    out = out.ravel()
    out = np.sign(out) * np.sqrt(np.abs(out))
    return out / max(float(np.linalg.norm(out)), 1e-12)


def nearest_images(
    names: list[str], features, neighbours: int, words: int = 64
) -> list[tuple[str, str]]:
    """Pairs (in name order within a pair, each once) of every image with its ``neighbours``
    most similar others; ``features(name)`` loads an image's Features."""
    step = max(1, len(names) // VOCABULARY_IMAGES)
    centres = vocabulary([features(n).descriptors for n in names[::step]], words)
    vectors = np.stack([vlad(features(n).descriptors, centres) for n in names])
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    k = min(neighbours, len(names) - 1)
    best = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    chosen = {tuple(sorted((i, int(j)))) for i, row in enumerate(best) for j in row}
    return [(names[i], names[j]) for i, j in sorted(chosen)]
