"""``joined_threads``: start worker threads and join them, draining the queue meanwhile (no bpy).

Which threads a block owns -- the rule its docstring states -- is decided by lineage, recorded
when a thread starts: the main thread works for the innermost open block, a thread the block owns
works for that block, and so does an executor's worker while it runs work given to the executor
for the block; any other thread works for none. So a block owns what the code inside it started,
however deep, and nothing that threads from before the block start (a server's per-connection
threads, say). Two kinds of threads are never the block's, as they never end on their own: threads
Python did not start (``_DummyThread``: C callbacks, ``_thread`` threads), and the workers of a
``concurrent.futures.ThreadPoolExecutor`` (also behind asyncio's default executor), which belong to
their executor. The work given to an executor for the block is the block's, whichever worker runs
it: the block waits for the Futures it recorded.

How it learns this without disturbing the rest of the process (other add-ons' threads, another copy
of this library with its own module state, libraries that patch the same methods):

- Two layers, put in by the first block and kept for the process's life, one over
  ``threading.Thread.start`` and one over ``ThreadPoolExecutor.submit``. With no block open they
  pass straight through to what they wrap. They are never taken out, so no thread can be inside
  one while it goes, and a layer that somebody else (another copy too) puts over ours keeps
  working. A block that finds ours gone from the chain -- somebody put back what they had found
  before us -- puts a new one in. Our layers do what they do once per thread, however many of them
  are in the chain.
- ``threading.excepthook`` is left alone: an owned thread's ``run`` is wrapped, at its start, so
  that its failure goes to its block, or on to the excepthook once that block is over.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from time import monotonic
from typing import Any, ParamSpec

from ._args import check_timeout, not_callable
from ._dispatch import pump
from ._errors import NotMainThreadError, ThreadsStillRunning
from ._shared import shared_record
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
# The same for every copy of the library (``open``: their blocks, innermost last): a thread the
# main thread starts is the innermost block's, of whichever copy; the other copies leave it alone.
_every_copy = shared_record(
    "_mainthread_tasks_blocks_1", "The joined_threads blocks open in every copy of mainthread_tasks.", open=[]
)
_P = ParamSpec("_P")

# Per thread: .submitting -- inside our submit layer (a thread started now is the executor's
# worker); .working_for -- the block whose executor work this worker runs now.
_local = threading.local()
# Our layers (main thread only): the newest of each we put in, to find it again in the chain.
_start_layer: Callable[[threading.Thread], None] | None = None
_submit_layer: Callable[..., Future[Any]] | None = None
# How far down a chain of wrappers (``__wrapped__``, as functools.wraps sets it) to look for ours.
_MAX_CHAIN = 64
# Set on a Thread that no block may own, whichever copy of the library opened the block.
_UNOWNED = "_mainthread_tasks_unowned"


def unowned(thread: threading.Thread) -> threading.Thread:
    """Mark ``thread``, not started yet, as the library's own: no block owns it or waits for it
    (the progress printer, which may outlive the block that started it). Any thread."""
    setattr(thread, _UNOWNED, True)  # an attribute, not our module's state: every copy sees it
    return thread


def _owner_for_new_thread() -> ThreadScope | None:
    scope: ThreadScope | None = getattr(_local, "working_for", None)
    if scope is None:
        if is_main_thread():
            innermost = _every_copy.open[-1] if _every_copy.open else None
            return innermost if _open_scopes and innermost is _open_scopes[-1] else None
        scope = _owners.get(threading.current_thread())
    return scope if scope is not None and not scope._closed else None


def _adopt(thread: threading.Thread) -> ThreadScope | None:
    """Called as ``thread`` starts while blocks are open: note the block it works for, if any.

    Never raises for somebody else's thread: its start() must not fail because of us."""
    try:
        if thread in _owners or getattr(thread, _UNOWNED, False) or getattr(_local, "submitting", False):
            return None  # scope.start's (noted already), the library's own, or an executor's worker
        scope = _owner_for_new_thread()
        if scope is None:
            return None
        _owners[thread] = scope  # before the block counts it: a failure here leaves nothing behind
    except Exception:  # noqa: BLE001 - a thread we cannot note is nobody's
        return None
    if not scope._adopt(thread):
        return None  # the block is over
    try:
        thread.run = _OwnedRun(scope, thread.run)  # type: ignore[method-assign]  # this thread only
    except Exception:  # noqa: BLE001 - a run that cannot be replaced: its failure goes to the excepthook
        pass
    return scope


class _OwnedRun:
    """Stands in for an owned thread's ``run``: its failure goes to its block while that collects."""

    __slots__ = ("run", "scope")

    def __init__(self, scope: ThreadScope, run: Callable[[], object]) -> None:
        self.scope: ThreadScope | None = scope
        self.run: Callable[[], object] | None = run

    def __call__(self) -> None:
        scope, run = self.scope, self.run
        self.scope = self.run = None  # the Thread no longer refers to itself through us
        assert scope is not None and run is not None, "a thread runs once"
        try:
            run()
        except SystemExit:
            pass  # as threading does: sys.exit() just ends the thread
        except BaseException as exc:
            if not scope._record(exc, threading.current_thread()):
                raise  # the block is over: threading.excepthook reports it


class _BlockWork:
    """What executor work given for a block runs as: ``fn``, the worker working for the block."""

    __slots__ = ("fn", "scope", "thread")

    def __init__(self, scope: ThreadScope, fn: Callable[..., Any]) -> None:
        self.scope = scope
        self.fn = fn
        self.thread: threading.Thread | None = None  # the worker running it now (for the timeout's message)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        previous = getattr(_local, "working_for", None)
        _local.working_for = self.scope
        self.thread = threading.current_thread()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.thread = None
            _local.working_for = previous


def _layer_over_start(original: Callable[[threading.Thread], None]) -> Callable[[threading.Thread], None]:
    @functools.wraps(original)
    def start(self: threading.Thread) -> None:
        if not _open_scopes:
            return original(self)
        scope = _adopt(self)
        started = False
        try:
            original(self)
            started = True
        finally:
            if scope is not None:
                scope._begun(self, started)

    return start


def _layer_over_submit(original: Callable[..., Future[Any]]) -> Callable[..., Future[Any]]:
    @functools.wraps(original)
    def submit(self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        scope = _owner_for_new_thread() if _open_scopes and not getattr(_local, "submitting", False) else None
        if scope is None:
            return original(self, fn, *args, **kwargs)
        work = _BlockWork(scope, fn)
        _local.submitting = True
        try:
            future = original(self, work, *args, **kwargs)
        finally:
            _local.submitting = False
        scope._record_work(future, work)
        return future

    return submit


def _in_chain(found: object, ours: object) -> bool:
    """True if ``ours`` is ``found`` or something it wraps (``__wrapped__``)."""
    for _ in range(_MAX_CHAIN):
        if ours is None or found is None:
            return False
        if found is ours:
            return True
        try:
            found = getattr(found, "__wrapped__", None)
        except Exception:  # noqa: BLE001 - somebody else's object: not ours, whatever it raises
            return False
    return False


def _install_layers() -> None:
    """Put our layers in if they are not in the chain (the first block, or somebody took them out)."""
    global _start_layer, _submit_layer
    if not _in_chain(threading.Thread.start, _start_layer):
        _start_layer = _layer_over_start(threading.Thread.start)
        threading.Thread.start = _start_layer  # type: ignore[assignment,method-assign]  # the same call, noted
    if not _in_chain(ThreadPoolExecutor.submit, _submit_layer):
        _submit_layer = _layer_over_submit(ThreadPoolExecutor.submit)
        ThreadPoolExecutor.submit = _submit_layer  # type: ignore[method-assign]  # the same call, noted


def _report(args: threading.ExceptHookArgs) -> None:
    threading.excepthook(args)


class ThreadScope:
    """What ``joined_threads()`` yields: start threads with ``.start()``; all are joined at exit."""

    def __init__(self) -> None:
        # The block's threads: from .start() and the ones it owns. Those whose start() is under
        # way count as alive: a thread's is_alive() is False until it has begun (its ident comes
        # first, so nothing public tells "not begun yet" from "over" before start() returns).
        self._starting: list[threading.Thread] = []
        self._threads: list[threading.Thread] = []  # started: alive while is_alive()
        self._work: list[tuple[Future[Any], _BlockWork]] = []  # executor work given for the block
        self._failures: list[tuple[BaseException, threading.Thread | None]] = []
        self._closed = False  # no longer collecting failures: they go to the excepthook
        self._numbered = 0  # threads .start() made: their names count up
        self._lock = threading.Lock()  # held while changing any of the above

    def start(self, fn: Callable[_P, object], /, *args: _P.args, **kwargs: _P.kwargs) -> threading.Thread:
        """Start ``fn(*args, **kwargs)`` in a new thread, joined when the block ends. Any thread.

        Its exception, if any, is re-raised at the end of the block in an ExceptionGroup; once the
        block has ended (it timed out, or was left by Ctrl-C) it goes to ``threading.excepthook``.

        Raises:
            TypeError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise not_callable(fn)

        def run() -> None:
            try:
                fn(*args, **kwargs)
            except SystemExit:
                pass  # as for any threading.Thread: sys.exit() just ends the thread
            except BaseException as exc:
                if not self._record(exc, threading.current_thread()):
                    raise  # the block is over: threading.excepthook reports it

        with self._lock:
            self._numbered += 1
            thread = threading.Thread(target=run, name=f"{getattr(fn, '__name__', 'worker')}-{self._numbered}")
            self._starting.append(thread)
        _owners[thread] = self
        started = False
        try:
            thread.start()
            started = True
        finally:
            self._begun(thread, started)
        return thread

    def _adopt(self, thread: threading.Thread) -> bool:
        """``thread``, starting now, is the block's, unless the block is over."""
        with self._lock:
            if self._closed:
                return False
            self._starting.append(thread)
            return True

    def _begun(self, thread: threading.Thread, started: bool) -> None:
        """``thread.start()`` returned (``started``) or raised: then it never ran, nothing to wait for."""
        with self._lock:
            if thread in self._starting:
                self._starting.remove(thread)
                if started and not self._closed:
                    self._threads.append(thread)

    def _record(self, exc: BaseException, thread: threading.Thread | None = None) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._failures.append((exc, thread))
            return True

    def _record_work(self, future: Future[Any], work: _BlockWork) -> None:
        with self._lock:
            self._work = [(f, w) for f, w in self._work if not f.done()]  # keep it short
            self._work.append((future, work))

    def _work_pending(self) -> bool:
        with self._lock:
            return any(not f.done() for f, _work in self._work)

    def _workers_busy_with_work(self) -> list[threading.Thread]:
        """The executor workers running the block's work now."""
        with self._lock:
            work = list(self._work)
        return [t for f, w in work if not f.done() and (t := w.thread) is not None]

    def _take_failures(self) -> list[tuple[BaseException, threading.Thread | None]]:
        """Stop collecting: each failure is handed out once. Drop the rest (it may refer to us)."""
        with self._lock:
            self._closed = True
            failures, self._failures = self._failures, []
            self._starting, self._threads, self._work = [], [], []
        return failures

    def _close(self) -> list[BaseException]:
        """Stop collecting; return the failures collected."""
        return [exc for exc, _thread in self._take_failures()]

    def _abandon(self) -> None:
        """The block ends without raising its threads' failures (Ctrl-C): report them instead."""
        for exc, thread in self._take_failures():
            _report(threading.ExceptHookArgs([type(exc), exc, exc.__traceback__, thread]))

    def _alive_threads(self) -> list[threading.Thread]:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            return self._starting + self._threads

    def _join(self, timeout: float | None) -> None:
        deadline = None if timeout is None else monotonic() + timeout
        drained = False
        while True:
            # The work first: a thread the block's executor work starts is the block's before
            # the work's Future is done, so the threads, looked at next, include it.
            work_pending = self._work_pending()
            alive = self._alive_threads()
            if not alive and not work_pending:
                if drained:
                    return
                # What the threads queued just before they ended (a post_on_main as their last
                # step) runs before the block ends. Once: work that others keep queueing cannot
                # hold the block open. A task run here may start threads: they are joined too.
                drained = True
                pump(0.0)
                continue
            drained = False
            if deadline is None or timeout is None:
                wait = _JOIN_POLL_SECONDS
            else:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    # Name the executor workers running the block's work too.
                    alive += [t for t in self._workers_busy_with_work() if t not in alive]
                    raise ThreadsStillRunning(alive, timeout)
                wait = min(remaining, _JOIN_POLL_SECONDS)
            # Run the workers' main-thread calls while they finish: they may be blocked on them.
            pump(wait)


@contextmanager
def joined_threads(timeout: float | None = None) -> Iterator[ThreadScope]:
    """Join every thread started in the block, running main-thread tasks while waiting. Main thread.

    Yields a ``ThreadScope``; ``scope.start(fn, *args)`` starts a worker. On exit it joins
    the threads the block owns while it keeps running the queue, so workers blocked in
    ``call_on_main`` make progress even in ``--background`` where Blender timers never fire, and
    what they queued before they ended has run when the block ends. Then,
    like ``asyncio.TaskGroup``, the workers' exceptions (and the block's own, if it raised one) are
    raised together as an ``ExceptionGroup``; ``sys.exit()`` in a worker just ends that thread.

    The block owns: threads from ``scope.start``, ``threading.Thread`` objects (daemon or not)
    started inside the block by the main thread or by threads the block owns, however deep, and
    the work they give a ``ThreadPoolExecutor`` (asyncio's ``run_in_executor`` too), whichever
    worker runs it, with the threads that work starts. It does not own, and never waits for:
    threads started by threads from before the block (a server's per-connection threads), the
    workers of a ``ThreadPoolExecutor`` (they are the executor's, wherever it was made; the block
    waits for its work, not for them), and threads Python did not start.
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
        timeout = check_timeout(timeout, "joined_threads()")
    scope = ThreadScope()
    _install_layers()
    _open_scopes.append(scope)
    _every_copy.open.append(scope)
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
        _every_copy.open.remove(scope)
        _open_scopes.remove(scope)
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
