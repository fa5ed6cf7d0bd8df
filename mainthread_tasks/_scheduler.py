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
import os
import select
import threading
from concurrent.futures import CancelledError
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from time import monotonic, perf_counter

from ._errors import NotMainThreadError, SchedulerStopped
from ._future import FINISHED, RUNNING, MainThreadFuture, waited_future
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

_get_ident = threading.get_ident

_queue: SimpleQueue = SimpleQueue()
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
_running = None  # the task running on the main thread right now

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


def stats() -> Stats:
    """Return a snapshot of the counters. Any thread."""
    pending = _qsize()
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
    )


def reset_stats() -> None:
    """Zero the counters (pending work is untouched). Main thread."""
    global _completed, _failed, _cancelled, _cancelled_at_stop, _ticks, _last_tick, _longest_tick
    global _longest_task, _longest_task_name, _slow_tasks
    with _lifecycle_lock:
        _completed = _failed = _cancelled = _cancelled_at_stop = _ticks = _slow_tasks = 0
        _last_tick = _longest_tick = _longest_task = 0.0
        _longest_task_name = ""


def task_name(fn) -> str:
    """A readable name for a callable, for logs and stats."""
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        module = getattr(fn, "__module__", None)
        return f"{module}.{name}" if isinstance(module, str) else name
    return repr(fn)


def _not_callable(fn) -> TypeError:
    return TypeError(
        f"fn must be callable, got {type(fn).__name__} {fn!r:.80}; "
        "pass a function (mainthread_tasks never evaluates strings of code)"
    )


def _check_timeout(timeout, what: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{what}: timeout must be a number of seconds or None, got {timeout!r}")
    value = float(timeout)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what}: timeout must be >= 0 seconds or None, got {timeout!r}")
    return value


# -- submitting: any thread -------------------------------------------------------------------


def run_on_main(fn, /, *args, **kwargs) -> MainThreadFuture:
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
    future = MainThreadFuture()
    _put((future, fn, args, kwargs or None))
    if _main_asleep:
        wake_main()
    if _stopped is not None:  # stopped between the check and the put: nothing may stay queued
        _reject_queued()
    return future


def post_on_main(fn, /, *args, **kwargs) -> None:
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


def call_on_main(fn, /, *args, **kwargs):
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


def main_thread(fn):
    """Decorator: every call of ``fn``, from any thread, runs on the main thread.

    Same semantics as ``call_on_main`` (inline on the main thread; from a worker it blocks and
    returns the result or re-raises the exception). Keeps ``fn``'s name, docstring and signature.

    Raises:
        TypeError: ``fn`` is not callable (at decoration time).
    """
    if not callable(fn):
        raise _not_callable(fn)

    @functools.wraps(fn)
    def on_main_thread(*args, **kwargs):
        return call_on_main(fn, *args, **kwargs)

    return on_main_thread


# -- running: main thread ---------------------------------------------------------------------


def _run_batch(limit: int, deadline: float | None, first=None) -> int:
    """Run up to ``limit`` tasks: ``first`` if given, then queued ones. Main thread only.

    Returns how many ran (cancelled ones are skipped, not counted). ``limit`` is the queue length
    when the batch started, like asyncio's ``_run_once`` takes ``ntodo = len(self._ready)``: a task
    that queues more work cannot keep one batch going forever. With a ``deadline`` (a perf_counter
    time) no task starts once it has passed, nor when a task as long as the one before it would
    end past it: with tasks of similar length a Blender timer pass stays within its budget and
    leaves the UI time to redraw. A task's exception goes to its Future (or the log, for
    post_on_main) and the batch goes on; KeyboardInterrupt and SystemExit are recorded the same
    way, then re-raised here so that the main thread's own code decides what Ctrl-C or exit means
    (the rest stays queued).

    This is the hot loop, so it reads the clock once per task (a task's time runs from the end of
    the one before, so it includes taking it off the queue: well under a microsecond) and starts
    and finishes Futures inline, lock-free (the protocol is in ``_future``'s module docstring).
    """
    global _completed, _failed, _cancelled, _running
    global _longest_task, _longest_task_name, _slow_tasks
    taken = failed = cancelled = 0  # per-task counting is only for the rare outcomes
    slow = slow_task_seconds
    notable = min(_longest_task, slow)  # a task this long is a new longest or a slow one: look closer
    get_nowait = _get_nowait
    clock = perf_counter
    outer_running = _running  # a task waiting on a future runs a nested batch
    ended = clock()
    try:
        for taken in range(1, limit + 1):
            if first is None:
                try:
                    future, fn, args, kwargs = get_nowait()
                except Empty:
                    taken -= 1
                    break
            else:
                future, fn, args, kwargs = first
                first = None
            if future is None:  # post_on_main
                _running = fn
                try:
                    fn(*args, **kwargs) if kwargs else fn(*args)
                except BaseException as exc:
                    failed += 1
                    logger.error("post_on_main task %s raised", task_name(fn), exc_info=exc)
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    del exc
            else:
                attrs = future.__dict__
                if attrs.setdefault("_state", RUNNING) is not RUNNING:  # start: atomic against cancel()
                    cancelled += 1
                    continue
                _running = fn
                try:
                    result = fn(*args, **kwargs) if kwargs else fn(*args)
                except BaseException as exc:
                    failed += 1
                    future.set_exception(exc)
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    del exc
                else:
                    attrs["_result"] = result  # finish: lock-free unless watched
                    if attrs.setdefault("_sync", None) is None:
                        attrs["_state"] = FINISHED
                    else:
                        future.set_result(result)  # somebody waits: lock and notify
                    del result
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
            if deadline is not None and ended + elapsed > deadline:
                break
    finally:
        _running = outer_running
        _completed += taken - failed - cancelled
        _failed += failed
        _cancelled += cancelled
    return taken - cancelled


def pump(timeout: float | None = 0.0) -> int:
    """Run the queued tasks now, in the calling thread, which must be the main thread.

    If none is queued, first wait up to ``timeout`` seconds (``None``: no limit) for one. Runs the
    tasks that were queued when it started (tasks they queue run at the next call); returns how
    many ran. This is how a ``--background`` script, where Blender timers never fire, gets its
    workers' main-thread calls done (``joined_threads`` calls it for you).

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
            timeout = None  # the same, and lock waits overflow on inf
    queued = _qsize()
    if _sources:
        return _pump_with_sources(queued, timeout)
    if queued:
        return _run_batch(queued, None)
    if timeout == 0:
        return 0
    try:
        first = _queue.get(timeout=timeout)
    except Empty:
        return 0
    return _run_batch(1 + _qsize(), None, first)


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
    ran = _run_batch(_qsize(), started + budget)
    elapsed = _last_tick = perf_counter() - started
    if elapsed > _longest_tick:
        _longest_tick = elapsed
    return ran


def _wait_on_main(future: MainThreadFuture, timeout: float | None) -> None:
    # MainThreadFuture's hook: the main thread waits by running queued tasks, since the task it
    # waits for may be one of them. Short slices notice a cancel() from another thread.
    deadline = None if timeout is None else monotonic() + timeout
    while not future.done():
        if deadline is None:
            pump(0.01)
        else:
            remaining = deadline - monotonic()
            if remaining <= 0:
                return
            pump(min(remaining, 0.01))


MainThreadFuture._wait_on_main = _wait_on_main


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
# plus a wake-up pipe that submissions write to only while the main thread sleeps there.

_sources: tuple = ()  # replaced, never mutated: readers need no lock
_sources_lock = threading.Lock()  # must be held while replacing _sources
_wake_fds: tuple[int, int] | None = None  # (read end, write end), made on first use
_main_asleep = False  # the main thread sleeps in poll(2) and must be woken through the pipe


def add_source(source) -> None:
    """Let the main thread poll ``source`` wherever it runs tasks (see above). Any thread."""
    global _sources
    with _sources_lock:
        if not any(s is source for s in _sources):
            _sources = (*_sources, source)
    wake_main()


def remove_source(source) -> None:
    """Stop polling ``source``; harmless if it is not added. Any thread."""
    global _sources
    with _sources_lock:
        _sources = tuple(s for s in _sources if s is not source)


def wake_main() -> None:
    """Wake the main thread if it sleeps in ``pump()`` waiting for work, so it looks again. Any thread.

    Costs one global read when it does not sleep there.
    """
    if _main_asleep and _wake_fds is not None:
        try:
            os.write(_wake_fds[1], b"\0")
        except (BlockingIOError, OSError):  # full: a wake-up is pending anyway; closed: exiting
            pass


def _wake_pipe() -> tuple[int, int]:
    global _wake_fds
    if _wake_fds is None:
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        _wake_fds = (read_end, write_end)
    return _wake_fds


def _poll_sources(deadline: float | None = None) -> int:
    # Main thread. A source's own failure is a bug of ours: log it, never stop the dispatcher.
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


def _pump_with_sources(queued: int, timeout: float | None) -> int:
    """pump() while sources exist: the queue, then the sources; if neither had work, wait for either."""
    global _main_asleep
    deadline = None if timeout is None else monotonic() + timeout
    while True:
        ran = _run_batch(queued, None) if queued else 0
        ran += _poll_sources()
        if ran:
            return ran
        wait = None if deadline is None else deadline - monotonic()
        if wait is not None and wait <= 0:
            return 0
        fds = [_wake_pipe()[0]]
        for source in _sources:
            fds.extend(source.fds())
            due = source.due()
            if due is not None and (wait is None or due < wait):
                wait = max(due, 0.0)
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        _main_asleep = True
        try:
            if not _qsize():  # re-checked after raising the flag: a put before it is seen here
                poller.poll(None if wait is None else math.ceil(wait * 1000))
        finally:
            _main_asleep = False
            _drain_wake_pipe()
        queued = _qsize()


def _drain_wake_pipe() -> None:
    try:
        while os.read(_wake_fds[0], 4096):  # type: ignore[index]
            pass
    except (BlockingIOError, OSError):
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


def _reject_queued() -> int:
    """Cancel every queued task; return how many. Any thread.

    Futures are cancelled (threads blocked in call_on_main then raise SchedulerStopped); dropped
    post_on_main tasks are logged by name, so nothing disappears silently.
    """
    global _cancelled_at_stop
    rejected = 0
    dropped_posts = []
    while True:
        try:
            future, fn, _args, _kwargs = _get_nowait()
        except Empty:
            break
        rejected += 1
        if future is None:
            dropped_posts.append(fn)
        else:
            future.cancel()
    if rejected:
        with _lifecycle_lock:
            _cancelled_at_stop += rejected
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


try:
    # Runs before threading joins non-daemon threads at exit (unlike ``atexit``, which runs after).
    threading._register_atexit(shutdown_at_exit)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # pragma: no cover - Python < 3.9 or already exiting
    pass
