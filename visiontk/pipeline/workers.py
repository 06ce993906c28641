"""Worker processes that outlive their tasks and die with their run.

``concurrent.futures.ProcessPoolExecutor`` breaks for good when one worker dies: every pending
task fails with BrokenProcessPool, and a segfault in a run without a pool ends the whole run
with no summary. And a parent killed with SIGKILL leaves its workers (and multiprocessing's
resource tracker) running, adopted by pid 1. This pool:

* runs every task in a worker process (a fresh, isolated interpreter importing exactly what
  its parent imports: :data:`_BOOTSTRAP`; talking over a socket pair), one task per worker at
  a time, so a worker that dies (a segfault in native code, the OOM killer) costs only the
  task it was running: the caller is told the cause (:class:`WorkerDied`) and a fresh worker
  takes the next task. Unlike multiprocessing's spawn, nothing re-imports the caller's
  ``__main__``: a script that calls ``Pipeline.run`` needs no ``if __name__ == "__main__"``
  guard, and no resource tracker process is started;
* ties each worker to its parent twice: Linux's parent-death signal (``PR_SET_PDEATHSIG``:
  SIGKILL the moment the parent goes), and everywhere a watchdog thread that exits the worker
  when its parent process is gone;
* leaves Ctrl-C and SIGTERM to the parent (workers ignore SIGINT), which stops the workers when
  the pool closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any, Self, TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Seconds between the watchdog's looks at the parent (only matters where prctl is missing).
WATCHDOG_PERIOD = 0.5
#: Seconds a worker gets to exit after being asked, before it is killed.
STOP_GRACE = 5.0
_PR_SET_PDEATHSIG = 1


class WorkerDied(Exception):
    """The worker running a task exited before answering (crash, kill, out of memory)."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def exit_cause(exitcode: int | None) -> str:
    """Words for a dead worker's exit code: 'killed by SIGSEGV', 'exited with status 3'."""
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {exitcode}"


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def watchdog() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(WATCHDOG_PERIOD)

    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=watchdog, daemon=True, name="visiontk-watchdog").start()


#: Thread-count variables of the compute libraries a worker loads (numba, OpenMP, OpenBLAS,
#: MKL). They only work when set before the library loads, so they go into the worker's
#: environment at its start: a worker imports numpy (through visiontk) before any code of
#: the worker runs.
THREAD_VARIABLES = (
    "NUMBA_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def worker_environment(threads: int, quiet: bool = False) -> dict[str, str]:
    """This process's environment with the compute threads per worker set (values the user
    set are kept), so that workers × threads ≈ the machine's cores: more threads than cores
    slow matching down (BLAS threads spin while they wait). ``quiet``
    silences the log of COLMAP's mapper (glog) but for fatal errors: the run reports what
    failed in its own words."""
    env = dict(os.environ)
    for var in THREAD_VARIABLES:
        env.setdefault(var, str(threads))
    if quiet:
        env.setdefault("GLOG_minloglevel", "3")
    return env


def _limit_threads(threads: int) -> None:
    """OpenCV's pool, which can be sized after it loads (the others come from
    :func:`worker_environment`)."""
    import cv2

    cv2.setNumThreads(threads)


def _worker_main(conn: Connection, parent_pid: int, threads: int) -> None:
    from ..extract import own_process

    own_process()
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _limit_threads(threads)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:  # the run is over: every file a task wrote is closed
            _exit_now()
        fn, task = message
        try:
            reply = ("ok", fn(task))
        except Exception as exc:  # the task functions catch their own; this is a last resort
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return


def _exit_now() -> None:
    """Leave without the interpreter's teardown: with numba, OpenCV and pycolmap loaded it
    is slow, every run waits for it at its end, and a worker holds nothing that needs it."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


#: A worker's first lines. ``-I`` keeps the current folder, PYTHON* variables and the user's
#: site folder out of the interpreter's start, so a ``visiontk/`` folder or a ``cv2.py`` where
#: the user stands is never imported; the path is then set to the parent's, before anything
#: of visiontk is imported, and the ``visiontk`` found must be the parent's.
_BOOTSTRAP = """\
import json, site, sys
sys.path[:], user_site, expected = json.loads(sys.argv[1])
if user_site:
    site.addsitedir(user_site)
import visiontk
if visiontk.__file__ != expected:
    sys.exit(f"visiontk worker: imported visiontk from {visiontk.__file__}, "
             f"its run from {expected}")
from visiontk.pipeline.workers import main
main(sys.argv[2:])
"""


def parent_imports() -> str:
    """What a worker needs to import exactly what this process imports (JSON): this process's
    ``sys.path`` with the current folder made absolute (it holds what was added at run time,
    plugins say), the user's site folder when this process read it (its ``.pth`` files), and
    where ``visiontk`` came from."""
    import site

    import visiontk

    path = [os.path.abspath(p) if p in ("", ".") else p for p in sys.path]
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    return json.dumps([path, user if user in sys.path else None, visiontk.__file__])


class _Worker:
    def __init__(self, threads: int, imports: str, quiet: bool = False) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-c",
                    _BOOTSTRAP,
                    imports,
                    str(theirs.fileno()),
                    str(os.getpid()),
                    str(threads),
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                env=worker_environment(threads, quiet),
            )
            self.conn = Connection(ours.detach())
        #: the task it is running; None when idle
        self.task: Any = None

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()

    def ask_to_stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)

    def stop(self) -> None:
        self.ask_to_stop()
        try:
            self.process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.kill()
            self.process.wait()
        self.conn.close()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset``
    narrow), else the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class WorkerPool:
    """``workers`` spawned processes running tasks one at a time each (see the module)."""

    def __init__(self, workers: int, quiet: bool = False) -> None:
        self.workers = workers
        self.threads = max(1, usable_cores() // workers)
        self._pool: list[_Worker] = []
        self._imports = parent_imports()
        self.quiet = quiet

    def __enter__(self) -> Self:
        self._pool = [self._start() for _ in range(self.workers)]
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:  # interrupted or failed: do not wait for running tasks
            for worker in self._pool:
                worker.kill()
        for worker in self._pool:  # all at once, then wait for each
            worker.ask_to_stop()
        for worker in self._pool:
            worker.stop()
        self._pool = []

    def _start(self) -> _Worker:
        return _Worker(self.threads, self._imports, self.quiet)

    def map_unordered(
        self, fn: Callable[[_T], _R], tasks: Iterable[_T]
    ) -> Iterator[tuple[_T, _R | Exception]]:
        """Yield ``(task, reply)`` as tasks finish; ``reply`` is ``fn(task)`` or a
        :class:`WorkerDied` when the worker running it died. A task is never None (None
        marks an idle worker)."""
        todo = iter(tasks)
        exhausted = False
        while True:
            for worker in self._pool:
                if worker.task is None and not exhausted:
                    task = next(todo, _END)
                    if task is _END:
                        exhausted = True
                        break
                    worker.task = task
                    # a worker that died idle fails this send, or shows EOF below: either way
                    # the task is reported as the dead worker's
                    with contextlib.suppress(OSError):
                        worker.conn.send((fn, task))
            busy: dict[object, _Worker] = {w.conn: w for w in self._pool if w.task is not None}
            if not busy:
                return
            for conn in wait([w.conn for w in busy.values()]):
                worker = busy[conn]
                task, worker.task = worker.task, None
                try:
                    status, value = worker.conn.recv()
                except (EOFError, OSError):
                    yield task, WorkerDied(self._replace(worker))
                    continue
                yield task, (value if status == "ok" else RuntimeError(value))

    def _replace(self, worker: _Worker) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(STOP_GRACE)
        cause = exit_cause(worker.exitcode)
        worker.stop()
        self._pool[self._pool.index(worker)] = self._start()
        return cause


_END = object()


def main(argv: list[str]) -> None:
    """A worker's life, started by :data:`_BOOTSTRAP` with ``FD PARENT_PID THREADS``."""
    fd, parent_pid, threads = (int(v) for v in argv)
    _worker_main(Connection(fd), parent_pid, threads)
