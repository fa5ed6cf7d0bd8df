"""``ProcessPool`` and ``run_in_process``: work in other processes, read back by the main thread (no
bpy, no thread).

Blender's page on threads recommends processes for work that runs alongside Blender, but
``multiprocessing`` and ``ProcessPoolExecutor`` do not fit inside it: the executor runs a management
thread, ``spawn`` re-runs Blender's ``--python`` script in the child, ``sys.executable`` names the
wrong program in some builds, and in Debian's Blender 3.4.1 merely importing ``multiprocessing`` in a
``--python`` script makes Blender crash at exit. So the pools are built on ``subprocess``, pipes and
``pickle`` alone, and polled by the main thread as sources of the scheduler (``_wake.Source``):

- a ``ProcessPool`` holds one running pool at a time, made on first use (``_running``): a local one
  (``_pool.LocalPool``: worker processes here) or a cluster one (``_cluster.ClusterPool``: a broker
  process that talks to a Dask scheduler). The scheduler stops it at the last ``unregister()`` and
  at exit; the next submission after ``register()`` makes a new one. ``shutdown()`` drains it.
- ``run_in_process`` submits to the shared ``ProcessPool`` (``SHARED``), whose size
  ``set_process_workers`` sets; ``ProcessPool(workers=n)`` is a pool of its own.
- the call is pickled in the submitting thread (``_calls``); the pipes and processes are in
  ``_pipes``; the interpreter of the workers is found by ``_interpreter``; the Future and the
  counters of ``stats()`` (every pool's together) are in ``_tasks``.
"""

from __future__ import annotations

import numbers
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, ParamSpec, TypeVar

from . import _interpreter
from ._args import not_callable, task_name
from ._calls import pickle_call
from ._dispatch import pump
from ._errors import SchedulerStopped
from ._future import MAKE_DICT_AT_BIRTH
from ._lifecycle import LIFECYCLE
from ._pool import SHUT_DOWN, LocalPool
from ._tasks import COUNTS, ProcessFuture, Task
from ._threadinfo import is_main_thread
from ._wake import add_source, remove_source, wake_main

__all__ = ("SHARED", "ProcessFuture", "ProcessPool", "run_in_process", "set_process_workers")

#: The largest pool ``set_process_workers`` and ``ProcessPool(workers=...)`` accept.
MAX_WORKERS = 256

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _SharedSize:
    """The size of the shared pool: ``set_process_workers()``, else the CPU count - 1 (at least 1)."""

    __slots__ = ("workers",)

    def __init__(self) -> None:
        self.workers: int | None = None  # set_process_workers(); None: the default

    def __call__(self) -> int:
        if self.workers is not None:
            return self.workers
        return max(1, (os.cpu_count() or 2) - 1)


def _check_workers(n: object, where: str, name: str = "workers") -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {n!r}")
    value = int(n)
    if not 1 <= value <= MAX_WORKERS:
        raise ValueError(f"{where}: {name} must be within 1 .. {MAX_WORKERS}, got {n!r}")
    return value


class ProcessPool(Executor):
    """A ``concurrent.futures.Executor`` whose Futures complete on Blender's main thread, with no
    thread in Blender.

    ``ProcessPool(workers=4)`` runs tasks in up to 4 worker processes of its own on this machine
    (default: the CPU count - 1, at least 1), apart from ``run_in_process``'s shared pool.
    ``ProcessPool(cluster="tcp://host:8786")`` sends them to a Dask scheduler through a broker
    process that runs ``python`` (an interpreter with ``distributed`` installed; default: the one
    the local workers run); Blender never imports dask (see "Past one machine" in the docs).
    ``python`` of a local pool is its workers' interpreter (Blender's Python version).

    Any thread may submit. Processes start with the first task. Everything ``run_in_process`` says
    holds for ``submit``: what may be sent, where results are read (the main thread, wherever it
    runs queued tasks), errors with their type and the remote traceback as ``__cause__``,
    ``ProcessDied`` for a lost process. A cluster task's Future stays pending until its result is
    back: ``cancel()`` works until then and cancels the task on the cluster too (one already
    running there finishes, and its result is dropped).

    The pool stops at the last ``unregister()`` and at exit (unfinished Futures fail with
    ``SchedulerStopped``); the next ``submit`` after ``register()`` starts it again. ``shutdown()``
    ends it for good.

    Raises:
        TypeError: ``workers`` is not an int, ``cluster`` or ``python`` not a str.
        ValueError: ``workers`` is not within 1 .. 256, or given with ``cluster`` (the cluster
            sizes itself); ``cluster`` is not a Dask address (``tcp://host:port``, ``tls://...``).
    """

    def __init__(self, workers: int | None = None, *, cluster: str | None = None, python: str | None = None) -> None:
        where = "ProcessPool()"
        if cluster is not None:
            if workers is not None:
                raise ValueError(f"{where}: workers= is for a local pool; a cluster pool's size is the cluster's")
            if not isinstance(cluster, str):
                raise TypeError(f"{where}: cluster must be a str such as 'tcp://host:8786', got {cluster!r}")
            if "://" not in cluster:
                raise ValueError(
                    f"{where}: cluster must be a Dask scheduler address such as 'tcp://host:8786', got {cluster!r}"
                )
        if python is not None and not isinstance(python, str):
            raise TypeError(f"{where}: python must be the path of an interpreter (a str), got {python!r}")
        self._size: Callable[[], int] = _SharedSize() if workers is None else _fixed(_check_workers(workers, where))
        self._cluster = cluster
        self._python = python
        self._lock = threading.Lock()  # must be held while replacing _pool or setting _shut_down
        self._pool: Any = None  # the running LocalPool or ClusterPool, made on first use
        self._shut_down = False

    def __repr__(self) -> str:
        where = f"cluster={self._cluster!r}" if self._cluster else f"workers={self._size()}"
        return f"<ProcessPool {where}{' shut down' if self._shut_down else ''}>"

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> ProcessFuture[_T]:
        """Run ``fn(*args, **kwargs)`` in a process of this pool; return its Future at once. Any thread.

        Raises:
            RuntimeError: the pool was shut down; no interpreter was found (the message says
                which were tried).
            TypeError, ValueError, SchedulerStopped: as ``run_in_process`` says.
        """
        return self._submit(fn, args, kwargs, "ProcessPool.submit")

    def _submit(
        self, fn: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any], caller: str
    ) -> ProcessFuture[_T]:
        if not callable(fn):
            raise not_callable(fn)
        if self._shut_down:
            raise RuntimeError(SHUT_DOWN)
        if LIFECYCLE.stopped is not None:
            raise SchedulerStopped(LIFECYCLE.stopped)
        body, packages = pickle_call(fn, args, kwargs, caller)
        if self._python is None:
            python = _interpreter.interpreter()  # a missing interpreter is the caller's error, now
        else:
            python = self._python
            if self._cluster is None:
                _interpreter.check(python)  # a local pool's workers must run Blender's Python version
        future: ProcessFuture[_T] = ProcessFuture()
        if MAKE_DICT_AT_BIRTH:  # made by its creator, before anybody else sees it (_future.MADE_BY_ITS_CREATOR)
            future.__dict__  # noqa: B018
        pool = self._running(python)
        pool.submit(Task(future, body, packages, task_name(fn)))
        stopped = LIFECYCLE.stopped
        if stopped is not None and not pool.closed:
            # Stopped between the check above and the submit, after the scheduler stopped its sources:
            # nobody else will stop this pool.
            remove_source(pool)
            pool.stop(stopped)
        return future

    def _running(self, python: str) -> Any:
        """The running pool, started (and added to the scheduler's sources) on first use. Any thread."""
        pool = self._pool
        if pool is not None and not pool.closed:
            return pool
        with self._lock:
            if self._shut_down:
                raise RuntimeError(SHUT_DOWN)
            if self._pool is None or self._pool.closed:
                if self._cluster is None:
                    self._pool = LocalPool(self._size, python)
                else:
                    from ._cluster import ClusterPool

                    self._pool = ClusterPool(self._cluster, python)
                add_source(self._pool)
            return self._pool

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more tasks; end the processes once the tasks accepted are done. Any thread.

        ``cancel_futures``: first cancel the tasks no process has started (for a cluster pool,
        those whose result is not back; they are cancelled on the cluster too). ``wait``: return
        once every task is done and the processes have ended -- on the main thread by reading
        results meanwhile, elsewhere by waiting for the main thread to read them. Idempotent.
        """
        with self._lock:
            self._shut_down = True
            pool = self._pool
        if pool is None or pool.closed:
            return
        pool.drain(cancel_futures)
        if not wait:
            return
        if is_main_thread():
            while not pool.ended.is_set():
                pump(0.05)
        else:
            pool.ended.wait()

    def _stop(self, message: str) -> None:
        """Stop the running pool now, as the scheduler does at the last ``unregister()`` (tests)."""
        pool = self._pool
        if pool is not None:
            remove_source(pool)
            pool.stop(message)

    def _processes(self) -> list[int]:
        """The pids of the running pool's processes (its workers, or its broker). Tests."""
        pool = self._pool
        return [] if pool is None or pool.closed else pool.pids()


def _fixed(n: int) -> Callable[[], int]:
    return lambda: n


#: The pool of ``run_in_process``; ``set_process_workers`` sizes it.
SHARED = ProcessPool()


def run_in_process(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> ProcessFuture[_T]:
    """Run ``fn(*args, **kwargs)`` in a worker process; return its Future at once. Any thread.

    For CPU-heavy pure-Python work: a worker process uses another core, with no thread in Blender.
    ``fn``, its arguments and its result travel as pickles, so ``fn`` must be defined at the top
    level of a module that the worker can import -- not in ``__main__`` (Blender's ``--python``
    script), not a lambda -- and must not need ``bpy`` (the worker runs plain Python, with
    Blender's ``sys.path``). A function in an add-on's own module works even though the add-on's
    ``__init__`` imports bpy: the worker imports only that module. Do the ``bpy`` work with the
    result on the main thread, e.g. in a done-callback (they run on the main thread).

    The main thread reads the results wherever it runs queued tasks: in the UI the add-on's timer
    does, in ``--background`` and the bpy module ``pump()`` and what calls it. Tasks wait for a free
    worker process; the pool starts with the first task and holds ``set_process_workers()``
    processes (default: CPU count - 1, at least 1). It is the shared ``ProcessPool``: an add-on
    that wants its own size makes its own. The Future re-raises ``fn``'s exception with the same
    type, the worker's traceback attached as its ``__cause__``. ``cancel()`` works until a worker
    process starts the task.

    Raises:
        TypeError: ``fn`` is not callable; ``fn`` or an argument cannot be pickled or needs
            ``__main__`` or a Blender module.
        ValueError: the pickled arguments are larger than 1 GiB.
        RuntimeError: no Python interpreter of Blender's version was found for the workers (the
            message says which were tried).
        SchedulerStopped: after the last ``unregister()``, or while Python exits.

    The Future fails with:
        the exception ``fn`` raised (or a TypeError/ValueError when the result cannot be pickled
        there or unpickled here, or is larger than 1 GiB: the worker survives); ``ProcessDied``
        when the worker process died while running it, even if a process it started still runs,
        or sent back something that is not its reply (another one replaces it; other tasks go
        on); ``SchedulerStopped`` when the pool stopped first (last ``unregister()``, exit).
    """
    return SHARED._submit(fn, args, kwargs, "run_in_process")


def set_process_workers(n: int) -> int:
    """Set how many worker processes ``run_in_process`` may run at once; return the previous size.

    Any thread. Takes effect for the next task handed to a worker: a larger pool starts more
    processes as tasks wait; a smaller one lets busy processes finish their task, then ends them.
    The default is the CPU count - 1, at least 1. (A ``ProcessPool`` of an add-on's own keeps its
    size.)

    Raises:
        TypeError: ``n`` is not an int.
        ValueError: ``n`` is not within 1 .. 256.
    """
    size = SHARED._size
    assert isinstance(size, _SharedSize)
    previous, size.workers = size(), _check_workers(n, "set_process_workers()", "n")
    pool = SHARED._pool
    if pool is not None and not pool.closed:
        if is_main_thread():
            pool.dispatch()  # (no result is read here: no done-callback runs inside this call)
        else:
            wake_main()
    return previous


def counts() -> dict[str, int]:
    """The process fields of ``stats()``: every pool's processes and tasks together. Any thread.

    ``processes`` counts the local worker processes and the brokers of cluster pools (not the
    cluster's own workers); a cluster task is "running" from when it is sent to the cluster until
    its result is back.
    """
    return COUNTS.snapshot()


def reset_counts() -> None:
    """Zero the counters (the pools are untouched). Main thread."""
    COUNTS.reset()


# stats() and reset_stats() reach the pools' counters through these (the scheduler imports no
# other module of the package).
