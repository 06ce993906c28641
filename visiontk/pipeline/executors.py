"""Where tasks run: this process, a local process pool, or a Dask cluster.

Tasks are plain functions of picklable tuples that talk to the per-item cache on disk, so each
executor only has to map them; every executor keeps a bounded number of tasks in flight, so a
folder of any size streams through in bounded memory.
"""

from __future__ import annotations

import functools
import json
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context

from ..errors import OptionError, VisiontkError
from ..features import Features
from . import store

EXECUTORS = ("local", "dask")
#: Tasks in flight per worker: enough to keep workers busy, few enough to bound memory.
IN_FLIGHT_PER_WORKER = 2


def create(kind: str, workers: int, scheduler: str | None = None):
    if kind not in EXECUTORS:
        raise OptionError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if not isinstance(workers, int) or workers < 1:
        raise OptionError(f"workers must be an integer >= 1, got {workers!r}")
    if kind == "dask":
        return DaskExecutor(workers, scheduler)
    if scheduler:
        raise OptionError("--scheduler is for --executor dask")
    return LocalExecutor(workers)


def _limit_threads() -> None:
    """One compute thread per worker process: parallelism comes from the workers."""
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)


class LocalExecutor:
    """``workers == 1``: tasks run in this process; otherwise a pool of spawned processes."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = None

    def __enter__(self):
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                             initializer=_limit_threads)
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def map_unordered(self, fn, tasks):
        if self._pool is None:
            for task in tasks:
                yield fn(task)
            return
        pending = set()
        todo = iter(tasks)
        limit = self.workers * IN_FLIGHT_PER_WORKER
        while True:
            while len(pending) < limit:
                task = next(todo, None)
                if task is None:
                    break
                pending.add(self._pool.submit(fn, task))
            if not pending:
                return
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()


class DaskExecutor:
    """Tasks on a Dask distributed cluster: ``scheduler`` address, or a LocalCluster of
    ``workers`` single-threaded processes. Workers must see the output folder (shared disk)."""

    def __init__(self, workers: int, scheduler: str | None):
        self.workers = workers
        self.scheduler = scheduler
        self._client = self._cluster = None

    def __enter__(self):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise OptionError("executor dask needs dask[distributed]: "
                              "pip install 'visiontk[dask]'") from None
        if self.scheduler:
            try:
                self._client = Client(self.scheduler, timeout="10s")
            except OSError as exc:
                raise VisiontkError(f"cannot reach the Dask scheduler at {self.scheduler} "
                                    f"({exc})") from None
        else:
            self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                         processes=True, dashboard_address=None,
                                         env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
            self._client = Client(self._cluster)
        return self

    def __exit__(self, *exc):
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def map_unordered(self, fn, tasks):
        from dask.distributed import as_completed

        todo = iter(tasks)
        limit = max(1, len(self._client.scheduler_info().get("workers", {}))) \
            * IN_FLIGHT_PER_WORKER
        first = [self._client.submit(fn, t, pure=False) for t in _take(todo, limit)]
        if not first:
            return
        running = as_completed(first)
        for future in running:
            yield future.result()
            for task in _take(todo, 1):
                running.add(self._client.submit(fn, task, pure=False))


def _take(iterator, n):
    for _ in range(n):
        item = next(iterator, None)
        if item is None:
            return
        yield item


@functools.lru_cache(maxsize=8)
def _stages(specs_json: str):
    from .registry import load_stage

    return [load_stage(name).from_dict(options) for name, options in json.loads(specs_json)]


@functools.lru_cache(maxsize=64)
def _features(path: str) -> Features:
    """Features from the cache; a file's name is its content key, so it never goes stale and
    neighbouring pairs (sequential matching) reuse what is already in memory."""
    return Features.load(path)


def _failure(item: str, stage: str, exc: Exception) -> dict:
    if isinstance(exc, VisiontkError):
        reason = str(exc)
    elif isinstance(exc, OSError):
        reason = f"{item}: {exc.strerror or exc}"
    else:
        reason = f"internal error ({type(exc).__name__}: {exc})"
    return {"ok": False, "item": item, "stage": stage, "reason": reason}


def image_task(task) -> dict:
    """Run the per-image stages on one image unless its features are cached."""
    name, path, specs, cache_root, output_dir = task
    cache = store.Cache(cache_root)
    stage = "load"
    try:
        key = f"{store.content_hash(path)}-{store.config_hash(specs)}"
        if cache.features_path(key).exists():
            return {"ok": True, "name": name, "key": key, "cached": True}
        context = {"path": path, "name": name, "output_dir": output_dir}
        for s in _stages(json.dumps(specs)):
            stage = s.name
            context.update(s.run(context))
        # Features go to the cache (and then features.h5); stages without features wrote their
        # own outputs, and an empty entry marks the image done.
        feats = context.get("features", Features.empty())
        feats.save(cache.features_path(key))
        return {"ok": True, "name": name, "key": key, "cached": False}
    except Exception as exc:  # one bad image must not stop the run
        return {**_failure(path, stage, exc), "name": name}


def pair_task(task) -> dict:
    """Run the per-pair stages on one pair unless its result is cached."""
    a, b, key_a, key_b, specs, cache_root = task
    cache = store.Cache(cache_root)
    key = store.config_hash([key_a, key_b, specs])
    reply = {"a": a, "b": b, "key": key}
    stage = specs[0][0]
    try:
        if cache.pair_path(key).exists():
            return {**reply, "ok": True, "cached": True}
        context = {"name_a": a, "name_b": b,
                   "features_a": _features(str(cache.features_path(key_a))),
                   "features_b": _features(str(cache.features_path(key_b)))}
        for s in _stages(json.dumps(specs)):
            stage = s.name
            context.update(s.run(context))
        cache.save_pair(key, context["matches"], context.get("geometry"))
        return {**reply, "ok": True, "cached": False}
    except Exception as exc:
        return {**reply, **_failure(f"{a} {b}", stage, exc)}
