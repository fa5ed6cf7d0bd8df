"""What every process pool shares: its Future, a task, the counters of ``stats()``, and how a reply
completes a Future on the main thread (no bpy).

A reply -- from a local worker process or, through a broker, from a Dask worker -- is a header of
built-in data and a pickle (the format is in ``_process_child``). ``complete`` unpickles it on the
main thread and finishes the task's Future there, so its done-callbacks run there.
"""

from __future__ import annotations

import pickle
import threading
import weakref
from concurrent.futures import InvalidStateError
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ._future import MainThreadFuture

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ("COUNTS", "Counts", "ProcessFuture", "RemoteTraceback", "Task", "complete", "fail", "succeed")

_T = TypeVar("_T")


class ProcessFuture(MainThreadFuture[_T]):
    """The ``concurrent.futures.Future`` returned by ``run_in_process`` and ``ProcessPool.submit``.

    Any thread may wait on it, cancel it (until a worker process starts the task; for a cluster
    pool, until its result is back) or add callbacks. It is completed on the main thread, so
    done-callbacks run there (those added after it is done run at once in the adding thread, and a
    cancel() runs them in the cancelling thread). ``result()``/``exception()`` on the main thread
    read results and run queued tasks while they wait; in a worker thread they just wait, so
    something must keep the main thread running its work: the UI timer, or ``pump()`` and what
    calls it in the background.
    """

    _runs_on_main = False  # RUNNING means "in a worker process": the main thread may wait for it


class Task:
    """One submission: its Future, the pickled call until a process has it, and where it stands."""

    __slots__ = ("future", "body", "packages", "name", "started", "sent_once", "number")

    def __init__(self, future: ProcessFuture[Any], body: bytes, packages: dict[str, list[str]], name: str) -> None:
        self.future = future
        self.body: bytes | None = body  # None once a process has it
        self.packages = packages
        self.name = name
        self.started = False  # its future is RUNNING (a local worker has it)
        self.sent_once = False  # a worker died before it could read the task once already
        self.number = 0  # the number its reply repeats, once sent


class _Pool(Protocol):
    def counts(self) -> tuple[int, int, int]: ...


class Counts:
    """The process fields of ``stats()``: every pool's tasks together (the shared pool of
    ``run_in_process``, each ``ProcessPool``, local or cluster). Any thread.
    """

    __slots__ = ("submitted", "completed", "failed", "cancelled", "_lock", "_pools")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # must be held while changing the counts below
        self.submitted = self.completed = self.failed = self.cancelled = 0
        self._pools: weakref.WeakSet[_Pool] = weakref.WeakSet()  # running pools, for counts()

    def add(self, submitted: int = 0, completed: int = 0, failed: int = 0, cancelled: int = 0) -> None:
        with self._lock:
            self.submitted += submitted
            self.completed += completed
            self.failed += failed
            self.cancelled += cancelled

    def reset(self) -> None:
        """Zero the counts (``reset_stats()``); the pools are untouched."""
        with self._lock:
            self.submitted = self.completed = self.failed = self.cancelled = 0

    def track(self, pool: _Pool) -> None:
        """Count ``pool``'s processes and tasks in ``snapshot()`` until ``forget(pool)``."""
        with self._lock:
            self._pools.add(pool)

    def forget(self, pool: _Pool) -> None:
        with self._lock:
            self._pools.discard(pool)

    def _running_pools(self) -> Iterator[_Pool]:
        with self._lock:
            pools = list(self._pools)
        yield from pools

    def snapshot(self) -> dict[str, int]:
        """The process fields of ``stats()``."""
        alive = pending = running = 0
        for pool in self._running_pools():
            a, p, r = pool.counts()
            alive, pending, running = alive + a, pending + p, running + r
        return {
            "processes": alive,
            "process_submitted": self.submitted,
            "process_completed": self.completed,
            "process_failed": self.failed,
            "process_cancelled": self.cancelled,
            "process_pending": pending,
            "process_running": running,
        }


COUNTS = Counts()


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process (set as its ``__cause__``)."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f"\n\nThe worker process raised:\n\n{self.tb}"


def succeed(task: Task, result: object) -> None:
    COUNTS.add(completed=1)
    try:
        task.future.set_result(result)
    except InvalidStateError:  # somebody completed it by hand, or cancelled it (a cluster's task)
        pass


def fail(task: Task, error: BaseException, cause: BaseException | None = None) -> None:
    if cause is not None:
        error.__cause__ = cause
    COUNTS.add(failed=1)
    try:
        task.future.set_exception(error)
    except InvalidStateError:
        pass


def complete(task: Task, failure: tuple[str, str, str] | None, body: memoryview) -> None:
    """Finish ``task`` with its reply: ``failure`` from its header (None: a result), ``body`` the
    pickle. Main thread."""
    if failure is None:
        # Unpickling runs the result's own code. Whatever it raises fails the task, SystemExit and
        # KeyboardInterrupt too: they come from that code, not from the user (the scheduler holds
        # Ctrl-C back while it polls), and re-raised by future.result() they would end a
        # --background script or unwind Blender's timer. So they are wrapped in the same TypeError
        # as any other result that cannot be unpickled (as __cause__).
        try:
            result = pickle.loads(body)
        except BaseException as exc:  # noqa: BLE001 - see above
            unpicklable = TypeError(
                f"the result of {task.name} came back from the worker process but cannot be unpickled here: {exc!r}"
            )
            fail(task, unpicklable, exc)
            return
        succeed(task, result)
        return
    type_name, text, tb = failure
    error: object
    try:
        error = pickle.loads(body) if len(body) else None
    except BaseException:  # noqa: BLE001 - e.g. its class is not importable here (see above, too)
        error = None
    if not isinstance(error, BaseException):
        error = RuntimeError(f"{type_name}: {text} (the exception itself could not be sent back)")
    fail(task, error, RemoteTraceback(tb))
