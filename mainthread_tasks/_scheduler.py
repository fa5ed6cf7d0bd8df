"""The task queue and the loop that runs it on the main thread (no bpy).

One process-wide queue (a ``queue.SimpleQueue``: its ``put`` is a single C call that never blocks)
holds ``(future, fn, args, kwargs)`` items; ``future`` is ``None`` for ``post_on_main``, ``kwargs``
is ``None`` when there are none (so the empty dict each call makes is not kept). Only the
main thread takes items off it to run them -- in ``pump()``, in the Blender timer (``run_for``) and
while it waits on a future or in ``joined_threads`` -- so the stats counters below are only ever
written on the main thread, except ``_cancelled_at_stop`` (guarded by ``_lifecycle_lock``).

Every thread's submissions go into the same FIFO queue, so each thread's tasks run in the order it
submitted them.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import select
import socket
import sys
import threading
from _thread import allocate_lock
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from time import monotonic, perf_counter
from typing import Any, ParamSpec, Protocol, TypeAlias, TypeVar

from ._errors import NotMainThreadError, SchedulerStopped
from ._future import FINISHED, RUNNING, MainThreadFuture, set_main_thread_wait, waited_future
from ._interrupts import GUARD, dispatcher, interruptible, task_runner
from ._threadinfo import MAIN_THREAD_IDENT

__all__ = (
    "Stats",
    "add_source",
    "call_on_main",
    "main_thread",
    "post_on_main",
    "pump",
    "remove_source",
    "run_on_main",
    "stats",
    "wake_main",
)

logger = logging.getLogger("mainthread_tasks")

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: A queued task: (its future, None for post_on_main; fn; args; kwargs, None when there are none).
Item: TypeAlias = "tuple[MainThreadFuture[Any] | None, Callable[..., Any], tuple[Any, ...], dict[str, Any] | None]"

_get_ident = threading.get_ident

_queue: SimpleQueue[Item] = SimpleQueue()
_put = _queue.put
_get_nowait = _queue.get_nowait
_qsize = _queue.qsize

# Lifecycle. ``_stopped`` is None while work is accepted, else the message of SchedulerStopped.
# The library accepts work from import on (scripts in --background never call register()); it stops
# after the last unregister() and, for good, when Python exits.
_lifecycle_lock = threading.Lock()  # must be held while changing _users, _stopped, _exiting
_stopped: str | None = None
_exiting = False
_users = 0

# Counters: written on the main thread only (see module docstring).
_completed = 0
_failed = 0
_cancelled = 0
_cancelled_at_stop = 0  # guarded by _lifecycle_lock: any thread may reject the queue
_ticks = 0
_longest_tick = 0.0
_last_tick = 0.0
_longest_task = 0.0
_longest_task_name = ""
_slow_tasks = 0
_running: Callable[..., Any] | None = None  # the task running on the main thread right now

# Holding (see _hold): while a render/bake/composite job runs, the UI timer moves queued tasks here
# instead of running them, and they run first once it ends. Written by the main thread; any thread
# may empty it when the scheduler stops (deque.popleft is atomic).
_held: deque[Item] = deque()  # oldest first
_held_reason = ""  # why the UI timer holds the queue right now, "" when it does not
_holds = 0  # holds that began since the last reset_stats()

# A task slower than this is logged (with its name) as having blocked the main thread.
slow_task_seconds = 1.0

_STOPPED_BY_UNREGISTER = (
    "mainthread_tasks is stopped: the last unregister() ran; call mainthread_tasks.register() "
    "(or enable the add-on) to submit work again"
)
_STOPPED_BY_EXIT = "mainthread_tasks is stopped: Python is exiting, no more work can run on the main thread"


@dataclass(frozen=True)
class Stats:
    """A snapshot of the scheduler, from ``stats()``.

    ``submitted`` counts tasks accepted into the queue (a submission refused with SchedulerStopped
    is not counted), so ``submitted == completed + failed + cancelled + pending (+1 while a task
    runs)``. Times are in seconds.
    """

    submitted: int
    completed: int  #: ran and returned
    failed: int  #: ran and raised (post_on_main failures are also logged)
    cancelled: int  #: never ran: cancelled by the caller, or by unregister()/exit
    pending: int  #: queued, not yet started
    running: str | None  #: name of the task running on the main thread right now, if any
    accepting: bool  #: False after the last unregister() or at exit: submissions raise SchedulerStopped
    registered: int  #: how many register() calls are outstanding
    ticks: int  #: Blender timer passes that found tasks to run (0 in --background: timers never fire)
    last_tick: float  #: time the latest of those passes spent running tasks
    longest_tick: float  #: longest such pass: the worst UI stall the queue caused
    longest_task: float  #: longest single task
    longest_task_name: str
    slow_tasks: int  #: tasks that took longer than ``slow_task_seconds`` (each one is logged)
    # run_in_process: process_submitted == process_completed + process_failed + process_cancelled
    # + process_pending + process_running.
    processes: int = 0  #: worker processes alive
    process_submitted: int = 0  #: tasks accepted by run_in_process
    process_completed: int = 0  #: returned a result
    process_failed: int = 0  #: raised, lost with a dead worker, or stopped while running
    process_cancelled: int = 0  #: never started: cancelled, or dropped when the pool stopped
    process_pending: int = 0  #: waiting for a free worker process
    process_running: int = 0  #: in a worker process now
    #: The UI timer holds the queue: a render, bake or composite job is running, and tasks that
    #: change data would fail or crash Blender; they run once it ends (``ui_only`` tasks run now).
    held: bool = False
    held_reason: str = ""  #: why, e.g. "a RENDER job is running"; "" when not held
    holds: int = 0  #: how many times the UI timer began holding the queue


def stats() -> Stats:
    """Return a snapshot of the counters. Any thread."""
    pending = _qsize() + len(_held)
    running_fn = _running
    running = None if running_fn is None else task_name(running_fn)
    cancelled = _cancelled + _cancelled_at_stop
    return Stats(
        submitted=_completed + _failed + cancelled + pending + (running is not None),
        completed=_completed,
        failed=_failed,
        cancelled=cancelled,
        pending=pending,
        running=running,
        accepting=_stopped is None,
        registered=_users,
        ticks=_ticks,
        last_tick=_last_tick,
        longest_tick=_longest_tick,
        longest_task=_longest_task,
        longest_task_name=_longest_task_name,
        slow_tasks=_slow_tasks,
        **_process_counts(),
        held=bool(_held_reason),
        held_reason=_held_reason,
        holds=_holds,
    )


def reset_stats() -> None:
    """Zero the counters (pending work is untouched). Main thread."""
    global _completed, _failed, _cancelled, _cancelled_at_stop, _ticks, _last_tick, _longest_tick
    global _longest_task, _longest_task_name, _slow_tasks, _holds
    with _lifecycle_lock:
        _completed = _failed = _cancelled = _cancelled_at_stop = _ticks = _slow_tasks = _holds = 0
        _last_tick = _longest_tick = _longest_task = 0.0
        _longest_task_name = ""
    _reset_process_counts()


def _no_process_counts() -> dict[str, int]:
    return {}


def _no_process_reset() -> None:
    pass


# The process pool's part of stats() and reset_stats(), installed by _process when it is imported
# (Stats' process fields default to 0 until then): this module imports no other of the package's
# work modules, so there is no import circle.
_process_counts: Callable[[], dict[str, int]] = _no_process_counts
_reset_process_counts: Callable[[], None] = _no_process_reset


def task_name(fn: object) -> str:
    """A readable name for a callable, for logs and stats. Never raises, whatever ``fn`` does."""
    try:
        name = getattr(fn, "__qualname__", None)
        if isinstance(name, str):
            module = getattr(fn, "__module__", None)
            return f"{module}.{name}" if isinstance(module, str) else name
        return repr(fn)
    except Exception:  # noqa: BLE001 - a proxy or command object whose __getattr__/__repr__ raises
        return f"<{type(fn).__qualname__} object at {id(fn):#x}>"


def _not_callable(fn: object) -> TypeError:
    return TypeError(
        f"fn must be callable, got {type(fn).__name__} {fn!r:.80}; "
        "pass a function (mainthread_tasks never evaluates strings of code)"
    )


def _check_timeout(timeout: object, what: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{what}: timeout must be a number of seconds or None, got {timeout!r}")
    value = float(timeout)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what}: timeout must be >= 0 seconds or None, got {timeout!r}")
    return value


# -- submitting: any thread -------------------------------------------------------------------


def run_on_main(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> MainThreadFuture[_T]:
    """Queue ``fn(*args, **kwargs)`` to run on the main thread; return its Future. Any thread.

    Always queued, never run inline, even on the main thread, so a thread's tasks run in the order
    it submitted them. The result is a real ``concurrent.futures.Future``: ``.result(timeout)``,
    ``.cancel()`` (until the task starts), ``add_done_callback``, ``concurrent.futures.wait`` and
    ``asyncio.wrap_future`` all work; on the main thread ``.result()`` runs queued tasks while it
    waits instead of deadlocking. If this returns, the task will run exactly once or its Future
    will be cancelled (by you, by the last ``unregister()`` or at exit).

    Raises:
        TypeError: ``fn`` is not callable.
        SchedulerStopped: after the last ``unregister()``, or while Python exits.
    """
    if not callable(fn):
        raise _not_callable(fn)
    if _stopped is not None:
        raise SchedulerStopped(_stopped)
    future: MainThreadFuture[_T] = MainThreadFuture()
    future.__dict__  # noqa: B018 - made by its creator, before anybody else sees it (_future.MADE_BY_ITS_CREATOR)
    _put((future, fn, args, kwargs or None))
    if _main_asleep:
        wake_main()
    if _stopped is not None:  # stopped between the check and the put: nothing may stay queued
        _reject_queued()
    return future


def post_on_main(fn: Callable[_P, object], /, *args: _P.args, **kwargs: _P.kwargs) -> None:
    """Queue ``fn(*args, **kwargs)`` for the main thread, fire-and-forget: the fast path. Any thread.

    No Future is made. If the task raises, the exception is logged with its traceback on the
    ``mainthread_tasks`` logger and counted in ``stats().failed``; if it is dropped unrun by
    ``unregister()``/exit, that is logged and counted in ``stats().cancelled``.

    Raises:
        TypeError: ``fn`` is not callable.
        SchedulerStopped: after the last ``unregister()``, or while Python exits.
    """
    if not callable(fn):
        raise _not_callable(fn)
    if _stopped is not None:
        raise SchedulerStopped(_stopped)
    _put((None, fn, args, kwargs or None))
    if _main_asleep:
        wake_main()
    if _stopped is not None:  # stopped between the check and the put: nothing may stay queued
        _reject_queued()


def call_on_main(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run ``fn(*args, **kwargs)`` on the main thread and return its result. Any thread.

    On the main thread it runs inline, now. From another thread it queues the call and blocks
    until the main thread has run it; an exception raised by ``fn`` is re-raised here, with its
    traceback.

    Raises:
        TypeError: ``fn`` is not callable.
        SchedulerStopped: the scheduler was stopped before or while waiting (last
            ``unregister()``, or Python exiting), so ``fn`` never ran.
    """
    if not callable(fn):
        raise _not_callable(fn)
    if _get_ident() == MAIN_THREAD_IDENT:
        return fn(*args, **kwargs)
    # The submit steps of run_on_main, inlined like in post_on_main: this is the hot path.
    if _stopped is not None:
        raise SchedulerStopped(_stopped)
    future: MainThreadFuture[_T]  # an annotation only: nothing runs for it
    future, waker = waited_future()
    _put((future, fn, args, kwargs or None))
    if _main_asleep:
        wake_main()
    if _stopped is not None:  # stopped between the check and the put: nothing may stay queued
        _reject_queued()
    waker.acquire()  # released once the future is done: finished, or cancelled by a stop
    try:
        return future.result()
    except CancelledError:
        if future.cancelled():  # only the scheduler could have cancelled it: nobody else has it
            raise SchedulerStopped(_stopped or _STOPPED_BY_UNREGISTER) from None
        raise
    finally:
        del future


def main_thread(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """Decorator: every call of ``fn``, from any thread, runs on the main thread.

    Same semantics as ``call_on_main`` (inline on the main thread; from a worker it blocks and
    returns the result or re-raises the exception). Keeps ``fn``'s name, docstring and signature.

    Raises:
        TypeError: ``fn`` is not callable (at decoration time).
    """
    if not callable(fn):
        raise _not_callable(fn)

    @functools.wraps(fn)
    def on_main_thread(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return call_on_main(fn, *args, **kwargs)

    return on_main_thread


# -- running: main thread ---------------------------------------------------------------------


@task_runner
def _run_batch(limit: int, deadline: float | None, take: Callable[[], Item] | None = None) -> int:
    """Run up to ``limit`` queued tasks. Main thread only, with the Ctrl-C guard installed.

    ``take`` takes the next item off another queue than the scheduler's (the tasks held during a
    job: ``_held.popleft``).

    Returns how many ran (cancelled ones are skipped, not counted). ``limit`` is the queue length
    when the batch started, like asyncio's ``_run_once`` takes ``ntodo = len(self._ready)``: a task
    that queues more work cannot keep one batch going forever. With a ``deadline`` (a perf_counter
    time) no task starts once it has passed, nor when a task as long as the one before it would
    end past it: with tasks of similar length a Blender timer pass stays within its budget and
    leaves the UI time to redraw. A task's exception goes to its Future (or the log, for
    post_on_main) and the batch goes on; KeyboardInterrupt and SystemExit are recorded the same
    way, then re-raised here so that the main thread's own code decides what Ctrl-C or exit means
    (the rest stays queued). A Ctrl-C that lands in the dispatcher itself ends the batch after the
    task in hand (see "Ctrl-C" above).

    This is the hot loop, so it reads the clock once per task (a task's time runs from the end of
    the one before, so it includes taking it off the queue: well under a microsecond) and starts
    and finishes Futures inline, lock-free (the protocol is in ``_future``'s module docstring).
    Like ``concurrent.futures``' ``_WorkItem.run`` it drops its references to the task before it
    returns: a failed task's traceback holds this frame, which must not keep the task's Future,
    function and arguments alive.
    """
    global _completed, _failed, _cancelled, _running
    global _longest_task, _longest_task_name, _slow_tasks
    taken = failed = cancelled = 0  # per-task counting is only for the rare outcomes
    slow = slow_task_seconds
    notable = min(_longest_task, slow)  # a task this long is a new longest or a slow one: look closer
    get_nowait = _get_nowait if take is None else take
    clock = perf_counter
    guard = GUARD
    outer_running = _running  # a task waiting on a future runs a nested batch
    future = fn = args = kwargs = result = None
    attrs: Any = None  # the future's __dict__
    ended = clock()
    try:
        for taken in range(1, limit + 1):
            try:
                future, fn, args, kwargs = get_nowait()
            except (Empty, IndexError):  # IndexError: a deque given as ``take``
                taken -= 1
                break
            if future is not None:
                attrs = future.__dict__
                if attrs.setdefault("_state", RUNNING) is not RUNNING:  # start: atomic against cancel()
                    cancelled += 1
                    continue
            _running = fn
            try:
                # The task: the only line where a Ctrl-C raises at once (see _interrupts).
                result = fn(*args, **kwargs) if kwargs else fn(*args)
            except BaseException as exc:
                failed += 1
                if future is None:
                    logger.error("post_on_main task %s raised", task_name(fn), exc_info=exc)
                else:
                    future._finish("_exception", exc, "add_exception")
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                del exc
            else:
                if future is not None:
                    if attrs.setdefault("_sync", None) is None:  # finish: lock-free unless watched
                        attrs["_result"] = result
                        attrs["_state"] = FINISHED
                    else:
                        future._finish("_result", result, "add_result")  # somebody waits: lock and notify
                result = None  # a post_on_main task's return value dies here, in the bookkeeping
            started, ended = ended, clock()
            elapsed = ended - started
            if elapsed >= notable:
                if elapsed > _longest_task:  # the global: a nested batch may have raised it
                    _longest_task, _longest_task_name = elapsed, task_name(fn)
                if elapsed >= slow:
                    _slow_tasks += 1
                    logger.warning(
                        "task %s blocked the main thread for %.3f s; do slow work in a worker thread",
                        task_name(fn),
                        elapsed,
                    )
                notable = min(_longest_task, slow)
            if guard.deferred is not None or (deadline is not None and ended + elapsed > deadline):
                break
    finally:
        # The state first: nothing here runs Python code, so no signal can land before it is
        # restored. Then the references: their decrefs may run __del__s and weakref callbacks.
        _running = outer_running
        _completed += taken - failed - cancelled
        _failed += failed
        _cancelled += cancelled
        future = fn = args = kwargs = attrs = result = None
    return taken - cancelled


@dispatcher
def pump(timeout: float | None = 0.0) -> int:
    """Run the queued tasks now, in the calling thread, which must be the main thread.

    If none is queued, first wait up to ``timeout`` seconds (``None``: no limit) for one (or for
    ``wake_main()``, which ends the wait early). Runs the
    tasks that were queued when it started (tasks they queue run at the next call); returns how
    many ran. Process results and asyncio steps that are ready are delivered too, and count. This
    is how a ``--background`` script, where Blender timers never fire, gets its workers'
    main-thread calls done (``joined_threads`` calls it for you). Ctrl-C interrupts the task
    running or the wait; landing between tasks it takes effect after the task in hand, and no
    task is lost either way. Tasks the UI timer held during a render/bake/composite job run first,
    even while the job goes on: the main thread asked for them (waiting for them in the UI would
    keep the job from ending).

    Raises:
        NotMainThreadError: called from another thread.
        ValueError/TypeError: ``timeout`` is negative, NaN or not a number.
    """
    if _get_ident() != MAIN_THREAD_IDENT:
        raise NotMainThreadError(
            "pump() runs queued tasks, so only the main thread may call it; "
            "from a worker use call_on_main/run_on_main/post_on_main"
        )
    if timeout is not None:
        timeout = _check_timeout(timeout, "pump()")
        if timeout == math.inf:
            timeout = None
    if timeout == 0 and not _sources and not _qsize() and not _held:
        return 0  # the common idle poll: nothing to guard
    guard = GUARD
    guarded = guard.install()
    try:
        deadline = None if timeout is None else monotonic() + timeout
        woken = False
        while True:
            ran = _run_batch(len(_held), None, _held.popleft) if _held else 0
            queued = _qsize()
            # A signal held back ends an outer pump now; a nested one may not be able to deliver it
            # (see _interrupts), so it goes on running tasks, one per batch, lest its caller spin.
            if queued and (guard.deferred is None or not guarded):
                ran += _run_batch(queued, None)
            if _sources:
                ran += _poll_sources()
            if ran or woken or guard.deferred is not None:
                return ran
            if deadline is None:
                wait = None
            else:
                wait = deadline - monotonic()
                if wait <= 0:
                    return 0
            woken = _sleep(wait)
    finally:
        if guarded:
            guard.restore()
        elif guard.deferred is not None:
            guard.deliver_if_safe(sys._getframe(1))


@dispatcher
def run_for(budget: float) -> int:
    """One Blender timer pass that found tasks: run them for at most about ``budget`` seconds.

    Main thread. A task already started is never interrupted, and the next one only starts if a task
    as long as the latest would still end within ``budget``: with tasks of similar length a pass
    stays within the budget, and it never overruns it by more than one task. Whatever is left runs
    in the next pass. Counts the pass in ``stats().ticks`` and its duration in ``last_tick`` and
    ``longest_tick`` (the timer checks for an empty queue itself, so idle passes cost no more).
    """
    global _ticks, _last_tick, _longest_tick
    _ticks += 1
    started = perf_counter()
    deadline = started + budget
    guard = GUARD
    guarded = guard.install()
    try:
        ran = 0
        if _held:  # held during a job that has ended: they are older than anything queued
            ran = _run_batch(len(_held), deadline, _held.popleft)
        if not _held and (not ran or perf_counter() < deadline):
            ran += _run_batch(_qsize(), deadline)
    finally:
        if guarded:
            guard.restore()
    elapsed = _last_tick = perf_counter() - started
    if elapsed > _longest_tick:
        _longest_tick = elapsed
    return ran


def _wait_on_main(future: MainThreadFuture[Any], timeout: float | None) -> None:
    # How the main thread waits on a future (set_main_thread_wait): by running queued tasks, since
    # the task it waits for may be one of them. Short slices notice a cancel() from another thread.
    deadline = None if timeout is None else monotonic() + timeout
    while not future.done():
        if deadline is None:
            pump(0.01)
        else:
            remaining = deadline - monotonic()
            if remaining <= 0:
                return
            pump(min(remaining, 0.01))


set_main_thread_wait(_wait_on_main)


# -- sources: other kinds of main-thread work ---------------------------------------------------
#
# Process results and the asyncio loop's steps also run on the main thread, with no helper thread:
# they plug in here as "sources", objects with
#   fds() -> sequence of file descriptors that turn readable when poll() has work (main thread)
#   due() -> seconds until poll() has work without fd activity (0.0: now), or None
#   busy() -> True while work is in flight (the UI timer then runs every pass)
#   poll(deadline=None) -> int: main thread only; does what is ready without blocking, starting
#       nothing once time.perf_counter() is past ``deadline``; returns how much work completed
#   stop(message) -> None: at the last unregister() and at exit; fails what is pending with
#       SchedulerStopped(message), frees OS resources, never blocks long
# pump() polls them after its queue batch and, when it has to wait, sleeps in poll(2) on their fds
# plus a wake-up socket that submissions write to only while the main thread sleeps there.


class Source(Protocol):
    """What ``add_source`` takes (see above)."""

    def fds(self) -> Sequence[int]: ...
    def due(self) -> float | None: ...
    def busy(self) -> bool: ...
    def poll(self, deadline: float | None = None) -> int: ...
    def stop(self, message: str) -> None: ...


_sources: tuple[Source, ...] = ()  # replaced, never mutated: readers need no lock
_sources_lock = threading.Lock()  # must be held while replacing _sources

# How the main thread sleeps when it has nothing to run, and how others wake it. Submitters and
# wake_main() ring only while ``_main_asleep`` says the main thread sleeps (it is raised before
# the queue is checked a last time, so a task queued at any moment is either seen or rings):
# - with no source, on the doorbell: a lock kept locked; ringing releases it. No syscall unless
#   the main thread really waits on it, the cost of SimpleQueue.get's own wake-up;
# - with sources, in poll(2) on their fds plus a wake socket; ringing writes a byte to it.
_ASLEEP_ON_DOORBELL = 1
_ASLEEP_ON_SOCKET = 2
_main_asleep = 0
_doorbell = allocate_lock()
_doorbell.acquire()
_wake_socks: tuple[socket.socket, socket.socket] | None = None  # (read end, write end), made on first use
# Where poll(2) is missing (Windows), the sleep polls the sources' due times and the queue in
# slices of this length, on the wake socket alone (pipes are not selectable there).
_SLICE_WITHOUT_POLL = 0.01


def add_source(source: Source) -> None:
    """Let the main thread poll ``source`` wherever it runs tasks (see above). Any thread."""
    global _sources
    with _sources_lock:
        if not any(s is source for s in _sources):
            _sources = (*_sources, source)
    wake_main()


def remove_source(source: Source) -> None:
    """Stop polling ``source``; harmless if it is not added. Any thread."""
    global _sources
    with _sources_lock:
        _sources = tuple(s for s in _sources if s is not source)


def wake_main() -> None:
    """Wake the main thread if it sleeps in ``pump()`` waiting for work. Any thread.

    That ``pump()`` then returns (0 if nothing was ready), so a caller looping on it looks at
    its own condition again. Costs one global read when the main thread does not sleep there.
    """
    global _main_asleep
    asleep = _main_asleep
    if not asleep:
        return
    _main_asleep = 0  # one ring wakes it: the threads submitting after this one need not ring
    if asleep == _ASLEEP_ON_DOORBELL:
        try:
            _doorbell.release()
        except RuntimeError:  # rung already, by a thread that read the flag at the same time
            pass
    elif _wake_socks is not None:
        try:
            _wake_socks[1].send(b"\0")
        except OSError:  # full: a wake-up is pending anyway; closed: exiting
            pass


def _wake_socket() -> socket.socket:
    global _wake_socks
    if _wake_socks is None:
        read_end, write_end = socket.socketpair()
        read_end.setblocking(False)
        write_end.setblocking(False)
        _wake_socks = (read_end, write_end)
    return _wake_socks[0]


def _close_wake_socket() -> None:
    global _wake_socks
    socks, _wake_socks = _wake_socks, None  # made again if somebody pumps later (an atexit handler)
    if socks is not None:
        for sock in socks:
            sock.close()


@dispatcher
def _poll_sources(deadline: float | None = None) -> int:
    # Main thread. A source's own failure is a bug of ours: log it, never stop the dispatcher.
    # Sources run no user task directly (done-callbacks aside): a Ctrl-C is held back meanwhile.
    done = 0
    for source in _sources:
        try:
            done += source.poll(deadline)
        except Exception:
            logger.exception("mainthread_tasks: polling %r failed", source)
    return done


def sources_due() -> float | None:
    """The UI timer's question: 0.0 when a source is busy, else the soonest due(), else None."""
    soonest = None
    for source in _sources:
        if source.busy():
            return 0.0
        due = source.due()
        if due is not None and (soonest is None or due < soonest):
            soonest = due
    return soonest


@interruptible
def _sleep(wait: float | None) -> bool:
    """Sleep until a task is queued, a source's fd is readable or due, ``wake_main()`` is called, or
    ``wait`` s have passed. Returns True if something rang (rather than the time running out).

    Main thread, holding no task: Ctrl-C here interrupts at once.
    """
    global _main_asleep
    if not _sources:
        _main_asleep = _ASLEEP_ON_DOORBELL
        try:
            if _qsize():  # queued before the flag went up
                return True
            return _doorbell.acquire(True, -1 if wait is None else wait)
        finally:
            _main_asleep = 0
    wake = _wake_socket()
    fds = [wake.fileno()]
    for source in _sources:
        fds.extend(source.fds())
        due = source.due()
        if due is not None and (wait is None or due < wait):
            wait = max(due, 0.0)
    if _HAVE_POLL:
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
    elif wait is None or wait > _SLICE_WITHOUT_POLL:
        wait = _SLICE_WITHOUT_POLL
    _main_asleep = _ASLEEP_ON_SOCKET
    ready: list[int] = []
    try:
        # Re-checked after raising the flag: a put, or work a source got from another thread
        # (whose wake_main() found the flag down), before it is seen here.
        if _qsize() or _sources_ready():
            return True
        if _HAVE_POLL:
            ready = [fd for fd, _event in poller.poll(None if wait is None else math.ceil(wait * 1000))]
        else:  # pragma: no cover - Windows
            ready = [sock.fileno() for sock in select.select([wake], [], [], wait)[0]]
    finally:
        _main_asleep = 0
    if wake.fileno() in ready:
        _drain_wake_socket()
        return True
    return bool(ready)


_HAVE_POLL = hasattr(select, "poll")


def _sources_ready() -> bool:
    for source in _sources:
        due = source.due()
        if due is not None and due <= 0.0:
            return True
    return False


def _drain_wake_socket() -> None:
    try:
        while _wake_socks[0].recv(4096):  # type: ignore[index]
            pass
    except OSError:  # nothing (more) to read
        pass


def _stop_sources(message: str) -> None:
    global _sources
    with _sources_lock:
        stopping, _sources = _sources, ()
    for source in stopping:
        try:
            source.stop(message)
        except Exception:
            logger.exception("mainthread_tasks: stopping %r failed", source)


# -- lifecycle --------------------------------------------------------------------------------


@dispatcher
def _reject_queued() -> int:
    """Cancel every queued task; return how many. Any thread.

    Futures are cancelled (threads blocked in call_on_main then raise SchedulerStopped); dropped
    post_on_main tasks are logged by name, so nothing disappears silently. On the main thread a
    Ctrl-C cannot land between taking a task and cancelling it (see "Ctrl-C").
    """
    global _cancelled_at_stop
    guarded = GUARD.install()  # on the main thread only
    rejected = 0
    dropped_posts = []
    try:
        for take in (_held.popleft, _get_nowait):  # the held ones first: they are the older
            while True:
                try:
                    future, fn, _args, _kwargs = take()
                except (IndexError, Empty):
                    break
                rejected += 1
                if future is None:
                    dropped_posts.append(fn)
                else:
                    future.cancel()
    finally:
        if rejected:
            with _lifecycle_lock:
                _cancelled_at_stop += rejected
        if guarded:
            GUARD.restore()
    if dropped_posts:
        names = ", ".join(task_name(fn) for fn in dropped_posts[:5])
        more = f" and {len(dropped_posts) - 5} more" if len(dropped_posts) > 5 else ""
        logger.warning(
            "%d post_on_main task(s) dropped unrun because mainthread_tasks stopped: %s%s",
            len(dropped_posts),
            names,
            more,
        )
    return rejected


def acquire() -> int:
    """Count one more user (``register()``) and accept work. Returns the new count."""
    global _users, _stopped
    with _lifecycle_lock:
        if _exiting:
            raise SchedulerStopped(_STOPPED_BY_EXIT)
        _users += 1
        _stopped = None
        return _users


def release() -> int:
    """Count one user less (``unregister()``); the last one stops the scheduler. Idempotent.

    Returns the remaining count. On stop, queued Futures are cancelled, threads blocked in
    ``call_on_main`` get SchedulerStopped and submissions raise SchedulerStopped until the next
    ``acquire()``.
    """
    global _users, _stopped
    with _lifecycle_lock:
        if _users == 0:
            return 0
        _users -= 1
        if _users:
            return _users
        _stopped = _STOPPED_BY_UNREGISTER
    _reject_queued()
    _stop_sources(_STOPPED_BY_UNREGISTER)
    return 0


def shutdown_at_exit() -> None:
    """Stop for good: run by ``threading`` at interpreter exit, before it joins threads.

    Without this, a worker blocked in call_on_main would keep Python's exit waiting for ever.
    """
    global _stopped, _exiting
    with _lifecycle_lock:
        _exiting = True
        _stopped = _STOPPED_BY_EXIT
    _reject_queued()
    _stop_sources(_STOPPED_BY_EXIT)
    _close_wake_socket()


# concurrent.futures.thread registers its own exit hook when it is first imported: one that joins
# every ThreadPoolExecutor's threads (asyncio's default executor's too). Exit hooks run in reverse
# order, so it is imported first: a pool thread blocked in call_on_main must get SchedulerStopped
# from shutdown_at_exit before that join waits for it.
import concurrent.futures.thread  # noqa: E402, F401 - imported for its exit hook's place in the order

try:
    # Runs before threading joins non-daemon threads at exit (unlike ``atexit``, which runs after).
    threading._register_atexit(shutdown_at_exit)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # pragma: no cover - Python < 3.9 or already exiting
    pass
