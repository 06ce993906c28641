"""Running a pipeline over a folder of images: per-image stages, then per-pair stages.

Work items are independent tasks (one image, or one pair) that read and write the per-item
cache (:mod:`.store`), so the same task functions run in this process, in a process pool, or on
a Dask cluster, and a rerun skips what is done. Only small summaries travel back to the runner;
at the end it gathers the cache into ``features.h5`` and ``matches.h5`` (and a COLMAP database).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from .._files import atomic_write, disk_full, remove_stale_temporaries, writable_folder
from ..errors import DiskFullError, OptionError, VisiontkError
from ..features import Features
from . import executors, store
from .config import read_spec
from ..io import IMAGE_SUFFIXES
from ..io.inputs import resolve_images
from .progress import Progress
from .registry import load_stage
from .stage import KINDS, Stage
from .store import escape


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
    failures: list = field(default_factory=list)
    features_path: Path | None = None
    matches_path: Path | None = None
    colmap_path: Path | None = None
    #: why the run stopped before its end (a full disk, a lost scheduler), else ""
    stopped: str = ""
    #: folders of OUT that stages wrote their own files into (OUT/attention, ...)
    folders: list = field(default_factory=list)
    #: what the whole-run stages (reconstruct) reported, by stage name
    models: dict = field(default_factory=dict)
    seconds: float = 0.0
    #: worker processes the run used (or asked the Dask cluster for)
    workers: int = 0
    #: seconds per stage, summed over the items it ran on (in parallel with several workers),
    #: and the writing of each output file
    stage_seconds: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No item failed, the run was not stopped, and every whole-run stage made a model."""
        return not self.failures and not self.stopped and all(
            m.get("models", 1) for m in self.models.values())

    def add_seconds(self, seconds: dict) -> None:
        for stage, t in seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + t

    @contextlib.contextmanager
    def timed(self, what: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add_seconds({what: time.perf_counter() - t0})

    def summary(self) -> dict:
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

    def __init__(self, stages: list[Stage]):
        if not stages:
            raise OptionError("a pipeline needs at least one stage")
        self.stages = list(stages)
        for s in self.stages:
            if s.kind not in KINDS:
                raise OptionError(f"stage {s.name} has kind {s.kind!r}; expected one of "
                                  f"{', '.join(KINDS)}")
        self.image_stages = [s for s in self.stages if s.kind == "image"]
        selections = [s for s in self.stages if s.kind == "pairs"]
        self.pair_stages = [s for s in self.stages if s.kind == "pair"]
        self.model_stages = [s for s in self.stages if s.kind == "model"]
        if self.stages != self.image_stages + selections + self.pair_stages + self.model_stages:
            raise OptionError("stages go in this order: per-image stages, a pair selection, "
                              "per-pair stages, whole-run stages (reconstruct)")
        if len(selections) > 1:
            raise OptionError(f"one pair selection per pipeline, got "
                              f"{', '.join(s.name for s in selections)}")
        if selections and not self.pair_stages:
            raise OptionError(f"stage {selections[0].name} selects pairs, but no per-pair "
                              "stage follows it")
        self.selection = selections[0] if selections else \
            (load_stage("pairs-exhaustive")() if self.pair_stages else None)
        kinds = {frozenset(s.accepts) for s in self.image_stages}
        if len(kinds) > 1:
            raise OptionError("the per-image stages take different kinds of files: "
                              + ", ".join(s.name for s in self.image_stages))
        #: what a folder given as the run's input yields (image files, or weights files...)
        self.accepts = kinds.pop() if kinds else IMAGE_SUFFIXES
        available = {"path"}
        for s in self.stages:
            missing = [i for i in s.inputs if i not in available]
            if missing:
                raise OptionError(f"stage {s.name} needs {', '.join(missing)}, which no earlier "
                                  "stage makes")
            available.update(s.outputs)
        if self.pair_stages and "features" not in available:
            raise OptionError("per-pair stages need a stage that makes features")

    @classmethod
    def from_spec(cls, spec: list[dict]) -> Pipeline:
        stages = []
        for entry in spec:
            options = {k: v for k, v in entry.items() if k != "name"}
            stages.append(load_stage(entry["name"]).from_dict(options))
        return cls(stages)

    @classmethod
    def from_file(cls, path_or_preset) -> Pipeline:
        """From a .toml/.yaml pipeline file or a preset name (see :data:`config.PRESETS`)."""
        return cls.from_spec(read_spec(path_or_preset))

    def specs(self, stages) -> list:
        return [(s.name, s.describe()["options"]) for s in stages]

    def run(self, images, out, *, workers: int | None = None, executor: str = "local",
            scheduler: str | None = None, quiet: bool = False, colmap: bool = False) -> RunResult:
        """Run over ``images`` (a folder, a glob pattern, a text file listing paths, or a list
        of paths) writing into the folder ``out``, on ``workers`` processes (None: one per
        usable core, at most 8 and at most one per image: :func:`.executors.auto_workers`)."""
        t0 = self._t0 = time.perf_counter()
        self._pair_counts = {}
        if colmap and not any("features" in s.outputs for s in self.image_stages):
            raise OptionError("--colmap needs a pipeline that extracts features")
        # Everything that would fail every item fails here, before the first one.
        # absolute before any task leaves: a Dask worker's working folder is not this one
        out = Path(os.path.abspath(writable_folder(out)))
        with _exclusive(out):
            remove_stale_temporaries(out)
            unreadable = []
            named = [(n, Path(os.path.abspath(p))) for n, p in resolve_images(
                images, self.accepts, outputs=out,
                folders=[f for s in self.stages for f in s.folders], unreadable=unreadable)]
            for s in self.stages:
                s.check()
            workers = executors.auto_workers(len(named)) if workers is None else \
                executors.capped_workers(workers, len(named))
            result = RunResult(out=out, images=len(named), workers=workers)
            result.failures += [{"item": str(folder), "stage": "load",
                                 "reason": f"{folder}: cannot read this folder ({why})"}
                                for folder, why in unreadable]
            cache = store.Cache(out / ".cache")
            self._earlier = cache.keys()  # cached results this run did not make itself
            try:
                self._run(named, cache, result, workers, executor, scheduler, quiet, colmap)
            except Exception as exc:  # OSError, or SQLite's "database or disk is full"
                if disk_full(exc):
                    full = _disk_full(out)
                    result.stopped = str(full)
                    raise full from None
                result.stopped = str(exc) if isinstance(exc, VisiontkError) else \
                    f"internal error ({type(exc).__name__})"
                raise
            except KeyboardInterrupt:
                result.stopped = "interrupted"
                raise
            finally:  # interrupted runs too: what was done is summarised, and kept
                result.seconds = time.perf_counter() - t0
                for name, data in (("failures.json", result.failures),
                                   ("summary.json", result.summary())):
                    try:
                        _write_json(out / name, data)
                    except OSError as exc:  # a full disk is said once, by the run
                        if not disk_full(exc):
                            raise
        return result

    def _run(self, named, cache, result, workers, executor, scheduler, quiet, colmap):
        out = result.out
        with executors.create(executor, workers, scheduler, quiet) as pool:
            self._compile_once(pool, result, quiet)
            features = self._run_images(pool, named, self.specs(self.image_stages), cache,
                                        result, quiet)
            if any("features" in s.outputs for s in self.image_stages):
                with result.timed("write features.h5"):
                    result.features_path = _gather(
                        cache, out / "features.h5", features,
                        [cache.features_path(k) for _, k in features],
                        lambda path: store.write_features_h5(path, (
                            (n, k, Features.load(cache.features_path(k))) for n, k in features),
                            __version__))
            pairs = []
            if self.pair_stages:
                pairs = self._run_pairs(pool, named, features, cache, result, quiet)
                with result.timed("write matches.h5"):
                    result.matches_path = _gather(
                        cache, out / "matches.h5", pairs,
                        [cache.pair_path(k) for _, _, k in pairs],
                        lambda path: store.write_matches_h5(path, (
                            (a, b, k, *cache.load_pair(k)) for a, b, k in pairs), __version__))
            # the report's pictures are made while the whole-run stages (reconstruct) run
            made = self._run_whole(pool, named, features, pairs, cache, result, quiet)
            if self.model_stages:  # they write the COLMAP database they map
                colmap = False
            result.seconds = time.perf_counter() - self._t0
            from .report import write_index

            result.folders = [out / f for s in self.image_stages for f in s.folders
                              if (out / f).is_dir()]
            write_index(out, result.summary(), [(n, str(p)) for n, p in named], made,
                        self._pair_counts, links=self._report_links(features))
        if colmap:
            from ..sfm.cameras import CameraChooser
            from .colmap import export_colmap

            with result.timed("write database.db"):
                # generators: one image's features in memory at a time; cameras as COLMAP's
                # extractor makes them (EXIF focal length, one camera per EXIF camera)
                result.colmap_path = export_colmap(
                    out / "database.db",
                    ((n, Features.load(cache.features_path(k))) for n, k in features),
                    ((a, b, *cache.load_pair(k)) for a, b, k in pairs),
                    cameras=CameraChooser({n: p for n, p in named}))

    def _compile_once(self, pool, result, quiet) -> None:
        """On the first run after an install, compile the CPU kernels in one worker while the
        others wait, and say so: every worker compiling them at once competes for the same
        cores, and the run would sit silent meanwhile."""
        from .._numba_cache import COMPILE_NOTICE, kernels_compiled

        uses_kernels = self.pair_stages or any("features" in s.outputs
                                               for s in self.image_stages)
        if not uses_kernels or kernels_compiled():
            return
        if not quiet:
            print(COMPILE_NOTICE, file=sys.stderr, flush=True)
        for reply in pool.map_unordered(executors.compile_task, ["kernels"],
                                        executors.compile_died):
            result.add_seconds(reply["seconds"])

    def _pictures_task(self, named, features, pairs, cache, result):
        """What the report shows (see :mod:`.report`): thumbnails, the strongest and the weakest
        pair; None when there is nothing to draw."""
        from .report import choose_thumbnails

        failed_items = {str(f["item"]) for f in result.failures}
        failed = {n for n, p in named if str(p) in failed_items}
        pictures = [(n, str(p)) for n, p in named if self.accepts == IMAGE_SUFFIXES]
        shown_by = self._shown_by()
        if shown_by is not None:  # the stage's own picture of each item it made
            made = {n for n, _ in features}
            pictures = [(n, str(result.out / shown_by.report_picture.format(stem=escape(n))))
                        if n in made else (n, str(p)) for n, p in named]
        thumbs = choose_thumbnails(pictures, failed)
        paths, keys = dict(named), dict(features)
        # by inliers, then matches (unverified pairs: by matches)
        counted = sorted(((c[1], c[0]) if c[1] >= 0 else (c[0], 0), a, b, k)
                         for (a, b, k) in pairs if (c := self._pair_counts.get((a, b))))
        chosen = {}
        if counted and pictures:
            useful = [c for c in counted if c[0][0] > 0] or counted
            ends = [("strongest", counted[-1])]
            if useful[0] != counted[-1]:  # one useful pair is not two pictures of it
                ends.append(("weakest", useful[0]))
            for label, (_, a, b, k) in ends:
                chosen[label] = (a, str(paths[a]), b, str(paths[b]), str(cache.pair_path(k)),
                                 str(cache.features_path(keys[a])),
                                 str(cache.features_path(keys[b])))
        return (str(result.out), thumbs, chosen) if thumbs or chosen else None

    def _shown_by(self) -> Stage | None:
        """The last image stage with a picture of its own for the report, if any."""
        return next((s for s in reversed(self.image_stages) if s.report_picture), None)

    def _report_links(self, features) -> dict:
        """What a click on an item's thumbnail opens: its stage's page (relative to OUT)."""
        stage = self._shown_by()
        if stage is None or not stage.report_page:
            return {}
        return {n: stage.report_page.format(stem=escape(n)) for n, _ in features}

    def _run_whole(self, pool, named, features, pairs, cache, result, quiet) -> dict:
        """The report's pictures and each whole-run stage, side by side in workers (a mapper
        that crashes fails alone); a stage is skipped when the same inputs and options made
        its result before. Returns what the pictures task made."""
        paths = dict(named)
        context = {"out": str(result.out),
                   "images": [(n, str(paths[n])) for n, _ in features],
                   "features": [(n, str(cache.features_path(k))) for n, k in features],
                   "pairs": [(a, b, str(cache.pair_path(k))) for a, b, k in pairs]}
        inputs = [[n, k] for n, k in features] + [[a, b, k] for a, b, k in pairs]
        jobs, keys, replies = [], {}, {}
        pictures = self._pictures_task(named, features, pairs, cache, result)
        if pictures is not None:
            jobs.append((executors.pictures_task, pictures))
        for stage in self.model_stages:
            keys[stage.name] = store.config_hash([inputs, self.specs([stage])])
            replies[stage.name] = cache.load_model(keys[stage.name])
            if replies[stage.name] is None:
                if not quiet:
                    print(f"{stage.name}: {len(features)} images, {len(pairs)} pairs",
                          file=sys.stderr, flush=True)
                jobs.append((executors.model_task, (stage, context)))
        made = {"thumbs": {}, "pairs": {}}
        for reply in pool.map_unordered(executors.call_task, jobs, executors.call_died):
            _stop_if_disk_full(reply, result.out)
            result.add_seconds(reply.get("seconds", {}))
            if reply["task"] == "pictures_task":
                made = reply
                continue
            replies[reply["stage_name"]] = reply
            if reply["ok"]:
                cache.save_model(keys[reply["stage_name"]], reply)
        for stage in self.model_stages:
            reply = replies[stage.name]
            if reply["ok"]:
                result.models[stage.name] = reply["result"]
            else:
                result.failures.append({k: reply[k] for k in ("item", "stage", "reason")})
        if self.model_stages and (result.out / "database.db").exists():
            result.colmap_path = result.out / "database.db"
        return made

    def _run_images(self, pool, named, specs, cache, result, quiet):
        stages, config = tuple(self.image_stages), store.config_hash(specs)
        tasks = [(name, str(path), stages, config, str(cache.root), str(cache.root.parent))
                 for name, path in named]
        done = {}
        with Progress(len(tasks), "images", quiet) as progress:
            for reply in pool.map_unordered(executors.image_task, tasks, executors.image_died):
                _stop_if_disk_full(reply, result.out)
                result.add_seconds(reply.get("seconds", {}))
                if reply["ok"]:
                    done[reply["name"]] = reply["key"]
                    result.images_done += 1
                    # an image whose copy this run computed is not one "from earlier runs"
                    result.images_cached += reply["cached"] and reply["key"] in self._earlier
                else:
                    result.failures.append({k: reply[k] for k in ("item", "stage", "reason")})
                progress.advance(reply["name"], reply["ok"])
        return [(name, done[name]) for name, _ in named if name in done]

    def _pairs_with_features(self, chosen, run_names, keys, result) -> list:
        """The selected pairs whose two images have features; a pair naming an image that
        failed is listed as a failure of its own (the rest run), a name that is not one of the
        run's images is an error (a typo in a pairs file)."""
        kept = []
        for a, b in chosen:
            unknown = next((n for n in (a, b) if n not in run_names), None)
            if unknown is not None:
                raise OptionError(f"stage {self.selection.name}: {unknown!r} is not one of "
                                  "the run's images")
            failed = next((n for n in (a, b) if n not in keys), None)
            if failed is None:
                kept.append((a, b))
                continue
            result.failures.append({"item": f"{a} {b}", "stage": self.selection.name,
                                    "reason": f"{a} {b}: not matched: image {failed} failed"})
        return kept

    def _run_pairs(self, pool, named, features, cache, result, quiet):
        names = [n for n, _ in features]
        keys = dict(features)
        with result.timed(self.selection.name):
            chosen = self.selection.select(names,
                                           lambda name: Features.load(cache.features_path(
                                               keys[name])))
        chosen = self._pairs_with_features(chosen, {n for n, _ in named}, keys, result)
        stages, config = tuple(self.pair_stages), store.config_hash(self.specs(self.pair_stages))
        tasks = [(a, b, keys[a], keys[b], stages, config, str(cache.root)) for a, b in chosen]
        result.pairs = len(tasks)
        finished = {}
        with Progress(len(tasks), "pairs", quiet) as progress:
            for reply in pool.map_unordered(executors.pair_task, tasks, executors.pair_died):
                _stop_if_disk_full(reply, result.out)
                result.add_seconds(reply.get("seconds", {}))
                if reply["ok"]:
                    finished[(reply["a"], reply["b"])] = reply["key"]
                    self._pair_counts[(reply["a"], reply["b"])] = (reply["matches"],
                                                                   reply["inliers"])
                    result.pairs_done += 1
                    result.pairs_cached += reply["cached"] and reply["key"] in self._earlier
                else:
                    result.failures.append({k: reply[k] for k in ("item", "stage", "reason")})
                progress.advance(f"{reply['a']} {reply['b']}", reply["ok"])
        return [(a, b, finished[(a, b)]) for a, b in chosen if (a, b) in finished]


@contextlib.contextmanager
def _exclusive(out: Path):
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
        raise VisiontkError(f"{lock}: is a folder where visiontk keeps its lock file; "
                            "remove it") from None
    with os.fdopen(fd, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OptionError(f"{out}: another visiontk run is writing into this folder") \
                from None
        yield


def _gather(cache, path: Path, entries: list, sources: list, write) -> Path:
    """``write(path)`` an HDF5 file gathered from the cache files ``sources`` of ``entries``,
    unless the cache records that file whole and current; the disk's room is checked first."""
    if not cache.output_current(path, entries):
        store.ensure_room(path, sources)
        write(path)
        cache.record_output(path, entries)
    return path


def _disk_full(out: Path) -> DiskFullError:
    return DiskFullError(f"{out}: no space left on its disk; free some and run again (the "
                         "finished work is kept and not redone)")


def _stop_if_disk_full(reply: dict, out: Path) -> None:
    """A task that could not write its result because the disk is full: every next one would
    fail alike, so the run stops with one line instead of failing each item."""
    if reply.get("disk_full"):
        raise _disk_full(out)


def _write_json(path: Path, data) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


__all__ = ["Pipeline", "RunResult"]
