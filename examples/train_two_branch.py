"""Train a small two-branch CNN on photo patches (CPU, a few minutes), then ask visiontk
whether its first layer specialised by branch. Needs torch (pip install torch==2.13.0).

    python examples/train_two_branch.py [--minutes 3] [--out two_branch.pth]

Network: conv1 3→48 (7×7, stride 2) feeding conv2 48→96 with groups=2 (AlexNet's split: each
half of conv1 only reaches its own half of conv2), conv3 (groups=2), global pooling, linear.
Task: tell which of ten scikit-image photos a 48×48 patch comes from (colour and texture both
help). The report is written next to the weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
import torch.nn as nn

PHOTOS = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "camera",
    "brick",
    "gravel",
    "grass",
    "hubble_deep_field",
]
PATCH = 48


def photos():
    out = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        out.append(torch.from_numpy(img[:, :, :3].astype(np.float32) / 255).permute(2, 0, 1))
    return out


def batch(images, rng, size=64):
    xs, ys = [], []
    for _ in range(size):
        label = int(rng.integers(len(images)))
        img = images[label]
        y = int(rng.integers(img.shape[1] - PATCH))
        x = int(rng.integers(img.shape[2] - PATCH))
        patch = img[:, y : y + PATCH, x : x + PATCH]
        if rng.random() < 0.5:
            patch = patch.flip(2)
        xs.append(patch)
        ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


class TwoBranch(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 48, 7, stride=2, padding=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(48, 96, 5, padding=2, groups=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(96, 96, 3, padding=1, groups=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(96, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("two_branch.pth"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images = photos()
    net = TwoBranch(len(images))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    t0, step = time.monotonic(), 0
    while time.monotonic() - t0 < args.minutes * 60:
        x, y = batch(images, rng)
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            with torch.no_grad():
                xv, yv = batch(images, np.random.default_rng(99), 512)
                acc = (net(xv).argmax(1) == yv).float().mean().item()
            print(f"step {step}: loss {loss.item():.3f}, held-out accuracy {acc:.2f}", flush=True)
    torch.save(net.state_dict(), args.out)

    from visiontk.branches import analyse, read_conv_layers
    from visiontk.branches.report import write_report

    result = analyse(read_conv_layers(args.out))
    report = args.out.with_suffix("")
    write_report(result, report)
    print(f"trained {step} steps in {args.minutes:g} min; weights {args.out}, report {report}/")
    for b in result.per_branch:
        print(
            f"  {b['name']}: mean colour {b['mean_colour']:.3f}, mean frequency "
            f"{b['mean_frequency']:.3f}, colour units {b['colour_units']}/{b['units']}"
        )
    print(
        f"branch vs colour: p = {result.p_value:.3g} (Mann-Whitney), "
        f"{result.permutation_p_value:.3g} (permutation)"
    )


if __name__ == "__main__":
    main()
