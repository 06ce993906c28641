"""Where tasks run: a local pool of worker processes, or a Dask cluster.

Tasks are picklable objects (:mod:`.tasks`) that talk to the per-item cache on disk, so each
executor only has to map :func:`.tasks.run_task` over them; every executor keeps a bounded
number of tasks in flight, so a folder of any size streams through in bounded memory. Tasks
never run in the runner's process: a task that crashes its process (a segfault in native code,
the OOM killer) fails alone.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

from ..errors import OptionError, VisiontkError, shown

if TYPE_CHECKING:
    from dask.distributed import Client, Future, LocalCluster
    from dask.typing import Key

    from .tasks import Reply, Task
    from .workers import WorkerPool

_T = TypeVar("_T")

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


def capped_workers(workers: int, items: int) -> int:
    """``workers`` as asked, but never more than the items or
    :data:`WORKERS_PER_CORE_MAX` per usable core (a bad value is left for :func:`create`)."""
    from .workers import usable_cores

    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        return workers
    return max(1, min(workers, items, WORKERS_PER_CORE_MAX * usable_cores()))


class Executor(Protocol):
    """What a run needs of where its tasks run (used as a context manager around the run)."""

    def map_unordered(self, tasks: Iterable[Task]) -> Iterator[Reply]:
        """Yield each task's reply as tasks finish, in any order."""
        ...


def create(
    kind: str, workers: int, scheduler: str | None = None, quiet: bool = False
) -> LocalExecutor | DaskExecutor:
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

    def __init__(self, workers: int, quiet: bool = False) -> None:
        self.workers = workers
        self.quiet = quiet
        self._pool: WorkerPool | None = None

    def __enter__(self) -> Self:
        from .workers import WorkerPool

        self._pool = WorkerPool(self.workers, self.quiet).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.__exit__(*exc)
            self._pool = None

    def map_unordered(self, tasks: Iterable[Task]) -> Iterator[Reply]:
        """Yield each task's reply as tasks finish; ``task.died(cause)`` stands in for the
        reply of a task whose worker died."""
        from .tasks import run_task  # not at the top: the CLI reads this module's constants

        assert self._pool is not None, "map_unordered runs inside `with executor:`"
        for task, reply in self._pool.map_unordered(run_task, tasks):
            yield task.died(str(reply)) if isinstance(reply, Exception) else reply


#: Seconds between looks at the Dask client's connection while tasks run.
SCHEDULER_CHECK = 1.0
#: Seconds a lost scheduler has to come back before the run ends.
SCHEDULER_GRACE = 5.0


class DaskExecutor:
    """Tasks on a Dask distributed cluster: ``scheduler`` address, or a LocalCluster of
    ``workers`` single-threaded processes. Workers must see the output folder (shared disk)."""

    def __init__(self, workers: int, scheduler: str | None) -> None:
        self.workers = workers
        self.scheduler = scheduler
        self._client: Client | None = None
        self._cluster: LocalCluster | None = None
        self._warned = False
        self._log_levels: dict[str, int] = {}

    def __enter__(self) -> Self:
        from .workers import THREAD_VARIABLES  # not at the top: only runs use the pool

        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise OptionError(
                "executor dask needs dask[distributed]: pip install 'visiontk[dask]'"
            ) from None
        # the run says in one line what went wrong (a lost scheduler): not dask's tracebacks
        # (its config gives sub-loggers levels of their own: each is quieted)
        names = [
            "distributed",
            *(n for n in logging.root.manager.loggerDict if n.startswith("distributed.")),
        ]
        self._log_levels = {n: logging.getLogger(n).level for n in names}
        for name in names:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        if self.scheduler:
            try:
                self._client = Client(self.scheduler, timeout="10s")
            except OSError as exc:
                raise VisiontkError(
                    f"cannot reach the Dask scheduler at {self.scheduler} ({exc})"
                ) from None
        else:
            self._cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                env=dict.fromkeys(THREAD_VARIABLES, "1"),
            )
            self._client = Client(self._cluster)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        for name, level in self._log_levels.items():
            logging.getLogger(name).setLevel(level)

    def map_unordered(self, tasks: Iterable[Task]) -> Iterator[Reply]:
        from .tasks import run_task

        client = self._client
        assert client is not None, "map_unordered runs inside `with executor:`"
        todo = iter(tasks)
        limit = max(1, len(client.scheduler_info().get("workers", {}))) * IN_FLIGHT_PER_WORKER
        submitted: dict[Key, Task] = {}

        def submit(task: Task) -> Future:
            future = client.submit(run_task, task, pure=False)
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
                    yield task.died(f"{type(exc).__name__}: {str(exc)[:200]}")
                pending |= {submit(t) for t in _take(todo, 1)}

    def _wait(self, pending: set[Future]) -> tuple[set[Future], set[Future]]:
        """(done, pending) once a task is done; a scheduler that stays unreachable for
        :data:`SCHEDULER_GRACE` seconds ends the run with one line (the client would wait for
        it for ever), and the rerun resumes from the cache."""
        from dask.distributed import wait

        client = self._client
        assert client is not None, "the executor waits inside `with executor:`"
        where = self.scheduler or "the local cluster"
        lost = VisiontkError(
            f"lost the Dask scheduler ({where}); the finished work is kept: run again to resume"
        )
        lost_since = None
        idle_since = time.monotonic()
        while True:
            try:
                done, not_done = wait(
                    pending, timeout=SCHEDULER_CHECK, return_when="FIRST_COMPLETED"
                )
                return set(done), set(not_done)
            except TimeoutError:
                pass
            except Exception as exc:  # the client cancels every future when it loses it
                if "Cancelled" in type(exc).__name__:
                    raise lost from None
                raise
            if client.status == "running":
                lost_since = None
                if client.scheduler_info().get("workers"):
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > SCHEDULER_GRACE and not self._warned:
                    self._warned = True  # it waits: the user may be starting workers
                    print(
                        f"waiting for Dask workers: none is connected to {where}",
                        file=sys.stderr,
                        flush=True,
                    )
                continue
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > SCHEDULER_GRACE:
                raise lost


def _take(iterator: Iterator[_T], n: int) -> Iterator[_T]:
    for _ in range(n):
        item = next(iterator, None)
        if item is None:
            return
        yield item
