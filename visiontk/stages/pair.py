"""Per-pair stages: ``match`` (pair selection + descriptor matching) and ``verify``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..backend import Device
from ..errors import OptionError
from ..geometry import MIN_INLIERS, MODELS
from ..matching import DEFAULT_RATIO
from ..pipeline.stage import Stage

PAIRINGS = ("exhaustive", "sequential", "file")


@dataclass(frozen=True)
class MatchOptions:
    pairs: str = "exhaustive"  # exhaustive | sequential (each image with the next `window`) | file
    window: int = 5
    pairs_file: str = ""  # with pairs = "file": one "name_a name_b" per line
    ratio: float = DEFAULT_RATIO
    mutual: bool = True
    device: Device = "auto"

    def __post_init__(self):
        if self.pairs not in PAIRINGS:
            raise OptionError(f"stage match: pairs must be one of {', '.join(PAIRINGS)}, "
                              f"got {self.pairs!r}")
        if self.window < 1:
            raise OptionError(f"stage match: window must be >= 1, got {self.window}")
        if self.pairs == "file" and not self.pairs_file:
            raise OptionError("stage match: pairs = \"file\" needs pairs_file")
        if not 0 < self.ratio <= 1:
            raise OptionError(f"stage match: ratio must be in (0, 1], got {self.ratio}")


class MatchStage(Stage):
    """Match the descriptors of image pairs (ratio + mutual test); also picks the pairs.

    ``pairs``: exhaustive (every pair), sequential (each image with the next ``window`` in name
    order, for video or walks) or file (``pairs_file``: "name_a name_b" per line).
    """

    name = "match"
    kind = "pair"
    inputs = ("features",)
    outputs = ("matches",)
    Options = MatchOptions

    def check(self) -> None:
        if self.options.pairs == "file":
            read_pairs_file(Path(self.options.pairs_file))

    def select_pairs(self, names: list[str]) -> list[tuple[str, str]]:
        """Pairs of image names to match, each once, in a stable order."""
        if self.options.pairs == "exhaustive":
            return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        if self.options.pairs == "sequential":
            w = self.options.window
            return [(a, b) for i, a in enumerate(names) for b in names[i + 1:i + 1 + w]]
        return read_pairs_file(Path(self.options.pairs_file), names)

    def run(self, context: dict) -> dict:
        from ..matching import match

        m = match(context["features_a"], context["features_b"], ratio=self.options.ratio,
                  mutual=self.options.mutual, device=self.options.device)
        return {"matches": m}


def read_pairs_file(path: Path, names: list[str] | None = None) -> list[tuple[str, str]]:
    """Read "name_a name_b" lines (blank lines and # comments skipped), checking the names
    against ``names`` when given."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise OptionError(f"{path}: pairs file is not UTF-8 text") from None
    except OSError as exc:
        raise OptionError(f"{path}: cannot read pairs file ({exc.strerror or exc})") from None
    known = None if names is None else set(names)
    pairs, seen = [], set()
    for number, raw in enumerate(lines, 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2:
            raise OptionError(f"{path}:{number}: expected two image names, got {text!r}")
        for name in parts:
            if known is not None and name not in known:
                raise OptionError(f"{path}:{number}: {name!r} is not one of the run's images")
        key = tuple(sorted(parts))
        if parts[0] != parts[1] and key not in seen:
            seen.add(key)
            pairs.append((parts[0], parts[1]))
    return pairs


@dataclass(frozen=True)
class VerifyOptions:
    model: str = "homography"  # homography | fundamental
    threshold: float | None = None  # pixels; default 3 (H) or 1 (F)
    min_inliers: int = MIN_INLIERS  # fewer inliers than this: no model

    def __post_init__(self):
        if self.model not in MODELS:
            raise OptionError(f"stage verify: model must be one of {', '.join(MODELS)}, "
                              f"got {self.model!r}")
        if self.threshold is not None and self.threshold <= 0:
            raise OptionError(f"stage verify: threshold must be > 0, got {self.threshold}")
        if self.min_inliers < 0:
            raise OptionError(f"stage verify: min_inliers must be >= 0, got {self.min_inliers}")


class VerifyStage(Stage):
    """Robust homography or fundamental matrix on a pair's matches (USAC MAGSAC++)."""

    name = "verify"
    kind = "pair"
    inputs = ("features", "matches")
    outputs = ("geometry",)
    Options = VerifyOptions

    def run(self, context: dict) -> dict:
        from ..geometry import estimate

        fa, fb, m = context["features_a"], context["features_b"], context["matches"]
        g = estimate(self.options.model, fa.xy[m.pairs[:, 0]], fb.xy[m.pairs[:, 1]],
                     threshold=self.options.threshold, min_inliers=self.options.min_inliers)
        return {"geometry": g}
