"""Coroutines on the main thread: one asyncio loop, stepped wherever the queue runs (no thread, no bpy).

``main_loop()`` makes one ``asyncio`` event loop for the main thread. Nobody runs it for ever:
it is a source (see ``_wake.Source``), stepped one iteration at a time wherever the main thread
runs its work (``_dispatch`` says where), in the UI within the pass's tick budget. One
iteration is what ``loop.run_forever()`` does between two checks of ``stop()``: run the callbacks
that are ready, the I/O that is ready and the timers that are due -- in the UI, only as many as
fit in the pass's budget, like queued tasks (see ``_loop``). To wait, ``pump()`` sleeps in
poll(2) on the loop's selector (an epoll/kqueue fd, readable when any of its sockets is) until
the loop's next timer; where the selector has no such fd (Windows' select()), it looks at the
sockets with a zero-timeout select() in its short sleep slices instead. In the UI the timer polls
no later than that timer, within the idle polling rules. Nothing busy-polls, and the loop is
stepped only when a callback, a timer or I/O is ready.

Like trio's guest mode and blender-cloud's ``async_loop`` it lets asyncio live beside a host
loop; unlike blender-cloud's modal operator it never spins, survives File > New (the timer is
persistent), and runs under ``--background`` and in the ``bpy`` module too.
"""

# The asyncio internals this module relies on -- ``loop._ready``, ``handle._cancelled`` and the
# order of steps in ``BaseEventLoop._run_once`` -- are listed, with why, the public fallback and the
# versions checked, in ``_internals`` (checked in every tier by tests/test_internals.py).

from __future__ import annotations

import asyncio
import inspect
import logging
import select
import selectors
import sys
import threading
from collections.abc import Coroutine
from concurrent.futures import CancelledError, Future, InvalidStateError
from time import perf_counter
from typing import Any, TypeVar

from . import _dispatch
from ._errors import SchedulerStopped
from ._future import MAKE_DICT_AT_BIRTH, MainThreadFuture
from ._lifecycle import LIFECYCLE
from ._loop import CLOSED_BY_ITS_USER, MainLoop
from ._threadinfo import is_main_thread
from ._wake import add_source, remove_source, wake_main

__all__ = ("AsyncFuture", "main_loop", "run_async")

logger = logging.getLogger("mainthread_tasks")

#: How long stop() lets cancelled coroutines run their ``finally`` blocks before closing the loop.
STOP_GRACE_SECONDS = 1.0

_T = TypeVar("_T")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The loop running in this thread, if any (asyncio.get_running_loop without the error)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class AsyncFuture(MainThreadFuture[_T]):
    """The ``concurrent.futures.Future`` of a coroutine started with ``run_async``.

    Any thread may wait on it or cancel it; ``cancel()`` cancels the coroutine (its ``finally``
    blocks run on the main thread). It stays pending until the coroutine ends. On the main thread
    ``result()``/``exception()`` step the loop (and run queued tasks) while they wait.
    """

    _runs_on_main = False  # the coroutine is not up the stack of a main-thread wait...

    def _wait(self, timeout: float | None) -> None:
        source = _source
        if not self.done() and source is not None and source.loop.is_running() and is_main_thread():
            # ...unless the wait is itself inside a coroutine: the loop cannot be stepped from there.
            raise RuntimeError(
                "waiting with result() inside a coroutine would block the loop that runs it: "
                "use `await asyncio.wrap_future(future)` instead"
            )
        super()._wait(timeout)


class _LoopSource:
    """The loop as a source of main-thread work (the interface is ``_wake.Source``)."""

    def __init__(self) -> None:
        selector = selectors.DefaultSelector()
        self.loop = MainLoop(self, selector)
        # futures whose coroutine has no task yet
        self.starting: dict[AsyncFuture[Any], Coroutine[Any, Any, Any]] = {}
        self.tasks: dict[asyncio.Task[Any], AsyncFuture[Any]] = {}  # main thread only
        self.stopping: str | None = None
        self._selector = selector
        # epoll/kqueue: an fd that is readable when any registered fd is; select()-based: none.
        fileno = getattr(selector, "fileno", None)
        try:
            self._fds: list[int] = [fileno()] if fileno is not None else []
        except (NotImplementedError, ValueError):
            self._fds = []
        self._ready_check = None
        if self._fds and sys.platform != "win32":
            self._ready_check = select.poll()
            self._ready_check.register(self._fds[0], select.POLLIN)

    # -- the source interface ---------------------------------------------------------------------

    def fds(self) -> list[int]:
        return self._fds

    def _io_ready(self) -> bool:
        """Whether a socket of the loop has an event: poll(2) on the selector's own fd or, where
        it has none (Windows' select()), the selector itself with no timeout; select() is
        level-triggered, so the loop's next step sees the same events."""
        check = self._ready_check
        if check is not None:
            return bool(check.poll(0))
        if self._fds or self.loop.is_closed() or not self._selector.get_map():
            return False
        return bool(self._selector.select(0))

    def due(self) -> float | None:
        loop = self.loop
        if loop.is_closed():
            return None
        if self.stopping is not None:  # a stop left for the main thread to finish (see stop)
            return None if loop.is_running() else 0.0
        due = loop._mt_due()
        if due == 0.0 or self._io_ready():
            return 0.0
        return due

    def busy(self) -> bool:
        loop = self.loop
        return bool(loop._ready) and not loop.is_closed()

    def poll(self, deadline: float | None = None) -> int:
        """Run loop iterations while work is ready: one without a deadline; with one, as many as fit
        before it, the last one ended early if need be (see _loop._ReadyQueue). Returns the callbacks run.
        Finishes a stop that was asked for inside the loop's step (see ``stop``)."""
        loop = self.loop
        if loop.is_running() or loop.is_closed() or self.due() != 0.0 or _running_loop() is not None:
            return 0  # nothing to do, or a coroutine (of this loop or another) is on this very stack
        if self.stopping is not None:  # a stop left for the main thread (see stop)
            loop.close()
            return 0
        ready = loop._ready
        ready.start(deadline)
        try:
            while True:
                self._step()
                if self.stopping is not None or deadline is None or ready.cut or perf_counter() >= deadline:
                    break
                if self.due() != 0.0:
                    break
        finally:
            ran = ready.finish()
        if self.stopping is not None:  # stopped by the step itself: finish now that it has ended
            loop.close()
        return ran

    def _step(self) -> None:
        loop = self.loop
        started = perf_counter()
        timers = loop._mt_timers
        before = loop.time() if timers else 0.0
        try:
            loop.stop()  # run_forever then runs exactly one iteration, without waiting (timeout 0)
            loop.run_forever()
            if timers and timers[0][0] < before:
                timers.drop_due(before)
        finally:
            loop._ready.restore()
        elapsed = perf_counter() - started
        if elapsed >= _dispatch.slow_task_seconds:
            logger.warning(
                "coroutine steps blocked the main thread for %.3f s (tasks: %s); await more often, "
                "or do slow work with run_in_process or loop.run_in_executor",
                elapsed,
                ", ".join(sorted(task.get_name() for task in self.tasks)[:5]) or "-",
            )

    def stop(self, message: str) -> None:
        """Cancel every coroutine, let their ``finally`` blocks run, close the loop.

        Only the main thread may touch the loop's tasks, and not inside the loop's own step (a
        coroutine or a done-callback called the last ``unregister()``): there, and in another
        thread, the source goes back among the scheduler's sources, and the main thread does the
        stop as soon as that step ends (``poll``), else at its next poll, at exit at the latest.
        """
        if self.stopping is None:
            self.stopping = message
        for future, coro in list(self.starting.items()):  # never started: close, not "never awaited"
            self.starting.pop(future, None)
            coro.close()
            self._fail(future)
        loop = self.loop
        if loop.is_closed():
            return
        if is_main_thread() and not loop.is_running():
            loop.close()  # MainLoop.close: wind_down(), then closed()
        else:
            add_source(self)

    def wind_down(self, message: str) -> None:
        """Main thread, the loop not running: cancel every task of the loop, as ``asyncio.run``
        does, and step it while their ``finally`` blocks run; what is left is given up on."""
        if self.stopping is None:
            self.stopping = message
        loop = self.loop
        for task in asyncio.all_tasks(loop):  # the coroutines' own tasks too
            task.cancel()
        deadline = perf_counter() + STOP_GRACE_SECONDS
        while asyncio.all_tasks(loop) and perf_counter() < deadline:
            if loop._mt_due() is None and not self._io_ready():
                break  # cancelled coroutines that wait on nothing that can wake them
            self._step()
        for task in asyncio.all_tasks(loop):  # refused to stop: say so, and keep asyncio quiet at exit
            # (asyncio's "Task was destroyed but it is pending!" for it: see _quiet_about_given_up_tasks)
            logger.warning("mainthread_tasks: coroutine %s did not finish after being cancelled", task.get_name())
            future = self.tasks.pop(task, None)
            if future is not None:
                self._fail(future)
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:
            logger.exception("mainthread_tasks: closing asynchronous generators failed")

    def closed(self) -> None:
        """After the loop closed: no longer a source; what a thread queued to start meanwhile fails."""
        remove_source(self)
        # run_async from another thread before close(): its start() was queued and dropped with
        # the loop (after close() call_soon_threadsafe raises instead, and run_async says so).
        for future, coro in list(self.starting.items()):
            self.starting.pop(future, None)
            coro.close()
            self._fail(future)

    def _fail(self, future: Future[Any]) -> None:
        """The Future of a coroutine that the end of its loop cut short."""
        if self.stopping == CLOSED_BY_ITS_USER:
            future.cancel()
            return
        try:
            future.set_exception(SchedulerStopped(self.stopping or "mainthread_tasks is stopped"))
        except InvalidStateError:  # done already
            pass

    # -- starting coroutines ------------------------------------------------------------------------

    def start(self, coro: Coroutine[Any, Any, Any], future: AsyncFuture[Any]) -> None:
        """Main thread: make the coroutine a task of the loop, linked both ways with ``future``."""
        if self.starting.pop(future, None) is None:
            return  # already stopped
        if future.cancelled() or self.stopping is not None:
            coro.close()
            self._fail(future)
            return
        # The Future stays PENDING until the coroutine ends, so that cancel() keeps working.
        task = self.loop.create_task(coro)
        self.tasks[task] = future
        task.add_done_callback(self._task_done)

        def cancel_task(done: Future[Any]) -> None:
            if done.cancelled():
                self._cancel_soon(task)

        future.add_done_callback(cancel_task)

    def _cancel_soon(self, task: asyncio.Task[Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(task.cancel)
        except RuntimeError:  # the loop is closed: its tasks went with it
            pass

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        future = self.tasks.pop(task, None)
        if future is None or future.done():
            return
        if task.cancelled():
            if self.stopping is not None:
                self._fail(future)
            else:  # cancelled from inside the loop, not through the Future
                future.set_exception(CancelledError())
            return
        exc = task.exception()
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(task.result())


# -- the public calls -------------------------------------------------------------------------------

_source: _LoopSource | None = None
_source_lock = threading.Lock()  # must be held while making _source


def _loop_source() -> _LoopSource:
    global _source
    source = _source
    if source is None or source.stopping is not None or source.loop.is_closed():
        with _source_lock:
            source = _source
            if source is None or source.stopping is not None or source.loop.is_closed():
                if LIFECYCLE.stopped is not None:
                    raise SchedulerStopped(LIFECYCLE.stopped)
                source = _source = _LoopSource()
                add_source(source)
    return source


def main_loop() -> asyncio.AbstractEventLoop:
    """The asyncio event loop of the main thread, made on first use. Any thread.

    Coroutines run on it with ``run_async``; inside them ``asyncio.get_running_loop()`` is this
    loop. Threads may ``call_soon_threadsafe`` on it. It is stepped wherever the main thread runs
    queued tasks (the add-on's timer in the UI, ``pump()`` and what calls it elsewhere); the last
    ``unregister()`` or the end of Python cancels its coroutines and closes it, as ``close()`` does
    (the next call makes a new one).

    Raises:
        SchedulerStopped: after the last ``unregister()``, or while Python exits.
    """
    return _loop_source().loop


def run_async(coro: Coroutine[Any, Any, _T]) -> AsyncFuture[_T]:
    """Run the coroutine ``coro`` on the main thread's loop; return its Future. Any thread.

    Between its ``await`` expressions the coroutine runs on the main thread, so it may call ``bpy``
    directly. ``await asyncio.sleep()``, streams, ``asyncio.wrap_future(run_in_process(...))`` and
    ``loop.run_in_executor`` work. The Future is a ``concurrent.futures.Future``: its result is the
    coroutine's; ``cancel()`` cancels the coroutine (its ``finally`` blocks run); at the last
    ``unregister()`` or at exit the coroutine is cancelled and waiters get SchedulerStopped.

    Raises:
        TypeError: ``coro`` is not a coroutine object (pass ``work()``, not ``work``).
        SchedulerStopped: after the last ``unregister()``, or while Python exits.
    """
    if not asyncio.iscoroutine(coro):
        hint = " (call it: pass work(), not work)" if inspect.iscoroutinefunction(coro) else ""
        raise TypeError(f"run_async() needs a coroutine object, got {type(coro).__name__}{hint}")
    future: AsyncFuture[_T] = AsyncFuture()
    if MAKE_DICT_AT_BIRTH:  # made by its creator, before anybody else sees it (_future.MADE_BY_ITS_CREATOR)
        future.__dict__  # noqa: B018
    while True:
        try:
            source = _loop_source()
        except BaseException:
            coro.close()  # never to run: no "coroutine was never awaited" warning
            raise
        source.starting[future] = coro
        if is_main_thread() and not source.loop.is_running():
            source.start(coro, future)
            return future
        try:
            source.loop.call_soon_threadsafe(source.start, coro, future)
        except RuntimeError:  # closed meanwhile: the next loop takes it, unless the stop already failed it
            if source.starting.pop(future, None) is None:
                return future
            continue
        wake_main()
        return future
