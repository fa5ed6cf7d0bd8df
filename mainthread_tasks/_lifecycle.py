"""When the library accepts work: from import, after ``register()``, until the last ``unregister()``
or interpreter exit (no bpy).

The library accepts work from import on (scripts in ``--background`` never call ``register()``);
it stops after the last ``unregister()`` and, for good, when Python exits. Stopping cancels what is
queued (threads blocked in ``call_on_main`` get ``SchedulerStopped``) and stops every source.
"""

from __future__ import annotations

# concurrent.futures.thread registers its own exit hook when it is first imported: one that joins
# every ThreadPoolExecutor's threads (asyncio's default executor's too). Exit hooks run in reverse
# order, so it is imported before this module registers its own (at the bottom): a pool thread
# blocked in call_on_main must get SchedulerStopped from shutdown_at_exit before that join waits.
import concurrent.futures.thread  # noqa: F401 - imported for its exit hook's place in the order
import logging
import threading
from queue import Empty

from . import _queue
from ._args import task_name
from ._errors import SchedulerStopped
from ._interrupts import GUARD, dispatcher
from ._wake import SOURCES, WAKER

__all__ = ("LIFECYCLE", "STOPPED_BY_EXIT", "STOPPED_BY_UNREGISTER", "Lifecycle")

logger = logging.getLogger("mainthread_tasks")

STOPPED_BY_UNREGISTER = (
    "mainthread_tasks is stopped: the last unregister() ran; call mainthread_tasks.register() "
    "(or enable the add-on) to submit work again"
)
STOPPED_BY_EXIT = "mainthread_tasks is stopped: Python is exiting, no more work can run on the main thread"


class Lifecycle:
    """Who uses the library (``register()`` calls), and whether it accepts work. Any thread."""

    __slots__ = ("stopped", "exiting", "users", "cancelled_at_stop", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # must be held while changing the fields below
        #: None while work is accepted, else the message of SchedulerStopped. Read by every submit.
        self.stopped: str | None = None
        self.exiting = False
        self.users = 0
        self.cancelled_at_stop = 0  #: queued tasks cancelled by a stop (stats().cancelled counts them)

    def acquire(self) -> int:
        """Count one more user (``register()``) and accept work. Returns the new count."""
        with self._lock:
            if self.exiting:
                raise SchedulerStopped(STOPPED_BY_EXIT)
            self.users += 1
            self.stopped = None
            return self.users

    def release(self) -> int:
        """Count one user less (``unregister()``); the last one stops the library. Idempotent.

        Returns the remaining count. On stop, queued Futures are cancelled, threads blocked in
        ``call_on_main`` get SchedulerStopped and submissions raise SchedulerStopped until the next
        ``acquire()``.
        """
        with self._lock:
            if self.users == 0:
                return 0
            self.users -= 1
            if self.users:
                return self.users
            self.stopped = STOPPED_BY_UNREGISTER
        self.reject_queued()
        SOURCES.stop(STOPPED_BY_UNREGISTER)
        return 0

    def shutdown_at_exit(self) -> None:
        """Stop for good: run by ``threading`` at interpreter exit, before it joins threads.

        Without this, a worker blocked in call_on_main would keep Python's exit waiting for ever.
        """
        with self._lock:
            self.exiting = True
            self.stopped = STOPPED_BY_EXIT
        self.reject_queued()
        SOURCES.stop(STOPPED_BY_EXIT)
        WAKER.close()

    @dispatcher
    def reject_queued(self) -> int:
        """Cancel every task not started (held or queued); return how many. Any thread.

        Futures are cancelled (threads blocked in call_on_main then raise SchedulerStopped); dropped
        post_on_main tasks are logged by name, so nothing disappears silently. On the main thread a
        Ctrl-C cannot land between taking a task and cancelling it (see ``_interrupts``).
        """
        guarded = GUARD.install()  # on the main thread only
        rejected = 0
        dropped_posts = []
        try:
            for take in (_queue.held.popleft, _queue.get_nowait):  # the held ones first: they are older
                while True:
                    try:
                        future, fn, _args, _kwargs = _queue.take_call(take())
                    except (IndexError, Empty):
                        break
                    rejected += 1
                    if future is None:
                        dropped_posts.append(fn)
                    else:
                        future.cancel()
        finally:
            if rejected:
                with self._lock:
                    self.cancelled_at_stop += rejected
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

    def reset_count(self) -> None:
        """Zero ``cancelled_at_stop`` (``reset_stats()``). Any thread."""
        with self._lock:
            self.cancelled_at_stop = 0

    def reset(self) -> None:
        """For tests, after the last ``unregister()``: back to the state right after import, with
        nothing left over: what is queued cancelled, every source stopped, work accepted. Main thread.
        """
        self.reject_queued()
        SOURCES.stop("the test is over")
        with self._lock:
            self.stopped = None


LIFECYCLE = Lifecycle()

try:
    # Runs before threading joins non-daemon threads at exit (unlike ``atexit``, which runs after).
    threading._register_atexit(LIFECYCLE.shutdown_at_exit)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # pragma: no cover - Python < 3.9 or already exiting
    pass
