"""``joined_threads``: start worker threads and join them, draining the queue meanwhile (no bpy)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from time import monotonic

from . import _scheduler
from ._errors import NotMainThreadError, ThreadsStillRunning
from ._threadinfo import is_main_thread

__all__ = ("ThreadScope", "joined_threads")

try:
    # BaseExceptionGroup(...) gives an ExceptionGroup when every failure is an Exception.
    _ExceptionGroup = BaseExceptionGroup  # type: ignore[name-defined]  # Python >= 3.11
except NameError:  # pragma: no cover - Python 3.10 (official Blender 3.x/4.0 builds)

    class _ExceptionGroup(Exception):  # type: ignore[no-redef]
        """Stand-in for the built-in ExceptionGroup: the failures are in ``.exceptions``."""

        def __init__(self, message, exceptions):
            super().__init__(message, tuple(exceptions))
            self.message = message
            self.exceptions = tuple(exceptions)


# How often joining checks its threads. The queue wakes it at once; this only bounds how late it
# notices that a plain threading.Thread (which cannot wake it) has ended.
_JOIN_POLL_SECONDS = 0.002

# Failures of plain threading.Threads started inside an open scope, keyed by thread; collected by
# the scope at exit. Only the main thread installs and removes the hook (scopes are main-only);
# worker threads write here from inside the hook.
_failures_lock = threading.Lock()  # must be held while mutating _plain_failures
_plain_failures: dict[threading.Thread, BaseException] = {}
_open_scopes: list[ThreadScope] = []
_previous_excepthook = None


def _excepthook(args) -> None:
    thread = args.thread
    if thread is not None and args.exc_value is not None:
        for scope in reversed(_open_scopes):
            if scope._owns(thread):
                with _failures_lock:
                    _plain_failures[thread] = args.exc_value
                return
    (_previous_excepthook or threading.__excepthook__)(args)


class ThreadScope:
    """What ``joined_threads()`` yields: start threads with ``.start()``; all are joined at exit."""

    def __init__(self) -> None:
        self._existing = frozenset(threading.enumerate())
        self._started: list[threading.Thread] = []
        self._failures: list[BaseException] = []
        self._lock = threading.Lock()  # must be held while mutating _started/_failures

    def _owns(self, thread: threading.Thread) -> bool:
        return thread not in self._existing

    def start(self, fn, /, *args, **kwargs) -> threading.Thread:
        """Start ``fn(*args, **kwargs)`` in a new thread, joined when the block ends. Any thread.

        Its exception, if any, is re-raised at the end of the block in an ExceptionGroup.

        Raises:
            TypeError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise _scheduler._not_callable(fn)

        def run() -> None:
            try:
                fn(*args, **kwargs)
            except SystemExit:
                pass  # as for any threading.Thread: sys.exit() just ends the thread
            except BaseException as exc:
                with self._lock:
                    self._failures.append(exc)

        with self._lock:
            number = len(self._started) + 1
            thread = threading.Thread(target=run, name=f"{getattr(fn, '__name__', 'worker')}-{number}")
            self._started.append(thread)
        thread.start()
        return thread

    def _alive_threads(self) -> list[threading.Thread]:
        current = threading.current_thread()
        with self._lock:
            started = list(self._started)
        others = [t for t in threading.enumerate() if t not in self._existing and t not in started]
        return [t for t in started + others if t is not current and t.is_alive()]

    def _join(self, timeout: float | None) -> None:
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            alive = self._alive_threads()
            if not alive:
                return
            if deadline is None:
                wait = _JOIN_POLL_SECONDS
            else:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    raise ThreadsStillRunning(alive, timeout)
                wait = min(remaining, _JOIN_POLL_SECONDS)
            # Run the workers' main-thread calls while they finish: they may be blocked on them.
            _scheduler.pump(wait)

    def _collect_failures(self, body_error: BaseException | None) -> list[BaseException]:
        # The block's own error (if any) first, then the workers', as asyncio.TaskGroup reports them.
        with self._lock:
            failures = ([body_error] if body_error is not None else []) + self._failures
        with _failures_lock:
            for thread in [t for t in _plain_failures if self._owns(t)]:
                failures.append(_plain_failures.pop(thread))
        return failures


@contextmanager
def joined_threads(timeout: float | None = None):
    """Join every thread started in the block, running main-thread tasks while waiting. Main thread.

    Yields a ``ThreadScope``; ``scope.start(fn, *args)`` starts a worker. On exit it joins
    every thread started inside the block -- scope ones and plain ``threading.Thread`` ones, daemon
    or not, and threads those threads start -- while it keeps running the queue, so workers
    blocked in ``call_on_main`` make progress even in ``--background`` where Blender timers never
    fire. Then, like ``asyncio.TaskGroup``, the workers' exceptions (and the block's own, if it
    raised one) are raised together as an ``ExceptionGroup``. Start long-lived service threads
    (servers) before the block, or it waits for them.

    Raises:
        NotMainThreadError: entered on another thread.
        ThreadsStillRunning: threads were still alive ``timeout`` seconds after the block ended
            (the ExceptionGroup of failures so far, if any, is its ``__cause__``).
        ExceptionGroup: one or more workers raised.
    """
    global _previous_excepthook
    if not is_main_thread():
        raise NotMainThreadError(
            "joined_threads() runs main-thread tasks while it joins, so it must be used on the main thread"
        )
    if timeout is not None:
        timeout = _scheduler._check_timeout(timeout, "joined_threads()")
    scope = ThreadScope()
    if not _open_scopes:
        _previous_excepthook = threading.excepthook
        threading.excepthook = _excepthook
    _open_scopes.append(scope)
    body_error: BaseException | None = None
    try:
        try:
            yield scope
        except (KeyboardInterrupt, SystemExit):
            raise  # the user wants out: do not wait for threads
        except BaseException as exc:
            body_error = exc
        scope._join(timeout)
    except ThreadsStillRunning as timed_out:
        failures = scope._collect_failures(body_error)
        if failures:
            raise timed_out from _ExceptionGroup("joined_threads: failures before the timeout", failures)
        raise
    finally:
        _open_scopes.remove(scope)
        if not _open_scopes and threading.excepthook is _excepthook:
            threading.excepthook = _previous_excepthook
            _previous_excepthook = None
    failures = scope._collect_failures(body_error)
    if failures:
        count = len(failures)
        raise _ExceptionGroup(f"joined_threads: {count} thread(s) raised" if body_error is None
                              else f"joined_threads: the block and {count - 1} thread(s) raised", failures)
