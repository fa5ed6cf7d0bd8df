"""Running queued tasks on the main thread: ``pump``, the UI timer's ``run_for``, and how the main
thread waits on a future (no bpy). Main thread only.

What runs the main thread's work -- queued tasks, process results, coroutine steps -- is said here
once (the rest of the package points here): in Blender's UI the add-on's timer (``run_for``);
elsewhere (``--background``, the ``bpy`` module, plain Python) ``pump()`` and what calls it:
``joined_threads()`` at the end of its block, ``run_forever()``, and ``result()``/``exception()``
of a Future on the main thread. Only the main thread takes tasks off the queue (``_queue``), so
the counters below are only ever written there. A task's exception goes to its Future (or the log, for
``post_on_main``); a Ctrl-C is handled by the guard in ``_interrupts``.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from collections.abc import Callable
from queue import Empty
from time import monotonic, perf_counter
from typing import Any

from . import _queue
from ._args import check_timeout, task_name
from ._errors import NotMainThreadError
from ._future import FINISHED, RUNNING, MainThreadFuture, set_main_thread_wait
from ._interrupts import GUARD, dispatcher, task_runner
from ._queue import Item
from ._threadinfo import MAIN_THREAD_IDENT
from ._wake import SOURCES, WAKER

__all__ = ("COUNTERS", "Counters", "pump", "run_for")

logger = logging.getLogger("mainthread_tasks")

#: A task slower than this is logged (with its name) as having blocked the main thread.
slow_task_seconds = 1.0

_get_ident = threading.get_ident
_get_nowait = _queue.get_nowait
_qsize = _queue.qsize
_held = _queue.held


class Counters:
    """What the main thread ran, for ``stats()``. Written on the main thread only."""

    __slots__ = (
        "completed",
        "failed",
        "cancelled",
        "running",
        "ticks",
        "last_tick",
        "longest_tick",
        "longest_task",
        "longest_task_name",
        "slow_tasks",
    )
    completed: int
    failed: int
    cancelled: int
    ticks: int
    last_tick: float
    longest_tick: float
    longest_task: float
    longest_task_name: str
    slow_tasks: int

    def __init__(self) -> None:
        self.running: Callable[..., Any] | None = None  #: the task running on the main thread now
        self.reset()

    def reset(self) -> None:
        """Zero the counts and times (``reset_stats()``); ``running`` is left alone."""
        self.completed = self.failed = self.cancelled = 0  # tasks: ran and returned / raised / skipped
        self.ticks = 0  # Blender timer passes that found tasks
        self.last_tick = self.longest_tick = 0.0  # time such passes spent running tasks
        self.longest_task = 0.0
        self.longest_task_name = ""
        self.slow_tasks = 0  # tasks longer than slow_task_seconds (each one is logged)


COUNTERS = Counters()


@task_runner
def run_batch(limit: int, deadline: float | None, take: Callable[[], Item] | None = None) -> int:
    """Run up to ``limit`` queued tasks. Main thread only, with the Ctrl-C guard installed.

    ``take`` takes the next item off another queue than the main one (the tasks held during a
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
    counters = COUNTERS
    taken = failed = cancelled = 0  # per-task counting is only for the rare outcomes
    slow = slow_task_seconds
    notable = min(counters.longest_task, slow)  # a task this long is a new longest or a slow one: look closer
    get_nowait = _get_nowait if take is None else take
    clock = perf_counter
    guard = GUARD
    outer_running = counters.running  # a task waiting on a future runs a nested batch
    item: Any = None
    future: MainThreadFuture[Any] | None = None
    fn = args = kwargs = result = None
    attrs: Any = None  # the future's __dict__
    ended = clock()
    try:
        for taken in range(1, limit + 1):
            try:
                item = get_nowait()
            except (Empty, IndexError):  # IndexError: a deque given as ``take``
                taken -= 1
                break
            if item.__class__ is tuple:  # post_on_main's (fn, args, kwargs)
                future = None
                fn, args, kwargs = item
            else:  # a future that carries its call (_queue.take_call, inlined)
                future = item
                attrs = future.__dict__
                fn = attrs.pop("_fn")
                args = attrs.pop("_args")
                kwargs = attrs.pop("_kwargs", None)
                if attrs.setdefault("_state", RUNNING) is not RUNNING:  # start: atomic against cancel()
                    cancelled += 1
                    continue
            counters.running = fn
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
                if elapsed > counters.longest_task:  # not notable's: a nested batch may have raised it
                    counters.longest_task, counters.longest_task_name = elapsed, task_name(fn)
                if elapsed >= slow:
                    counters.slow_tasks += 1
                    logger.warning(
                        "task %s blocked the main thread for %.3f s; do slow work in a worker thread",
                        task_name(fn),
                        elapsed,
                    )
                notable = min(counters.longest_task, slow)
            if guard.deferred is not None or (deadline is not None and ended + elapsed > deadline):
                break
    finally:
        # The state first: nothing here runs Python code, so no signal can land before it is
        # restored. Then the references: their decrefs may run __del__s and weakref callbacks.
        counters.running = outer_running
        counters.completed += taken - failed - cancelled
        counters.failed += failed
        counters.cancelled += cancelled
        item = future = fn = args = kwargs = attrs = result = None
    return taken - cancelled


@dispatcher
def pump(timeout: float | None = 0.0) -> int:
    """Run the queued tasks now, in the calling thread, which must be the main thread.

    If nothing is ready, first wait up to ``timeout`` seconds (``None``: no limit) for a task, a
    process result or a coroutine ready to run. Runs the tasks that were queued when it started
    (tasks they queue run at the next call); returns how many ran. Process results and asyncio
    steps that are ready are delivered too, and count. This is how a ``--background`` script, where
    Blender timers never fire, gets its workers' main-thread calls done; ``joined_threads()``,
    ``run_forever()`` and ``result()`` on the main thread call it for you. Ctrl-C interrupts the
    task running or the wait; landing between tasks it takes effect after the task in hand, and no
    task is lost either way. Tasks the UI timer held during a
    render/bake/composite job run first, even while the job goes on: the main thread asked for them
    (waiting for them in the UI would keep the job from ending).

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
        timeout = check_timeout(timeout, "pump()")
        if timeout == math.inf:
            timeout = None
    if timeout == 0 and not SOURCES.all and not _qsize() and not _held:
        return 0  # the common idle poll: nothing to guard
    guard = GUARD
    guarded = guard.install()
    try:
        deadline = None if timeout is None else monotonic() + timeout
        woken = False
        while True:
            ran = run_batch(len(_held), None, _held.popleft) if _held else 0
            queued = _qsize()
            # A signal held back ends an outer pump now; a nested one may not be able to deliver it
            # (see _interrupts), so it goes on running tasks, one per batch, lest its caller spin.
            if queued and (guard.deferred is None or not guarded):
                ran += run_batch(queued, None)
            if SOURCES.all:
                ran += SOURCES.poll()
            if ran or woken or guard.deferred is not None:
                return ran
            if deadline is None:
                wait = None
            else:
                wait = deadline - monotonic()
                if wait <= 0:
                    return 0
            woken = WAKER.sleep(wait)
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
    counters = COUNTERS
    counters.ticks += 1
    started = perf_counter()
    deadline = started + budget
    guard = GUARD
    guarded = guard.install()
    try:
        ran = 0
        if _held:  # held during a job that has ended: they are older than anything queued
            ran = run_batch(len(_held), deadline, _held.popleft)
        if not _held and (not ran or perf_counter() < deadline):
            ran += run_batch(_qsize(), deadline)
    finally:
        if guarded:
            guard.restore()
    elapsed = counters.last_tick = perf_counter() - started
    if elapsed > counters.longest_tick:
        counters.longest_tick = elapsed
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
