"""Running a pipeline over a folder of images: per-image stages, then per-pair stages.

A :class:`Pipeline` is the definition (its stages, checked once when it is built); each call of
:meth:`Pipeline.run` makes a :class:`.run.Run` that holds the state of that run. Work items are
independent tasks (:mod:`.tasks`: one image, or one pair) that read and write the per-item cache
(:mod:`.store`), so the same tasks run in a process pool or on a Dask cluster, and a rerun skips
what is done. Only small replies travel back; at the end the run gathers the cache into
``features.h5`` and ``matches.h5`` (and a COLMAP database).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import atomic_write, disk_full, remove_stale_temporaries, writable_folder
from ..errors import OptionError, VisiontkError
from ..io import IMAGE_SUFFIXES
from ..io.inputs import resolve_images
from . import executors
from .config import PIPELINES, read_spec
from .registry import load_stage, provenance
from .run import Run, disk_full_error
from .stage import KINDS, Stage


@dataclass
class RunResult:
    """What a run did: counts, failures and where the outputs are."""

    out: Path
    images: int = 0
    images_done: int = 0
    images_cached: int = 0
    pairs: int = 0
    pairs_done: int = 0
    pairs_cached: int = 0
    #: each failed item as :meth:`.tasks.Failure.listed` gives it
    failures: list[dict[str, str]] = field(default_factory=list)
    features_path: Path | None = None
    matches_path: Path | None = None
    colmap_path: Path | None = None
    #: why the run stopped before its end (a full disk, a lost scheduler), else ""
    stopped: str = ""
    #: folders of OUT that stages wrote their own files into (OUT/attention, ...)
    folders: list[Path] = field(default_factory=list)
    #: what the whole-run stages (reconstruct) reported, by stage name
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    #: worker processes the run used (or asked the Dask cluster for)
    workers: int = 0
    #: seconds per stage, summed over the items it ran on (in parallel with several workers),
    #: and the writing of each output file
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No item failed, the run was not stopped, and every whole-run stage made a model."""
        return (
            not self.failures
            and not self.stopped
            and all(m.get("models", 1) for m in self.models.values())
        )

    def add_seconds(self, seconds: dict[str, float]) -> None:
        for stage, t in seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + t

    @contextlib.contextmanager
    def timed(self, what: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add_seconds({what: time.perf_counter() - t0})

    def summary(self) -> dict[str, Any]:
        d = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        d["folders"] = [str(f) for f in self.folders]
        d["ok"] = self.ok
        return d


class Pipeline:
    """An ordered list of stages: per-image stages, at most one pair-selection stage, then
    per-pair stages (see :mod:`.stage` for the kinds).

    Example
    -------
    >>> import tempfile
    >>> result = Pipeline.from_file("sift").run("sample_images", out=tempfile.mkdtemp(),
    ...                                         quiet=True)
    >>> result.images_done, result.failures
    (5, [])
    """

    def __init__(self, stages: list[Stage]) -> None:
        if not stages:
            raise OptionError("a pipeline needs at least one stage")
        self.stages = list(stages)
        for s in self.stages:
            if s.kind not in KINDS:
                raise OptionError(
                    f"stage {s.name} has kind {s.kind!r}; expected one of {', '.join(KINDS)}"
                )
        self.image_stages = [s for s in self.stages if s.kind == "image"]
        selections = [s for s in self.stages if s.kind == "pairs"]
        self.pair_stages = [s for s in self.stages if s.kind == "pair"]
        self.model_stages = [s for s in self.stages if s.kind == "model"]
        if self.stages != self.image_stages + selections + self.pair_stages + self.model_stages:
            raise OptionError(
                "stages go in this order: per-image stages, a pair selection, "
                "per-pair stages, whole-run stages (reconstruct)"
            )
        names = [s.name for s in self.stages]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:  # the later one's outputs would replace the earlier's unseen
            raise OptionError(f"stage {twice} appears twice; a pipeline runs each stage once")
        if len(selections) > 1:
            raise OptionError(
                f"one pair selection per pipeline, got {', '.join(s.name for s in selections)}"
            )
        if selections and not self.pair_stages:
            raise OptionError(
                f"stage {selections[0].name} selects pairs, but no per-pair stage follows it"
            )
        self.selection = (
            selections[0]
            if selections
            else (load_stage("pairs-exhaustive")() if self.pair_stages else None)
        )
        kinds = {frozenset(s.accepts) for s in self.image_stages}
        if len(kinds) > 1:
            raise OptionError(
                "the per-image stages take different kinds of files: "
                + ", ".join(s.name for s in self.image_stages)
            )
        #: what a folder given as the run's input yields (image files, or weights files...)
        self.accepts = kinds.pop() if kinds else IMAGE_SUFFIXES
        available = {"path"}
        for s in self.stages:
            missing = [i for i in s.inputs if i not in available]
            if missing:
                raise OptionError(
                    f"stage {s.name} needs {', '.join(missing)}, which no earlier stage makes"
                )
            available.update(s.outputs)
        if self.pair_stages and "features" not in available:
            raise OptionError("per-pair stages need a stage that makes features")

    @classmethod
    def from_spec(cls, spec: list[dict[str, Any]]) -> Pipeline:
        stages = []
        for entry in spec:
            options = {k: v for k, v in entry.items() if k != "name"}
            stages.append(load_stage(entry["name"]).from_dict(options))
        return cls(stages)

    @classmethod
    def from_file(cls, path_or_preset: str | os.PathLike[str]) -> Pipeline:
        """From a .toml/.yaml pipeline file or a preset name (see :data:`config.PIPELINES`);
        what is wrong with a file's stages is said with the file's name."""
        spec = read_spec(path_or_preset)
        try:
            return cls.from_spec(spec)
        except OptionError as exc:
            if str(path_or_preset) in PIPELINES:
                raise
            raise OptionError(f"{os.fspath(path_or_preset)}: {exc}") from None

    def specs(self, stages: Iterable[Stage]) -> list[tuple[Any, ...]]:
        """What made a stage's results, for the cache keys: its name and options, and a
        plugin's code (:func:`.registry.provenance`)."""
        specs: list[tuple[Any, ...]] = []
        for s in stages:
            made_by = provenance(type(s))
            spec = (s.name, s.describe()["options"])
            specs.append((*spec, made_by) if made_by else spec)
        return specs

    def shown_by(self) -> Stage | None:
        """The last image stage with a picture of its own for the report, if any."""
        return next((s for s in reversed(self.image_stages) if s.report_picture), None)

    def run(
        self,
        images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        out: str | os.PathLike[str],
        *,
        workers: int | None = None,
        executor: str = "local",
        scheduler: str | None = None,
        quiet: bool = False,
        colmap: bool = False,
    ) -> RunResult:
        """Run over ``images`` (a folder, a glob pattern, a text file listing paths, or a list
        of paths) writing into the folder ``out``, on ``workers`` processes (None: one per
        usable core, at most 8 and at most one per image: :func:`.executors.auto_workers`)."""
        started = time.perf_counter()
        if colmap and not any("features" in s.outputs for s in self.image_stages):
            raise OptionError("--colmap needs a pipeline that extracts features")
        # Everything that would fail every item fails here, before the first one.
        # absolute before any task leaves: a Dask worker's working folder is not this one
        out = Path(os.path.abspath(writable_folder(out)))
        with _exclusive(out):
            remove_stale_temporaries(out)
            unreadable: list[tuple[Path, str]] = []
            named = [
                (n, Path(os.path.abspath(p)))
                for n, p in resolve_images(
                    images,
                    self.accepts,
                    outputs=out,
                    folders=[f for s in self.stages for f in s.folders],
                    unreadable=unreadable,
                )
            ]
            for s in self.stages:
                s.check()
            workers = (
                executors.auto_workers(len(named))
                if workers is None
                else executors.capped_workers(workers, len(named))
            )
            result = RunResult(out=out, images=len(named), workers=workers)
            result.failures += [
                {
                    "item": str(folder),
                    "stage": "load",
                    "reason": f"{folder}: cannot read this folder ({why})",
                }
                for folder, why in unreadable
            ]
            run = Run(self, named, result, quiet, started)
            try:
                with executors.create(executor, workers, scheduler, quiet) as pool:
                    run.go(pool, colmap)
            except Exception as exc:  # OSError, or SQLite's "database or disk is full"
                if disk_full(exc):
                    full = disk_full_error(out)
                    result.stopped = str(full)
                    raise full from None
                result.stopped = (
                    str(exc)
                    if isinstance(exc, VisiontkError)
                    else f"internal error ({type(exc).__name__})"
                )
                raise
            except KeyboardInterrupt:
                result.stopped = "interrupted"
                raise
            finally:  # interrupted runs too: what was done is summarised, and kept
                result.seconds = time.perf_counter() - started
                for path, data in (
                    (run.folder.failures, result.failures),
                    (run.folder.summary, result.summary()),
                ):
                    try:
                        _write_json(path, data)
                    except OSError as exc:  # a full disk is said once, by the run
                        if not disk_full(exc):
                            raise
        return result


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` for the run: two runs writing one folder would mix their outputs
    (and each would take the other's temporaries for stale ones)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    lock = out / ".lock"
    if lock.is_symlink():  # never followed: a dangling one would create its target
        lock.unlink()
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except IsADirectoryError:
        raise VisiontkError(
            f"{lock}: is a folder where visiontk keeps its lock file; remove it"
        ) from None
    with os.fdopen(fd, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OptionError(f"{out}: another visiontk run is writing into this folder") from None
        yield


def _write_json(path: Path, data: object) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


__all__ = ["Pipeline", "RunResult"]
