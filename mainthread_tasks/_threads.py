"""``joined_threads``: start worker threads and join them, draining the queue meanwhile (no bpy).

Which threads a block owns -- the rule its docstring states -- is decided by lineage, recorded
when a thread starts: while a block is open, ``threading.Thread.start`` notes which open block the
starting thread works for (the main thread works for the innermost open block; a thread the block
owns works for that block; any other thread for none). So a block owns what the code inside it
started, however deep, and nothing that threads from before the block start (a server's
per-connection threads, say). Two kinds of threads are never waited for, as they never end on
their own: threads Python did not start (``_DummyThread``: C callbacks, ``_thread`` threads), and
idle workers of a ``concurrent.futures.ThreadPoolExecutor`` (also behind asyncio's default
executor), which belong to their executor. The work given to such an executor inside the block is
the block's, whichever worker runs it: while blocks are open ``ThreadPoolExecutor.submit`` notes
the Futures it returns the same way, and the block waits for them.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import thread as _pool_module
from contextlib import contextmanager
from time import monotonic
from types import FrameType
from typing import Any, ParamSpec

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

        def __init__(self, message: str, exceptions: Sequence[BaseException]) -> None:
            super().__init__(message, tuple(exceptions))
            self.message = message
            self.exceptions = tuple(exceptions)


# How often joining checks its threads. The queue wakes it at once; this only bounds how late it
# notices that a plain threading.Thread (which cannot wake it) has ended.
_JOIN_POLL_SECONDS = 0.002

# The block each thread started while blocks were open works for (see the module docstring).
# Written by any thread as it starts one (single dict operations, atomic under the GIL).
_owners: weakref.WeakKeyDictionary[threading.Thread, ThreadScope] = weakref.WeakKeyDictionary()
# The open blocks, innermost last. Only the main thread changes it (blocks are main-thread only).
_open_scopes: list[ThreadScope] = []
_P = ParamSpec("_P")

# What the hooks below stand in for while blocks are open. Main thread only.
_previous_excepthook: Callable[[threading.ExceptHookArgs], object] | None = None
_original_start: Callable[[threading.Thread], None] | None = None
_original_submit: Callable[..., Future[Any]] | None = None
_hook_state = threading.local()  # .active: this thread is inside _excepthook (a chain came back)


def unowned(thread: threading.Thread) -> threading.Thread:
    """Mark ``thread``, not started yet, as the library's own: no block owns it or waits for it
    (the progress printer, which may outlive the block that started it). Any thread."""
    _owners[thread] = None  # type: ignore[assignment]  # present, so _recording_start records nothing
    return thread


def _owner_for_new_thread() -> ThreadScope | None:
    current = threading.current_thread()
    if current is threading.main_thread():
        return _open_scopes[-1] if _open_scopes else None
    scope = _owners.get(current)
    return scope if scope is not None and not scope._closed else None


def _recording_start(self: threading.Thread) -> None:
    # Stands in for threading.Thread.start while blocks are open: note the new thread's block.
    if self not in _owners:
        scope = _owner_for_new_thread()
        if scope is not None:
            _owners[self] = scope
    _original_start(self)  # type: ignore[misc]


def _recording_submit(
    self: _pool_module.ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> Future[Any]:
    # Stands in for ThreadPoolExecutor.submit while blocks are open: the work is the block's.
    future = _original_submit(self, fn, *args, **kwargs)  # type: ignore[misc]
    scope = _owner_for_new_thread()
    if scope is not None:
        scope._record_work(future)
    return future


def _excepthook(args: threading.ExceptHookArgs) -> None:
    # Stands in for threading.excepthook while blocks are open: a thread's failure goes to the
    # block that owns it, if that block is still collecting; anything else goes on to the hook we
    # replaced. Never to ourselves: another library's hook installed over ours may chain back here.
    if getattr(_hook_state, "active", False):
        threading.__excepthook__(args)
        return
    _hook_state.active = True
    try:
        if args.exc_type is SystemExit:
            return  # as threading does: sys.exit() just ends the thread
        scope = _owners.get(args.thread) if args.thread is not None else None
        if scope is not None and args.exc_value is not None and scope._record(args.exc_value):
            return
        _report(args)
    finally:
        _hook_state.active = False


def _report(args: threading.ExceptHookArgs) -> None:
    previous = _previous_excepthook
    if previous is None or previous is _excepthook:
        threading.__excepthook__(args)
    else:
        previous(args)


def _install_hooks() -> None:
    global _previous_excepthook, _original_start, _original_submit
    if threading.excepthook is not _excepthook:
        _previous_excepthook = threading.excepthook
        threading.excepthook = _excepthook
    if threading.Thread.start is not _recording_start:
        _original_start = threading.Thread.start
        threading.Thread.start = _recording_start  # type: ignore[method-assign]
    pool = _pool_module.ThreadPoolExecutor
    if pool.submit is not _recording_submit:
        _original_submit = pool.submit
        pool.submit = _recording_submit  # type: ignore[assignment,method-assign]  # same call, recorded


def _remove_hooks() -> None:
    # Only where ours is still the one installed. If another library installed its own over ours,
    # ours stays in its chain and, with no block open, passes everything on.
    global _previous_excepthook, _original_start, _original_submit
    if threading.excepthook is _excepthook:
        threading.excepthook = _previous_excepthook  # type: ignore[assignment]  # what _install_hooks found
        _previous_excepthook = None
    if threading.Thread.start is _recording_start:
        threading.Thread.start = _original_start  # type: ignore[assignment,method-assign]  # as found
        _original_start = None
    pool = _pool_module.ThreadPoolExecutor
    if pool.submit is _recording_submit:
        pool.submit = _original_submit  # type: ignore[assignment,method-assign]  # as found
        _original_submit = None


def _idle_pool_worker(thread: threading.Thread, frames: dict[int, FrameType]) -> bool:
    """True for a ThreadPoolExecutor worker waiting for work: it belongs to its executor."""
    if thread not in getattr(_pool_module, "_threads_queues", ()):
        return False
    frame = frames.get(thread.ident) if thread.ident is not None else None
    if frame is None or frame.f_code.co_name != "_worker" or frame.f_globals.get("__name__") != _pool_module.__name__:
        return False  # running a work item (its frame is deeper), or not started yet
    return frame.f_locals.get("work_item") is None  # none in hand: blocked on the work queue


def _busy_pool_workers() -> list[threading.Thread]:
    frames = sys._current_frames()
    return [
        t
        for t in list(getattr(_pool_module, "_threads_queues", ()))
        if t.is_alive() and not _idle_pool_worker(t, frames)
    ]


class ThreadScope:
    """What ``joined_threads()`` yields: start threads with ``.start()``; all are joined at exit."""

    def __init__(self) -> None:
        self._started: list[threading.Thread] = []
        self._work: list[Future[Any]] = []  # Futures of ThreadPoolExecutor work submitted for this block
        self._failures: list[tuple[BaseException, threading.Thread | None]] = []
        self._closed = False  # no longer collecting failures: they go to the excepthook
        self._lock = threading.Lock()  # must be held while mutating _started/_failures/_closed

    def start(self, fn: Callable[_P, object], /, *args: _P.args, **kwargs: _P.kwargs) -> threading.Thread:
        """Start ``fn(*args, **kwargs)`` in a new thread, joined when the block ends. Any thread.

        Its exception, if any, is re-raised at the end of the block in an ExceptionGroup; once the
        block has ended (it timed out, or was left by Ctrl-C) it goes to ``threading.excepthook``.

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
                if not self._record(exc, threading.current_thread()):
                    raise  # the block is over: threading.excepthook reports it

        with self._lock:
            number = len(self._started) + 1
            thread = threading.Thread(target=run, name=f"{getattr(fn, '__name__', 'worker')}-{number}")
            self._started.append(thread)
        _owners[thread] = self
        thread.start()
        return thread

    def _record(self, exc: BaseException, thread: threading.Thread | None = None) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._failures.append((exc, thread))
            return True

    def _record_work(self, future: Future[Any]) -> None:
        with self._lock:
            self._work = [f for f in self._work if not f.done()]  # keep it short
            self._work.append(future)

    def _work_pending(self) -> bool:
        with self._lock:
            return any(not f.done() for f in self._work)

    def _close(self) -> list[BaseException]:
        """Stop collecting; return the failures collected. Each failure is handed out once."""
        with self._lock:
            self._closed = True
            failures, self._failures = self._failures, []
        return [exc for exc, _thread in failures]

    def _abandon(self) -> None:
        """The block ends without raising its threads' failures (Ctrl-C): report them instead."""
        with self._lock:
            self._closed = True
            failures, self._failures = self._failures, []
        for exc, thread in failures:
            _report(threading.ExceptHookArgs([type(exc), exc, exc.__traceback__, thread]))

    def _alive_threads(self) -> list[threading.Thread]:
        current = threading.current_thread()
        with self._lock:
            started = list(self._started)
        owned = [t for t in threading.enumerate() if _owners.get(t) is self and t not in started]
        alive = [t for t in started + owned if t is not current and t.is_alive()]
        if any(t not in started for t in alive):
            frames = sys._current_frames()
            alive = [t for t in alive if t in started or not _idle_pool_worker(t, frames)]
        return alive

    def _join(self, timeout: float | None) -> None:
        deadline = None if timeout is None else monotonic() + timeout
        drained = False
        while True:
            alive = self._alive_threads()
            if not alive and not self._work_pending():
                if drained:
                    return
                # What the threads queued just before they ended (a post_on_main as their last
                # step) runs before the block ends. Once: work that others keep queueing cannot
                # hold the block open. A task run here may start threads: they are joined too.
                drained = True
                _scheduler.pump(0.0)
                continue
            drained = False
            if deadline is None or timeout is None:
                wait = _JOIN_POLL_SECONDS
            else:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    if self._work_pending():  # name the pool threads running the block's work too
                        alive += [t for t in _busy_pool_workers() if t not in alive]
                    raise ThreadsStillRunning(alive, timeout)
                wait = min(remaining, _JOIN_POLL_SECONDS)
            # Run the workers' main-thread calls while they finish: they may be blocked on them.
            _scheduler.pump(wait)


@contextmanager
def joined_threads(timeout: float | None = None) -> Iterator[ThreadScope]:
    """Join every thread started in the block, running main-thread tasks while waiting. Main thread.

    Yields a ``ThreadScope``; ``scope.start(fn, *args)`` starts a worker. On exit it joins
    the threads the block owns while it keeps running the queue, so workers blocked in
    ``call_on_main`` make progress even in ``--background`` where Blender timers never fire, and
    what they queued before they ended has run when the block ends. Then,
    like ``asyncio.TaskGroup``, the workers' exceptions (and the block's own, if it raised one) are
    raised together as an ``ExceptionGroup``; ``sys.exit()`` in a worker just ends that thread.

    The block owns: threads from ``scope.start``, ``threading.Thread``\\ s (daemon or not)
    started inside the block by the main thread or by threads the block owns, however deep, and
    the work they give a ``ThreadPoolExecutor`` (asyncio's ``run_in_executor`` too), whichever
    worker runs it. It does not own, and never waits for: threads started by threads from before
    the block (a server's per-connection threads), idle workers of a ``ThreadPoolExecutor`` (they
    are the executor's, wherever it was made), and threads Python did not start.
    Start long-lived service threads before the block, or it waits for them. A failure of an
    owned thread is raised by its block only; once the block is over (timeout, Ctrl-C) it goes to
    ``threading.excepthook``, as does any failure of a thread no open block owns.

    Raises:
        NotMainThreadError: entered on another thread.
        ThreadsStillRunning: threads were still alive ``timeout`` seconds after the block ended
            (the ExceptionGroup of failures so far, if any, is its ``__cause__``).
        ExceptionGroup: one or more workers raised.
    """
    if not is_main_thread():
        raise NotMainThreadError(
            "joined_threads() runs main-thread tasks while it joins, so it must be used on the main thread"
        )
    if timeout is not None:
        timeout = _scheduler._check_timeout(timeout, "joined_threads()")
    scope = ThreadScope()
    _install_hooks()
    _open_scopes.append(scope)
    body_error: BaseException | None = None
    finished = False
    try:
        try:
            yield scope
        except (KeyboardInterrupt, SystemExit):
            raise  # the user wants out: do not wait for threads
        except BaseException as exc:  # noqa: BLE001 - raised again once the threads are joined
            body_error = exc
        try:
            scope._join(timeout)
        except ThreadsStillRunning as timed_out:
            failures = scope._close()
            finished = True
            if body_error is not None:
                failures.insert(0, body_error)
            if failures:
                raise timed_out from _ExceptionGroup("joined_threads: failures before the timeout", failures)
            raise
        failures = scope._close()
        finished = True
    finally:
        if not finished:  # Ctrl-C or exit: the block's failures will not be raised
            scope._abandon()
        _open_scopes.remove(scope)
        if not _open_scopes:
            _remove_hooks()
    if body_error is not None:
        failures.insert(0, body_error)  # the block's own error first, as asyncio.TaskGroup does
    if failures:
        count = len(failures)
        raise _ExceptionGroup(
            f"joined_threads: {count} thread(s) raised"
            if body_error is None
            else f"joined_threads: the block and {count - 1} thread(s) raised",
            failures,
        )
