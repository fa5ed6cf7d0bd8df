"""The main thread's asyncio loop, able to stop one iteration at a deadline (no thread, no bpy).

``MainLoop`` is a ``SelectorEventLoop`` that mainthread_tasks steps one iteration at a time, never
runs for ever (``_async`` does the stepping). What it adds: a ready queue that hands callbacks out
one by one, so an iteration can end at the UI pass's deadline (``_ReadyQueue``), and its own heap of
timers, so it can say when it next has work (``_mt_due``). The asyncio internals this relies on --
``loop._ready``, ``handle._cancelled`` and the order of steps in ``BaseEventLoop._run_once`` -- are
listed, with why, the public fallback and the versions checked, in ``_internals``.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import selectors
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextvars import Context

    from typing_extensions import TypeVarTuple, Unpack  # typing has them from Python 3.11 (Blender 3.4: 3.10)

    _Ts = TypeVarTuple("_Ts")

__all__ = ("CLOSED_BY_ITS_USER", "MainLoop")

#: Why the loop's coroutines end when the loop's user closed it (main_loop().close()): their
#: Futures are cancelled.
CLOSED_BY_ITS_USER = "the main loop was closed"


class LoopOwner(Protocol):
    """What steps the loop (``_async._LoopSource``), as the loop's ``close()`` sees it."""

    def wind_down(self, message: str) -> None: ...
    def closed(self) -> None: ...


class _KeptBack:
    """What ``_ReadyQueue.popleft`` hands the loop instead of a callback it keeps back."""

    _cancelled = True  # BaseEventLoop._run_once skips a cancelled handle before touching anything else


_KEPT_BACK = _KeptBack()


class _ReadyQueue(collections.deque[asyncio.Handle]):
    """asyncio's queue of ready callbacks (``loop._ready``), able to end an iteration at a deadline.

    ``BaseEventLoop._run_once`` runs every callback that is ready when an iteration starts
    (``ntodo = len(self._ready)``, then ``popleft()`` each), however long they take: 100 ready
    coroutines take one iteration, and a UI pass would last all their steps. So between
    ``start(deadline)`` and ``finish()`` (main thread, around the iterations of one poll), once a
    callback as long as the one before it would end past ``deadline`` -- the queue's own rule --
    ``popleft`` hands out a stand-in that the loop skips, and keeps the callback back:
    ``restore()``, after the iteration, puts what it kept back at the front again, in order, for
    the next iteration. The first callback of a poll always runs: the loop always moves. Without
    a deadline it behaves like a deque.

    An I/O callback kept back is one of the handles that ``add_reader``/``add_writer`` made: the
    loop queues that same object every iteration its fd is ready (the selector is level-triggered),
    so the next iteration may queue it again behind its restored copy. It must not run twice:
    ``popleft`` skips a handle that it finds again behind the restored ones.
    """

    __slots__ = ("deadline", "kept", "restored", "again", "cut", "ran", "last")

    def __init__(self) -> None:
        super().__init__()
        self.deadline: float | None = None
        self.kept: list[asyncio.Handle] = []
        self.restored = 0  # how many callbacks at the front were put back by restore()
        self.again: set[int] = set()  # their id()s, to skip a second copy in the same iteration
        self.cut = False  # the current poll has reached its deadline
        self.ran = 0  # callbacks handed out in the current poll
        self.last = 0.0  # perf_counter() when the latest one was handed out

    # The loop takes what it gets for a handle: _KEPT_BACK passes for a cancelled one.
    def popleft(self) -> asyncio.Handle | _KeptBack:  # type: ignore[override]
        handle = super().popleft()
        if self.restored:
            self.restored -= 1
        elif self.again and id(handle) in self.again:
            return _KEPT_BACK  # queued again by the selector behind its restored copy
        deadline = self.deadline
        if deadline is not None:
            now = perf_counter()
            if self.cut or (self.ran and now + (now - self.last) > deadline):
                self.cut = True
                self.kept.append(handle)
                return _KEPT_BACK
            self.last = now
        self.ran += 1
        return handle

    def start(self, deadline: float | None) -> None:
        self.deadline, self.cut, self.ran, self.last = deadline, False, 0, perf_counter()

    def restore(self) -> None:
        """After an iteration: the callbacks kept back go to the front again, in their order."""
        kept = self.kept
        self.restored = len(kept)
        if kept:
            self.again = {id(handle) for handle in kept}
            self.extendleft(reversed(kept))
            kept.clear()
        elif self.again:
            self.again = set()

    def finish(self) -> int:
        """After the poll: how many callbacks ran; the queue behaves like a deque again."""
        self.deadline = None
        return self.ran


class _Timers(list[tuple[float, int, asyncio.TimerHandle]]):
    """The loop's timers, a heap of ``(when, order, handle)`` that ``MainLoop.call_at`` adds to:
    the host sleeps until the next one.

    asyncio keeps its own heap (``loop._scheduled``); this one holds the same handles, so that the
    time to the next timer is read through their public ``when()``/``cancelled()``. Main thread
    (``call_at`` is not thread-safe in asyncio either). A list, for heapq's C calls; ``order``
    breaks ties, so that handles are never compared (their ``==`` compares the callbacks' args).
    """

    __slots__ = ("purge_at", "order")

    _PURGE_MIN = 100

    def __init__(self) -> None:
        super().__init__()
        self.purge_at = self._PURGE_MIN  # more entries: drop the cancelled ones (amortized O(1))
        self.order = itertools.count()

    def purge(self) -> None:
        """Drop the cancelled timers, which would otherwise stay until due (long timeouts)."""
        self[:] = [entry for entry in self if not entry[2].cancelled()]
        heapq.heapify(self)
        self.purge_at = max(self._PURGE_MIN, 2 * len(self))

    def next_when(self) -> float | None:
        while self:
            when, _order, timer = self[0]
            if not timer.cancelled():
                return when
            heapq.heappop(self)
        return None

    def drop_due(self, before: float) -> None:
        """After an iteration that started at loop time ``before``: it took every timer due by then."""
        while self and self[0][0] < before:
            heapq.heappop(self)


class MainLoop(asyncio.SelectorEventLoop):
    """The main thread's event loop (``main_loop()``); stepped by mainthread_tasks, never run by it.

    Use it like any loop inside coroutines (``asyncio.get_running_loop()`` returns it) and for
    ``call_soon_threadsafe`` from threads. Do not ``run_forever``/``run_until_complete`` it
    yourself while mainthread_tasks steps it.
    """

    # The attributes added here start with _mt_: never a name of asyncio's own (see the top).

    def __init__(self, owner: LoopOwner | None = None, selector: selectors.BaseSelector | None = None) -> None:
        super().__init__(selector)
        self._ready: _ReadyQueue = _ReadyQueue()  # private: see the top of the module
        self._mt_owner = owner
        self._mt_timers = _Timers()
        self.set_exception_handler(_quiet_about_given_up_tasks)

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: Unpack[_Ts],
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        # Every timer goes through here: call_later, asyncio.sleep and asyncio.timeout call it.
        timer = super().call_at(when, callback, *args, context=context)
        timers = self._mt_timers
        heapq.heappush(timers, (timer.when(), next(timers.order), timer))
        if len(timers) > timers.purge_at:
            timers.purge()
        return timer

    def close(self) -> None:
        """Close the loop. The main loop first cancels its coroutines and lets their ``finally``
        blocks run, as ``asyncio.run`` does before it closes one (their Futures are cancelled),
        and stops being stepped; the next ``run_async()``/``main_loop()`` makes a new loop. Main
        thread, outside the loop (a running loop raises RuntimeError, as any loop does)."""
        owner = self._mt_owner
        if owner is None or self.is_running() or self.is_closed():
            super().close()
            return
        self._mt_owner = None
        owner.wind_down(CLOSED_BY_ITS_USER)
        super().close()
        owner.closed()

    def _mt_due(self) -> float | None:
        """Seconds until the loop has work without I/O (0.0: now), or None."""
        if self._ready:
            return 0.0
        timers = self._mt_timers
        if not timers:
            return None
        when, _order, timer = timers[0]
        if timer.cancelled():
            next_when = timers.next_when()
            if next_when is None:
                return None
            when = next_when
        return max(0.0, when - self.time())


def _quiet_about_given_up_tasks(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The main loop's exception handler: asyncio's own, less its "Task was destroyed but it is
    pending!" for a task that a stop gave up on and named in its warning (see wind_down)."""
    task = context.get("task")
    if loop.is_closed() and isinstance(task, asyncio.Task) and not task.done():
        return
    loop.default_exception_handler(context)
