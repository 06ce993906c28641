"""One run of a pipeline: the state it keeps while it goes, and the order of its parts.

A :class:`Run` is made by :meth:`.runner.Pipeline.run` for one output folder and lives as long
as that run: the pipeline (its definition) holds no state of any run. The parts, in order:
compile the kernels once (a first run after an install), the per-image tasks, the gathering of
``features.h5``, the pair selection and the per-pair tasks, ``matches.h5``, the whole-run stages
beside the report's pictures, the page, and ``--colmap``'s database. Every task travels to a
worker as a :mod:`.tasks` object and comes back as its reply.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import DiskFullError, OptionError
from ..features import Features
from ..io import IMAGE_SUFFIXES
from . import report, store
from .progress import Progress
from .tasks import (
    CompileTask,
    Failure,
    ImageReply,
    ImageTask,
    ModelReply,
    ModelTask,
    PairPicture,
    PairReply,
    PairTask,
    PicturesReply,
    PicturesTask,
    Reply,
)

if TYPE_CHECKING:
    from .executors import Executor
    from .runner import Pipeline, RunResult
    from .stage import Stage

#: (name, path) of an input, and (name, cache key) of a finished image
Named = list[tuple[str, Path]]
Keys = list[tuple[str, str]]
#: (name a, name b, cache key) of a finished pair
PairKeys = list[tuple[str, str, str]]


class Run:
    """The state of one run: where it writes, what it has done, and what it found."""

    def __init__(
        self, pipeline: Pipeline, named: Named, result: RunResult, quiet: bool, started: float
    ) -> None:
        self.pipeline = pipeline
        self.started = started  # time.perf_counter() when the run began
        self.named = named
        self.result = result
        self.quiet = quiet
        self.folder = store.RunFolder(result.out)
        self.cache = store.Cache(self.folder.cache)
        #: cached results this run did not make itself ("from earlier runs")
        self.earlier = self.cache.keys()
        #: each finished pair's reply, by (name a, name b): the report's counts and pictures
        self.pairs: dict[tuple[str, str], PairReply] = {}

    def go(self, pool: Executor, colmap: bool) -> None:
        p, out = self.pipeline, self.result.out
        self._compile_once(pool)
        features = self._images(pool)
        if any("features" in s.outputs for s in p.image_stages):
            with self.result.timed("write features.h5"):
                self.result.features_path = self._gather(
                    self.folder.features,
                    features,
                    [self.cache.features_path(k) for _, k in features],
                    lambda path: store.write_features_h5(
                        path,
                        ((n, k, Features.load(self.cache.features_path(k))) for n, k in features),
                        __version__,
                    ),
                )
        pairs: PairKeys = []
        if p.pair_stages:
            pairs = self._pairs(pool, features)
            with self.result.timed("write matches.h5"):
                self.result.matches_path = self._gather(
                    self.folder.matches,
                    pairs,
                    [self.cache.pair_path(k) for _, _, k in pairs],
                    lambda path: store.write_matches_h5(
                        path,
                        ((a, b, k, *self.cache.load_pair(k)) for a, b, k in pairs),
                        __version__,
                    ),
                )
        made = self._whole(pool, features, pairs)
        self.result.seconds = time.perf_counter() - self.started
        self.result.folders = [
            out / f for s in p.image_stages for f in s.folders if (out / f).is_dir()
        ]
        report.write_index(
            out,
            self.result.summary(),
            [(n, str(q)) for n, q in self.named],
            made,
            list(self.pairs.values()),
            links=self._report_links(features),
        )
        if colmap and not p.model_stages:  # whole-run stages write the database they map
            self._export_colmap(features, pairs)

    # --- the parts, in order ----------------------------------------------------------------

    def _compile_once(self, pool: Executor) -> None:
        """On the first run after an install, compile the CPU kernels in one worker while the
        others wait, and say so: every worker compiling them at once is slow, and silent."""
        from .._numba_cache import COMPILE_NOTICE, kernels_compiled

        p = self.pipeline
        uses_kernels = p.pair_stages or any("features" in s.outputs for s in p.image_stages)
        if not uses_kernels or kernels_compiled():
            return
        if not self.quiet:
            print(COMPILE_NOTICE, file=sys.stderr, flush=True)
        for reply in pool.map_unordered([CompileTask()]):
            self.result.add_seconds(reply.seconds)

    def _images(self, pool: Executor) -> Keys:
        stages = tuple(self.pipeline.image_stages)
        config = store.config_hash(self.pipeline.specs(stages))
        tasks = [
            ImageTask(name, str(path), stages, config, str(self.cache.root), str(self.result.out))
            for name, path in self.named
        ]
        done: dict[str, str] = {}
        with Progress(len(tasks), "images", self.quiet) as progress:
            for reply in pool.map_unordered(tasks):
                assert isinstance(reply, ImageReply)
                if self._counted(reply):
                    done[reply.name] = reply.key
                    self.result.images_done += 1
                    # an image whose copy this run computed is not one "from earlier runs"
                    self.result.images_cached += reply.cached and reply.key in self.earlier
                progress.advance(reply.name, reply.ok)
        return [(name, done[name]) for name, _ in self.named if name in done]

    def _pairs(self, pool: Executor, features: Keys) -> PairKeys:
        selection = self.pipeline.selection
        assert selection is not None  # a pipeline with pair stages always has one
        keys = dict(features)
        with self.result.timed(selection.name):
            chosen = selection.select(
                [n for n, _ in features],
                lambda name: Features.load(self.cache.features_path(keys[name])),
            )
        chosen = self._with_features(chosen, selection.name, keys)
        stages = tuple(self.pipeline.pair_stages)
        config = store.config_hash(self.pipeline.specs(stages))
        tasks = [
            PairTask(a, b, keys[a], keys[b], stages, config, str(self.cache.root))
            for a, b in chosen
        ]
        self.result.pairs = len(tasks)
        with Progress(len(tasks), "pairs", self.quiet) as progress:
            for reply in pool.map_unordered(tasks):
                assert isinstance(reply, PairReply)
                if self._counted(reply):
                    self.pairs[(reply.a, reply.b)] = reply
                    self.result.pairs_done += 1
                    self.result.pairs_cached += reply.cached and reply.key in self.earlier
                progress.advance(f"{reply.a} {reply.b}", reply.ok)
        return [(a, b, self.pairs[(a, b)].key) for a, b in chosen if (a, b) in self.pairs]

    def _with_features(
        self, chosen: Iterable[tuple[str, str]], selection: str, keys: dict[str, str]
    ) -> list[tuple[str, str]]:
        """The selected pairs whose two images have features; a pair naming an image that
        failed is listed as a failure of its own (the rest run), a name that is not one of the
        run's images is an error (a typo in a pairs file)."""
        run_names = {n for n, _ in self.named}
        kept: list[tuple[str, str]] = []
        for a, b in chosen:
            unknown = next((n for n in (a, b) if n not in run_names), None)
            if unknown is not None:
                raise OptionError(f"stage {selection}: {unknown!r} is not one of the run's images")
            failed = next((n for n in (a, b) if n not in keys), None)
            if failed is None:
                kept.append((a, b))
                continue
            self.result.failures.append(
                Failure(
                    f"{a} {b}", selection, f"{a} {b}: not matched: image {failed} failed"
                ).listed()
            )
        return kept

    def _whole(self, pool: Executor, features: Keys, pairs: PairKeys) -> PicturesReply:
        """The report's pictures and each whole-run stage, side by side in workers (a mapper
        that crashes fails alone); a stage is skipped when the same inputs and options made
        its result before. Returns what the pictures task made."""
        paths = dict(self.named)
        context: dict[str, Any] = {
            "out": str(self.result.out),
            "database": str(self.folder.database),
            "images": [(n, str(paths[n])) for n, _ in features],
            "features": [(n, str(self.cache.features_path(k))) for n, k in features],
            "pairs": [(a, b, str(self.cache.pair_path(k))) for a, b, k in pairs],
            "failed": self._failed_images(features),
        }
        inputs = [[n, k] for n, k in features] + [[a, b, k] for a, b, k in pairs]
        inputs += [[n, why] for n, why in context["failed"]]
        jobs: list[PicturesTask | ModelTask] = []
        keys: dict[str, str] = {}
        replies: dict[str, ModelReply] = {}
        pictures = self._pictures_task(features)
        if pictures is not None:
            jobs.append(pictures)
        for stage in self.pipeline.model_stages:
            # with the stage's result format: a cached result in an older one is made again
            result_format = getattr(stage, "result_format", 1)
            keys[stage.name] = store.config_hash(
                [inputs, self.pipeline.specs([stage]), result_format]
            )
            cached = self.cache.load_model(keys[stage.name])
            if cached is not None:
                replies[stage.name] = ModelReply(stage_name=stage.name, result=cached)
                continue
            if not self.quiet:
                print(
                    f"{stage.name}: {len(features)} images, {len(pairs)} pairs",
                    file=sys.stderr,
                    flush=True,
                )
            jobs.append(ModelTask(stage, context))
        made = PicturesReply()
        for reply in pool.map_unordered(jobs):
            if isinstance(reply, PicturesReply):  # without them, the page has no pictures
                self._stop_if_disk_full(reply)
                self.result.add_seconds(reply.seconds)
                made = reply
                continue
            assert isinstance(reply, ModelReply)
            replies[reply.stage_name] = reply
            if reply.ok:
                self.cache.save_model(keys[reply.stage_name], reply.result)
        for stage in self.pipeline.model_stages:
            if self._counted(replies[stage.name]):
                self.result.models[stage.name] = replies[stage.name].result
        if self.pipeline.model_stages and self.folder.database.exists():
            self.result.colmap_path = self.folder.database
        return made

    def _failed_images(self, features: Keys) -> list[tuple[str, str]]:
        """(name, why) of the run's images that have no features: the failure of the file."""
        made = {n for n, _ in features}
        why = {str(f["item"]): f["reason"] for f in self.result.failures}
        return [(n, why.get(str(q), f"{q}: no features")) for n, q in self.named if n not in made]

    def _export_colmap(self, features: Keys, pairs: PairKeys) -> None:
        from ..sfm.cameras import CameraChooser
        from .colmap import export_colmap

        with self.result.timed("write database.db"):
            # generators: one image's features in memory at a time; cameras as COLMAP's
            # extractor makes them (EXIF focal length, one camera per EXIF camera)
            self.result.colmap_path = export_colmap(
                self.folder.database,
                ((n, Features.load(self.cache.features_path(k))) for n, k in features),
                ((a, b, *self.cache.load_pair(k)) for a, b, k in pairs),
                cameras=CameraChooser(dict(self.named)),
            )

    # --- the report -------------------------------------------------------------------------

    def _pictures_task(self, features: Keys) -> PicturesTask | None:
        """What the report shows (the report chooses: :mod:`.report`); None when there is
        nothing to draw."""
        failed_items = {str(f["item"]) for f in self.result.failures}
        failed = {n for n, q in self.named if str(q) in failed_items}
        images = self.pipeline.accepts == IMAGE_SUFFIXES
        pictures = [(n, str(q)) for n, q in self.named if images]
        shown_by = self.pipeline.shown_by()
        if shown_by is not None:  # the stage's own picture of each item it made
            made = {n for n, _ in features}
            pictures = [
                (n, str(self.result.out / shown_by.report_picture.format(stem=store.escape(n))))
                if n in made
                else (n, str(q))
                for n, q in self.named
            ]
        thumbs = report.choose_thumbnails(pictures, failed)
        paths, keys = dict(self.named), dict(features)
        chosen: dict[str, PairPicture] = {}
        if pictures:
            for label, r in report.choose_pairs(list(self.pairs.values())).items():
                chosen[label] = PairPicture(
                    r.a,
                    str(paths[r.a]),
                    r.b,
                    str(paths[r.b]),
                    str(self.cache.pair_path(r.key)),
                    str(self.cache.features_path(keys[r.a])),
                    str(self.cache.features_path(keys[r.b])),
                )
        if not thumbs and not chosen:
            return None
        return PicturesTask(str(self.result.out), thumbs, chosen)

    def _report_links(self, features: Keys) -> dict[str, str]:
        """What a click on an item's thumbnail opens: its stage's page (relative to OUT)."""
        stage: Stage | None = self.pipeline.shown_by()
        if stage is None or not stage.report_page:
            return {}
        return {n: stage.report_page.format(stem=store.escape(n)) for n, _ in features}

    # --- helpers ----------------------------------------------------------------------------

    def _counted(self, reply: Reply) -> bool:
        """Add a reply's seconds and failure to the run's; whether it succeeded."""
        self._stop_if_disk_full(reply)
        self.result.add_seconds(reply.seconds)
        if reply.failure is not None:
            self.result.failures.append(reply.failure.listed())
        return reply.ok

    def _stop_if_disk_full(self, reply: Reply) -> None:
        """A task that could not write its result because the disk is full: every next one
        would fail alike, so the run stops with one line instead of failing each item."""
        if reply.failure is not None and reply.failure.disk_full:
            raise disk_full_error(self.result.out)

    def _gather(
        self,
        path: Path,
        entries: Sequence[tuple[str, ...]],
        sources: Sequence[Path],
        write: Callable[[Path], None],
    ) -> Path:
        """``write(path)`` an HDF5 file gathered from the cache files ``sources`` of
        ``entries``, unless the cache records that file whole and current; the disk's room is
        checked first."""
        if not self.cache.output_current(path, entries):
            store.ensure_room(path, sources)
            write(path)
            self.cache.record_output(path, entries)
        return path


def disk_full_error(out: Path) -> DiskFullError:
    return DiskFullError(
        f"{out}: no space left on its disk; free some and run again (the "
        "finished work is kept and not redone)"
    )
