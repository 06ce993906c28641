"""What travels between the runner and its workers: one frozen dataclass per kind of task and
one per reply, so adding a field is one edit that a type checker follows.

A task is picklable (it crosses to a worker process or a Dask worker) and knows two things:
``run()``, what a worker does with it, and ``died(cause)``, the reply that stands in for it when
the worker running it died (a segfault, the OOM killer). Replies are small: counts, cache keys
and seconds; the results themselves stay in the per-item cache (:mod:`.store`).

    runner ──ImageTask──▶ worker: stages on one image ──▶ cache file ──ImageReply──▶ runner
    runner ──PairTask───▶ worker: stages on one pair  ──▶ cache file ──PairReply───▶ runner
    runner ──ModelTask / PicturesTask (side by side) ──▶ ModelReply / PicturesReply ──▶ runner
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from .._files import disk_full
from ..errors import VisiontkError
from ..features import Features
from . import store

if TYPE_CHECKING:
    from ..features import Matches
    from ..geometry import Geometry
    from .stage import Stage


@dataclass(frozen=True)
class Failure:
    """Why one item failed: the run lists it and goes on (``disk_full``: the run stops)."""

    item: str
    stage: str
    reason: str
    disk_full: bool = False

    @classmethod
    def of(cls, item: str, stage: str, exc: BaseException) -> Failure:
        if isinstance(exc, VisiontkError):
            reason = str(exc)
        elif isinstance(exc, OSError):
            reason = f"{item}: {exc.strerror or exc}"
        else:
            reason = f"internal error ({type(exc).__name__}: {exc})"
        # a full disk is not the item's fault: the runner stops the run and says so once
        return cls(item, stage, reason, disk_full(exc))

    def listed(self) -> dict[str, str]:
        """As ``failures.json`` and the summary list it."""
        return {"item": self.item, "stage": self.stage, "reason": self.reason}


@dataclass(frozen=True, kw_only=True)
class Reply:
    """What every reply carries: seconds per stage, and the failure if there was one."""

    seconds: dict[str, float] = field(default_factory=dict)
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class Task(Protocol):
    def run(self) -> Reply: ...

    def died(self, cause: str) -> Reply: ...


def run_task(task: Task) -> Reply:
    """What a worker calls (a module-level function: Dask and the local pool pickle it)."""
    return task.run()


# --- per image ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ImageReply(Reply):
    name: str
    key: str = ""  # the cache key of its features
    cached: bool = False  # found in the cache, not computed


@dataclass(frozen=True)
class ImageTask:
    """Run the per-image stages on one image unless its features are cached."""

    name: str
    path: str
    stages: tuple[Stage, ...]
    config: str  # the hash of the stages' names and options
    cache_root: str
    output_dir: str

    def run(self) -> ImageReply:
        cache = store.Cache(self.cache_root)
        try:
            key = f"{store.content_hash(self.path)}-{self.config}"
            if cache.cached_features(key) is not None:
                return ImageReply(name=self.name, key=key, cached=True)
            context: dict[str, Any] = {
                "path": self.path,
                "name": self.name,
                "output": store.ItemOutput(Path(self.output_dir), self.name),
            }
            seconds = _run_stages(_resident(self.config, self.stages), context)
            # Features go to the cache (and then features.h5); stages without features wrote
            # their own outputs, and an empty entry marks the image done.
            context.get("features", Features.empty()).save(cache.features_path(key))
            return ImageReply(name=self.name, key=key, seconds=seconds)
        except _StageFailed as failed:  # one bad image must not stop the run
            return ImageReply(
                name=self.name,
                seconds=failed.seconds,
                failure=Failure.of(self.path, failed.stage, failed.error),
            )
        except Exception as exc:
            return ImageReply(
                name=self.name, failure=Failure.of(self.path, self.stages[0].name, exc)
            )

    def died(self, cause: str) -> ImageReply:
        return ImageReply(
            name=self.name,
            failure=Failure(
                self.path, "worker", f"{self.path}: the worker process {cause} while processing it"
            ),
        )


# --- per pair -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PairReply(Reply):
    a: str
    b: str
    key: str = ""
    cached: bool = False
    matches: int = 0
    inliers: int = -1  # -1: not verified

    @property
    def strength(self) -> tuple[int, int]:
        """What orders pairs from weakest to strongest: inliers then matches (an unverified
        pair: matches)."""
        return (self.inliers, self.matches) if self.inliers >= 0 else (self.matches, 0)


@dataclass(frozen=True)
class PairTask:
    """Run the per-pair stages on one pair unless its result is cached."""

    a: str
    b: str
    key_a: str
    key_b: str
    stages: tuple[Stage, ...]
    config: str
    cache_root: str

    def run(self) -> PairReply:
        cache = store.Cache(self.cache_root)
        key = store.config_hash([self.key_a, self.key_b, self.config])
        reply = functools.partial(PairReply, a=self.a, b=self.b, key=key)
        try:
            cached = cache.cached_pair(key)
            if cached is not None:
                return reply(**_counts(*cached), cached=True)
            context: dict[str, Any] = {
                "name_a": self.a,
                "name_b": self.b,
                "features_a": _features(str(cache.features_path(self.key_a))),
                "features_b": _features(str(cache.features_path(self.key_b))),
            }
            seconds = _run_stages(_resident(self.config, self.stages), context)
            cache.save_pair(key, context["matches"], context.get("geometry"))
            return reply(**_counts(context["matches"], context.get("geometry")), seconds=seconds)
        except _StageFailed as failed:
            return reply(
                seconds=failed.seconds, failure=Failure.of(self.item, failed.stage, failed.error)
            )
        except Exception as exc:
            return reply(failure=Failure.of(self.item, self.stages[0].name, exc))

    @property
    def item(self) -> str:
        return f"{self.a} {self.b}"

    def died(self, cause: str) -> PairReply:
        return PairReply(
            a=self.a,
            b=self.b,
            failure=Failure(
                self.item,
                "worker",
                f"{self.item}: the worker process {cause} while processing the pair",
            ),
        )


class _Counts(TypedDict):
    matches: int
    inliers: int


def _counts(matches: Matches, geometry: Geometry | None) -> _Counts:
    inliers = -1 if geometry is None else int(geometry.inliers.sum())
    return {"matches": len(matches), "inliers": inliers}


# --- once per run ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ModelReply(Reply):
    stage_name: str
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelTask:
    """Run one whole-run stage (reconstruct) on the run's cached features and pairs;
    ``context``: see :meth:`visiontk.stages.model.ReconstructStage.run`."""

    stage: Stage
    context: dict[str, Any]

    def run(self) -> ModelReply:
        t0 = time.perf_counter()
        try:
            result = self.stage.run(dict(self.context))
            return ModelReply(
                stage_name=self.stage.name,
                result=result,
                seconds={self.stage.name: time.perf_counter() - t0},
            )
        except Exception as exc:
            return ModelReply(
                stage_name=self.stage.name,
                failure=Failure.of("the run's model", self.stage.name, exc),
                seconds={self.stage.name: time.perf_counter() - t0},
            )

    def died(self, cause: str) -> ModelReply:
        name = self.stage.name
        return ModelReply(
            stage_name=name,
            failure=Failure(
                "the run's model", "worker", f"{name}: the worker process {cause} while running it"
            ),
        )


@dataclass(frozen=True)
class PairPicture:
    """One pair the report draws: names, image files and cache files."""

    a: str
    path_a: str
    b: str
    path_b: str
    pair_file: str
    features_a: str
    features_b: str


@dataclass(frozen=True, kw_only=True)
class PicturesReply(Reply):
    #: name -> thumbnail file, relative to OUT
    thumbs: dict[str, str] = field(default_factory=dict)
    #: "strongest"/"weakest" -> {"picture": file relative to OUT, "caption": text}
    pairs: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class PicturesTask:
    """The run report's pictures (see :mod:`.report`): thumbnails of ``thumbs`` ((name,
    picture file)) and a picture of each chosen pair."""

    out: str
    thumbs: list[tuple[str, str]]
    pairs: dict[str, PairPicture]

    def run(self) -> PicturesReply:
        from .report import make_pictures

        t0 = time.perf_counter()
        thumbs, pairs = make_pictures(self)
        return PicturesReply(
            thumbs=thumbs, pairs=pairs, seconds={"report pictures": time.perf_counter() - t0}
        )

    def died(self, cause: str) -> PicturesReply:  # the page goes without pictures
        return PicturesReply(failure=Failure("the report", "worker", cause))


@dataclass(frozen=True)
class CompileTask:
    """Compile the CPU kernels once, in one worker, before the items (see
    :func:`visiontk._numba_cache.compile_kernels`)."""

    def run(self) -> Reply:
        from .._numba_cache import compile_kernels

        t0 = time.perf_counter()
        with contextlib.suppress(Exception):  # then each item compiles what it needs
            compile_kernels()
        return Reply(seconds={"compile kernels": time.perf_counter() - t0})

    def died(self, cause: str) -> Reply:
        return Reply(failure=Failure("the kernels", "worker", cause))


# --- in the worker --------------------------------------------------------------------------

_RESIDENT: dict[str, tuple[Stage, ...]] = {}
#: Stage lists a worker keeps (each may hold a loaded model).
RESIDENT_CONFIGS = 4


def _resident(config: str, stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """The stage objects this worker already holds for ``config`` (the hash of their names and
    options), else ``stages`` (as the runner sent them, already validated), kept: a stage that
    loads a model on its first item (dino-attention) loads it once per worker."""
    if config not in _RESIDENT:
        while len(_RESIDENT) >= RESIDENT_CONFIGS:
            _RESIDENT.pop(next(iter(_RESIDENT)))
        _RESIDENT[config] = stages
    return _RESIDENT[config]


@functools.lru_cache(maxsize=64)
def _features(path: str) -> Features:
    """Features from the cache; a file's name is its content key, so it never goes stale and
    neighbouring pairs (sequential matching) reuse what is already in memory."""
    return Features.load(path)


class _StageFailed(Exception):
    def __init__(self, stage: str, error: Exception, seconds: dict[str, float]) -> None:
        super().__init__(stage)
        self.stage, self.error, self.seconds = stage, error, seconds


def _run_stages(stages: tuple[Stage, ...], context: dict[str, Any]) -> dict[str, float]:
    """Run ``stages`` in order on ``context``; seconds per stage, or :class:`_StageFailed`."""
    seconds: dict[str, float] = {}
    for s in stages:
        t0 = time.perf_counter()
        try:
            context.update(s.run(context))
        except Exception as exc:
            seconds[s.name] = time.perf_counter() - t0
            raise _StageFailed(s.name, exc, seconds) from exc
        seconds[s.name] = time.perf_counter() - t0
    return seconds
