"""The exceptions raised by mainthread_tasks (no bpy, no state)."""

from __future__ import annotations

__all__ = (
    "MainThreadTasksError",
    "SchedulerStopped",
    "NotMainThreadError",
    "ThreadsStillRunning",
)


class MainThreadTasksError(Exception):
    """Base class of every error raised by mainthread_tasks."""


class SchedulerStopped(MainThreadTasksError, RuntimeError):
    """The scheduler is not accepting work: the last ``unregister()`` ran, or Python is exiting.

    Raised by submissions made while stopped, and in threads that were blocked in
    ``call_on_main`` when it stopped. Call ``register()`` to accept work again.
    """


class NotMainThreadError(MainThreadTasksError, RuntimeError):
    """A main-thread-only function (``pump``, ``joined_threads``) was called from another thread.

    Worker threads submit work with ``run_on_main``/``call_on_main``/``post_on_main``; only the
    main thread runs it.
    """


class ThreadsStillRunning(MainThreadTasksError, TimeoutError):
    """``joined_threads`` reached its timeout with threads still alive.

    ``threads`` holds the ``threading.Thread`` objects that were still running.
    """

    def __init__(self, threads, timeout):
        self.threads = tuple(threads)
        self.timeout = timeout
        names = ", ".join(repr(t.name) for t in self.threads)
        super().__init__(
            f"{len(self.threads)} thread(s) still running after {timeout:g} s: {names}; "
            "make them finish (or pass a longer timeout) before the block ends"
        )
