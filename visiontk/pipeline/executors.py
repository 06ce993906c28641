"""Where tasks run: a local pool of worker processes, or a Dask cluster.

Tasks are plain functions of picklable tuples that talk to the per-item cache on disk, so each
executor only has to map them; every executor keeps a bounded number of tasks in flight, so a
folder of any size streams through in bounded memory. Tasks never run in the runner's process:
a task that crashes its process (a segfault in native code, the OOM killer) fails alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from pathlib import Path

from .._files import disk_full
from ..errors import OptionError, VisiontkError, shown
from ..features import Features
from . import store

EXECUTORS = ("local", "dask")
#: Tasks in flight per worker: enough to keep workers busy, few enough to bound memory.
IN_FLIGHT_PER_WORKER = 2


#: Workers when the user gives no number: one per usable core, at most this many (each is a
#: whole process: interpreter, kernels, the image it works on; more cores go to the threads
#: each worker's OpenCV and numba use), and at most one per item.
AUTO_WORKERS_MAX = 8


def auto_workers(items: int) -> int:
    """How many workers a run of ``items`` images gets by default (see AUTO_WORKERS_MAX)."""
    from .workers import usable_cores  # not at the top: only runs use the pool

    return max(1, min(usable_cores(), AUTO_WORKERS_MAX, items))


#: Workers per usable core at most, however many are asked for: each is a whole process
#: (a few hundred MB), and a million asked for would exhaust the machine.
WORKERS_PER_CORE_MAX = 4


def capped_workers(workers, items: int):
    """``workers`` as asked, but never more than the items or
    :data:`WORKERS_PER_CORE_MAX` per usable core (a bad value is left for :func:`create`)."""
    from .workers import usable_cores

    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        return workers
    return max(1, min(workers, items, WORKERS_PER_CORE_MAX * usable_cores()))


def create(kind: str, workers: int, scheduler: str | None = None, quiet: bool = False):
    if kind not in EXECUTORS:
        raise OptionError(f"executor must be one of {', '.join(EXECUTORS)}, got {shown(kind)}")
    if not isinstance(workers, int) or workers < 1:
        raise OptionError(f"workers must be an integer >= 1, got {shown(workers)}")
    if kind == "dask":
        return DaskExecutor(workers, scheduler)
    if scheduler:
        raise OptionError("--scheduler is for --executor dask")
    return LocalExecutor(workers, quiet)


class LocalExecutor:
    """Tasks in ``workers`` spawned processes (:class:`.workers.WorkerPool`): a worker that
    crashes costs only its task, and workers die with the run."""

    def __init__(self, workers: int, quiet: bool = False):
        self.workers = workers
        self.quiet = quiet
        self._pool = None

    def __enter__(self):
        from .workers import WorkerPool

        self._pool = WorkerPool(self.workers, self.quiet).__enter__()
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.__exit__(*exc)
            self._pool = None

    def map_unordered(self, fn, tasks, died):
        """Yield ``fn(task)`` as tasks finish; ``died(task, cause)`` stands in for the reply of
        a task whose worker died."""
        for task, reply in self._pool.map_unordered(fn, tasks):
            yield died(task, str(reply)) if isinstance(reply, Exception) else reply


#: Seconds between looks at the Dask client's connection while tasks run.
SCHEDULER_CHECK = 1.0
#: Seconds a lost scheduler has to come back before the run ends.
SCHEDULER_GRACE = 5.0


class DaskExecutor:
    """Tasks on a Dask distributed cluster: ``scheduler`` address, or a LocalCluster of
    ``workers`` single-threaded processes. Workers must see the output folder (shared disk)."""

    def __init__(self, workers: int, scheduler: str | None):
        self.workers = workers
        self.scheduler = scheduler
        self._client = self._cluster = None
        self._warned = False
        self._log_levels: dict = {}

    def __enter__(self):
        from .workers import THREAD_VARIABLES  # not at the top: only runs use the pool

        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise OptionError("executor dask needs dask[distributed]: "
                              "pip install 'visiontk[dask]'") from None
        # the run says in one line what went wrong (a lost scheduler): not dask's tracebacks
        # (its config gives sub-loggers levels of their own: each is quieted)
        names = ["distributed", *(n for n in logging.root.manager.loggerDict
                                  if n.startswith("distributed."))]
        self._log_levels = {n: logging.getLogger(n).level for n in names}
        for name in names:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        if self.scheduler:
            try:
                self._client = Client(self.scheduler, timeout="10s")
            except OSError as exc:
                raise VisiontkError(f"cannot reach the Dask scheduler at {self.scheduler} "
                                    f"({exc})") from None
        else:
            self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                         processes=True, dashboard_address=None,
                                         env=dict.fromkeys(THREAD_VARIABLES, "1"))
            self._client = Client(self._cluster)
        return self

    def __exit__(self, *exc):
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        for name, level in self._log_levels.items():
            logging.getLogger(name).setLevel(level)

    def map_unordered(self, fn, tasks, died):

        todo = iter(tasks)
        limit = max(1, len(self._client.scheduler_info().get("workers", {}))) \
            * IN_FLIGHT_PER_WORKER
        submitted = {}

        def submit(task):
            future = self._client.submit(fn, task, pure=False)
            submitted[future.key] = task
            return future

        pending = {submit(t) for t in _take(todo, limit)}
        while pending:
            done, pending = self._wait(pending)
            for future in done:
                task = submitted.pop(future.key)
                try:
                    yield future.result()
                except Exception as exc:  # KilledWorker: the task took down workers repeatedly
                    yield died(task, f"{type(exc).__name__}: {str(exc)[:200]}")
                pending |= {submit(t) for t in _take(todo, 1)}

    def _wait(self, pending: set) -> tuple[set, set]:
        """(done, pending) once a task is done; a scheduler that stays unreachable for
        :data:`SCHEDULER_GRACE` seconds ends the run with one line (the client would wait for
        it for ever), and the rerun resumes from the cache."""
        from dask.distributed import wait

        where = self.scheduler or "the local cluster"
        lost = VisiontkError(f"lost the Dask scheduler ({where}); the finished work is kept: "
                             "run again to resume")
        lost_since = None
        idle_since = time.monotonic()
        while True:
            try:
                done, not_done = wait(pending, timeout=SCHEDULER_CHECK,
                                      return_when="FIRST_COMPLETED")
                return set(done), set(not_done)
            except TimeoutError:
                pass
            except Exception as exc:  # the client cancels every future when it loses it
                if "Cancelled" in type(exc).__name__:
                    raise lost from None
                raise
            if self._client.status == "running":
                lost_since = None
                if self._client.scheduler_info().get("workers"):
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > SCHEDULER_GRACE and not self._warned:
                    self._warned = True  # it waits: the user may be starting workers
                    print(f"waiting for Dask workers: none is connected to {where}",
                          file=sys.stderr, flush=True)
                continue
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > SCHEDULER_GRACE:
                raise lost


def _take(iterator, n):
    for _ in range(n):
        item = next(iterator, None)
        if item is None:
            return
        yield item


_RESIDENT: dict = {}
#: Stage lists a worker keeps (each may hold a loaded model).
RESIDENT_CONFIGS = 4


def _resident(config: str, stages: tuple) -> tuple:
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


def _failure(item: str, stage: str, exc: Exception) -> dict:
    if isinstance(exc, VisiontkError):
        reason = str(exc)
    elif isinstance(exc, OSError):
        reason = f"{item}: {exc.strerror or exc}"
    else:
        reason = f"internal error ({type(exc).__name__}: {exc})"
    failure = {"ok": False, "item": item, "stage": stage, "reason": reason}
    if disk_full(exc):  # not the item's fault: the runner stops the run and says so once
        failure["disk_full"] = True
    return failure


def image_died(task, cause: str) -> dict:
    """The failure of an image whose worker process died while running it."""
    name, path = task[0], task[1]
    return {"ok": False, "name": name, "item": path, "stage": "worker",
            "reason": f"{path}: the worker process {cause} while processing it"}


def pair_died(task, cause: str) -> dict:
    a, b = task[0], task[1]
    return {"ok": False, "a": a, "b": b, "item": f"{a} {b}", "stage": "worker",
            "reason": f"{a} {b}: the worker process {cause} while processing the pair"}


def model_died(task, cause: str) -> dict:
    stage = task[0].name
    return {"ok": False, "stage_name": stage, "item": "the run's model", "stage": "worker",
            "reason": f"{stage}: the worker process {cause} while running it"}


def model_task(task) -> dict:
    """Run one whole-run stage (reconstruct) on the run's cached features and pairs."""
    stage, context = task
    t0 = time.perf_counter()
    reply = {"stage_name": stage.name}
    try:
        result = stage.run(dict(context))
        return {**reply, "ok": True, "result": result,
                "seconds": {stage.name: time.perf_counter() - t0}}
    except Exception as exc:
        return {**reply, **_failure("the run's model", stage.name, exc),
                "seconds": {stage.name: time.perf_counter() - t0}}


def call_task(job) -> dict:
    """``(fn, task)``: different kinds of task in one map (the report's pictures beside the
    whole-run stages); the reply says which (``task``: the function's name)."""
    fn, task = job
    return {**fn(task), "task": fn.__name__}


def call_died(job, cause: str) -> dict:
    fn, task = job
    died = {"model_task": model_died, "pictures_task": pictures_died}[fn.__name__]
    return {**died(task, cause), "task": fn.__name__}


def image_task(task) -> dict:
    """Run the per-image stages on one image unless its features are cached."""
    name, path, stages, config, cache_root, output_dir = task
    cache = store.Cache(cache_root)
    try:
        key = f"{store.content_hash(path)}-{config}"
        if cache.cached_features(key) is not None:
            return {"ok": True, "name": name, "key": key, "cached": True}
        context = {"path": path, "name": name,
                   "output": store.ItemOutput(Path(output_dir), name)}
        seconds = _run_stages(_resident(config, stages), context)
        # Features go to the cache (and then features.h5); stages without features wrote their
        # own outputs, and an empty entry marks the image done.
        feats = context.get("features", Features.empty())
        feats.save(cache.features_path(key))
        return {"ok": True, "name": name, "key": key, "cached": False, "seconds": seconds}
    except _StageFailed as failed:  # one bad image must not stop the run
        return {**_failure(path, failed.stage, failed.error), "name": name,
                "seconds": failed.seconds}
    except Exception as exc:
        return {**_failure(path, stages[0].name, exc), "name": name}


def pair_task(task) -> dict:
    """Run the per-pair stages on one pair unless its result is cached."""
    a, b, key_a, key_b, stages, config, cache_root = task
    cache = store.Cache(cache_root)
    key = store.config_hash([key_a, key_b, config])
    reply = {"a": a, "b": b, "key": key}
    try:
        cached = cache.cached_pair(key)
        if cached is not None:
            return {**reply, **_counts(*cached), "ok": True, "cached": True}
        context = {"name_a": a, "name_b": b,
                   "features_a": _features(str(cache.features_path(key_a))),
                   "features_b": _features(str(cache.features_path(key_b)))}
        seconds = _run_stages(_resident(config, stages), context)
        cache.save_pair(key, context["matches"], context.get("geometry"))
        return {**reply, **_counts(context["matches"], context.get("geometry")), "ok": True,
                "cached": False, "seconds": seconds}
    except _StageFailed as failed:
        return {**reply, **_failure(f"{a} {b}", failed.stage, failed.error),
                "seconds": failed.seconds}
    except Exception as exc:
        return {**reply, **_failure(f"{a} {b}", stages[0].name, exc)}


def _counts(matches, geometry) -> dict:
    """A pair's match and inlier counts (inliers: -1 when it was not verified)."""
    inliers = -1 if geometry is None else int(geometry.inliers.sum())
    return {"matches": len(matches), "inliers": inliers}


def compile_task(_what) -> dict:
    """Compile the CPU kernels once, in one worker, before the items (see
    :func:`visiontk._numba_cache.compile_kernels`)."""
    from .._numba_cache import compile_kernels

    t0 = time.perf_counter()
    with contextlib.suppress(Exception):  # then each item compiles what it needs, as before
        compile_kernels()
    return {"ok": True, "seconds": {"compile kernels": time.perf_counter() - t0}}


def compile_died(task, cause: str) -> dict:
    return {"ok": False, "seconds": {}}


def pictures_task(task) -> dict:
    """The run report's pictures (see :mod:`.report`)."""
    from .report import pictures_task as make

    t0 = time.perf_counter()
    made = make(task)
    return {"ok": True, **made, "seconds": {"report pictures": time.perf_counter() - t0}}


def pictures_died(task, cause: str) -> dict:
    return {"ok": False, "thumbs": {}, "pairs": {}}


class _StageFailed(Exception):
    def __init__(self, stage: str, error: Exception, seconds: dict):
        super().__init__(stage)
        self.stage, self.error, self.seconds = stage, error, seconds


def _run_stages(stages, context: dict) -> dict:
    """Run ``stages`` in order on ``context``; seconds per stage, or :class:`_StageFailed`."""
    seconds = {}
    for s in stages:
        t0 = time.perf_counter()
        try:
            context.update(s.run(context))
        except Exception as exc:
            seconds[s.name] = time.perf_counter() - t0
            raise _StageFailed(s.name, exc, seconds) from exc
        seconds[s.name] = time.perf_counter() - t0
    return seconds
