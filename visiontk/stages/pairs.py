"""Pair-selection stages (kind "pairs"): which image pairs the per-pair stages see.

Each way of choosing pairs is its own stage, as hloc has its ``pairs_from_*`` scripts, so a
plugin adds another (retrieval by a global descriptor, say) by registering a stage of kind
"pairs" with a ``select(names, features)`` method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OptionError, shown
from ..pipeline.stage import Stage

if TYPE_CHECKING:
    from ..features import Features


class _Selection(Stage):
    kind = "pairs"
    inputs = ("features",)
    outputs = ("pairs",)


@dataclass(frozen=True)
class ExhaustiveOptions:
    pass


class ExhaustivePairs(_Selection):
    """Every pair of images (n·(n−1)/2): small sets."""

    name = "pairs-exhaustive"
    Options = ExhaustiveOptions

    def select(
        self, names: list[str], features: Callable[[str], Features]
    ) -> list[tuple[str, str]]:
        return exhaustive_pairs(names)


def exhaustive_pairs(names: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


@dataclass(frozen=True)
class SequentialOptions:
    window: int = 5  # each image with the next `window` in name order

    def __post_init__(self) -> None:
        if self.window < 1:
            raise OptionError(f"stage pairs-sequential: window must be >= 1, got {self.window}")


class SequentialPairs(_Selection):
    """Each image with the next ``window`` images in name order: video, walks, scans."""

    name = "pairs-sequential"
    Options = SequentialOptions

    def select(
        self, names: list[str], features: Callable[[str], Features]
    ) -> list[tuple[str, str]]:
        w = self.options.window
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1 : i + 1 + w]]


@dataclass(frozen=True)
class FileOptions:
    path: str = ""  # one "name_a name_b" per line; # comments and blank lines skipped

    def __post_init__(self) -> None:
        if not self.path:
            raise OptionError('stage pairs-file: needs path (a file of "name_a name_b" lines)')


class PairsFromFile(_Selection):
    """The pairs listed in a file, "name_a name_b" per line (hloc's and COLMAP's format)."""

    name = "pairs-file"
    Options = FileOptions

    def check(self) -> None:
        read_pairs_file(Path(self.options.path))

    def select(
        self, names: list[str], features: Callable[[str], Features]
    ) -> list[tuple[str, str]]:
        # every pair of the file: the runner lists those whose image failed, refuses names
        # that are none of the run's
        return read_pairs_file(Path(self.options.path))


def read_pairs_file(path: Path, names: list[str] | None = None) -> list[tuple[str, str]]:
    """Read "name_a name_b" lines (blank lines and # comments skipped), checking the names
    against ``names`` when given; each unordered pair once, in file order."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise OptionError(f"{path}: pairs file is not UTF-8 text") from None
    except OSError as exc:
        raise OptionError(f"{path}: cannot read pairs file ({exc.strerror or exc})") from None
    known = None if names is None else set(names)
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, ...]] = set()
    for number, raw in enumerate(lines, 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2:
            raise OptionError(f"{path}:{number}: expected two image names, got {shown(text)}")
        for name in parts:
            if known is not None and name not in known:
                raise OptionError(f"{path}:{number}: {shown(name)} is not one of the run's images")
        key = tuple(sorted(parts))
        if parts[0] != parts[1] and key not in seen:
            seen.add(key)
            pairs.append((parts[0], parts[1]))
    return pairs


@dataclass(frozen=True)
class RetrievalOptions:
    neighbours: int = 20  # each image with its N most similar; every pair when N >= images - 1
    words: int = 64  # visual words of the VLAD vocabulary

    def __post_init__(self) -> None:
        if self.neighbours < 1:
            raise OptionError(
                f"stage pairs-retrieval: neighbours must be >= 1, got {self.neighbours}"
            )
        if not 2 <= self.words <= 1024:
            raise OptionError(f"stage pairs-retrieval: words must be in 2..1024, got {self.words}")


class RetrievalPairs(_Selection):
    """Each image with its N most similar (VLAD of its SIFT): large unordered sets.

    n·N pairs instead of n²/2; every pair while the images are no more than N + 1."""

    name = "pairs-retrieval"
    Options = RetrievalOptions

    def select(
        self, names: list[str], features: Callable[[str], Features]
    ) -> list[tuple[str, str]]:
        if len(names) - 1 <= self.options.neighbours:
            return exhaustive_pairs(names)
        from ..retrieval import nearest_images

        return nearest_images(names, features, self.options.neighbours, self.options.words)
