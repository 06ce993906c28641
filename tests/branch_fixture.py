"""AlexNet-sized first layers with planted structure: 48 grey Gabor filters and 48
low-frequency colour blobs (96 × 3 × 11 × 11) feeding a groups=2 conv (64 × 48 × 5 × 5)."""

import numpy as np


def gabor(rng, size=11):
    y, x = np.mgrid[:size, :size] - size // 2
    theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.18, 0.35), rng.uniform(0, np.pi)
    u = x * np.cos(theta) + y * np.sin(theta)
    g = np.exp(-(x**2 + y**2) / (2 * 2.5**2)) * np.cos(2 * np.pi * freq * u + phase)
    return np.repeat(g[None], 3, axis=0)


def colour_blob(rng, size=11):
    y, x = np.mgrid[:size, :size] - size // 2
    cy, cx = rng.uniform(-2, 2, 2)
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * rng.uniform(2.5, 4) ** 2))
    opponent = rng.standard_normal(3)
    opponent -= opponent.mean()  # no luminance: pure colour contrast
    return opponent[:, None, None] * blob[None]


def planted_layers(seed=0, dealt_evenly=False):
    """(conv1 96×3×11×11, conv2 64×48×5×5); grey filters first (the first group) unless
    ``dealt_evenly``, which alternates grey and colour so both groups get half of each."""
    rng = np.random.default_rng(seed)
    grey = [gabor(rng) for _ in range(48)]
    colour = [colour_blob(rng) for _ in range(48)]
    if dealt_evenly:
        filters = [f for pair in zip(grey, colour, strict=True) for f in pair]
    else:
        filters = grey + colour
    conv1 = np.stack(filters) + 0.02 * rng.standard_normal((96, 3, 11, 11))
    conv2 = rng.standard_normal((64, 48, 5, 5)) * 0.05
    return conv1.astype(np.float32), conv2.astype(np.float32)
