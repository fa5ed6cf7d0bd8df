"""A cheap, real ``concurrent.futures.Future`` for tasks that run on the main thread (no bpy).

``concurrent.futures.Future.__init__`` builds a ``threading.Condition`` for every future (an RLock
plus half a dozen bound methods): most of the cost of a future, and more than the whole rest of a
queued task. ``MainThreadFuture`` keeps Future's private state layout, so everything in
``concurrent.futures`` and ``asyncio.wrap_future`` that reaches into it (``wait``,
``as_completed``, ``_chain_future``) keeps working, but:

- state defaults live on the class, so creating a future sets no attribute at all;
- one module-wide lock, ``_state_lock``, guards the state of every MainThreadFuture; the per-future
  ``_condition`` (built on that same lock, so ``wait``'s ``_AcquireFutures`` stays correct) and the
  ``_waiters``/``_done_callbacks`` lists are only made when somebody waits or adds a callback;
- ``cancel()`` notifies waiters at once (state ``CANCELLED_AND_NOTIFIED``): nobody has to dequeue a
  cancelled task before ``concurrent.futures.wait`` sees it.

Waiting on the main thread never blocks it: ``result()``/``exception()`` call the hook that the
scheduler installs (``_wait_on_main``), which runs queued tasks while waiting.
"""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures._base import (  # the state names Future's own code and wait() compare against
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    LOGGER,
    PENDING,
    RUNNING,
)
from time import monotonic

from ._threadinfo import is_main_thread

__all__ = ("MainThreadFuture",)

# Must be held while reading-then-changing the state of any MainThreadFuture, and while touching its
# _waiters/_done_callbacks. Reentrant because concurrent.futures.wait() acquires the _condition of
# every future it waits on, and here they all share this lock.
_state_lock = threading.RLock()

_CANCELLED_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED)
_DONE_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class MainThreadFuture(Future):
    """The ``concurrent.futures.Future`` returned by ``run_on_main``.

    Any thread may wait on it, cancel it or add callbacks. Done-callbacks run in the thread that
    completes it: the main thread, or the thread that cancelled it. Calling ``result()`` or
    ``exception()`` on the main thread runs queued tasks while it waits instead of deadlocking.
    """

    # Class-level defaults: a new future sets nothing (see the module docstring).
    _state = PENDING
    _result = None
    _exception = None

    # Installed by the scheduler: a function ``(future, timeout)`` that waits on the main thread by
    # running queued tasks until the future is done or the timeout has passed.
    _wait_on_main = None

    def __init__(self) -> None:  # noqa: D107 - deliberately not Future.__init__ (see module docstring)
        pass

    def __getattr__(self, name: str):
        # Only reached for attributes never set: the lazily made parts of Future's state.
        if name == "_condition":
            with _state_lock:
                condition = self.__dict__.get("_condition")
                if condition is None:
                    condition = self.__dict__["_condition"] = threading.Condition(_state_lock)
                return condition
        if name == "_waiters" or name == "_done_callbacks":
            return self.__dict__.setdefault(name, [])  # dict.setdefault is atomic
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        state = self._state
        if state == FINISHED:
            if self._exception is not None:
                return f"<{type(self).__name__} at {id(self):#x} state=finished raised {type(self._exception).__name__}>"
            return f"<{type(self).__name__} at {id(self):#x} state=finished returned {type(self._result).__name__}>"
        return f"<{type(self).__name__} at {id(self):#x} state={state.lower()}>"

    # -- queries: a single attribute read is atomic, no lock needed ---------------------------

    def cancelled(self) -> bool:
        return self._state in _CANCELLED_STATES

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state in _DONE_STATES

    # -- transitions -------------------------------------------------------------------------

    def _notify_locked(self, method: str) -> None:
        # Caller holds _state_lock and has just moved the future to a done state.
        attrs = self.__dict__
        waiters = attrs.get("_waiters")
        if waiters:
            for waiter in waiters:
                getattr(waiter, method)(self)
        condition = attrs.get("_condition")
        if condition is not None:
            condition.notify_all()

    def _invoke_callbacks_if_any(self) -> None:
        if self.__dict__.get("_done_callbacks"):
            self._invoke_callbacks()

    def cancel(self) -> bool:
        with _state_lock:
            state = self._state
            if state == PENDING:
                self._state = CANCELLED_AND_NOTIFIED
                self._notify_locked("add_cancelled")
            elif state not in _CANCELLED_STATES:
                return False  # running or finished
            else:
                return True
        self._invoke_callbacks_if_any()
        return True

    def set_running_or_notify_cancel(self) -> bool:
        with _state_lock:
            state = self._state
            if state == PENDING:
                self._state = RUNNING
                return True
            if state in _CANCELLED_STATES:
                return False  # waiters were notified by cancel()
            raise RuntimeError(f"Future in unexpected state: {self!r}")

    def set_result(self, result) -> None:
        with _state_lock:
            if self._state in _DONE_STATES:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._state = FINISHED
            self._notify_locked("add_result")
        self._invoke_callbacks_if_any()

    def set_exception(self, exception) -> None:
        with _state_lock:
            if self._state in _DONE_STATES:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._exception = exception
            self._state = FINISHED
            self._notify_locked("add_exception")
        self._invoke_callbacks_if_any()

    def add_done_callback(self, fn) -> None:
        with _state_lock:
            if self._state not in _DONE_STATES:
                self._done_callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    # -- waiting -----------------------------------------------------------------------------

    def _wait(self, timeout: float | None) -> None:
        if self._state in _DONE_STATES:
            return
        if is_main_thread():
            if self._state == RUNNING:
                # Only the main thread runs tasks, so this future's task is further up this very
                # stack: waiting for it would never end.
                raise RuntimeError(
                    f"{self!r} is the task running on the main thread right now; "
                    "a task cannot wait for its own result"
                )
            self._wait_on_main(timeout)
            return
        deadline = None if timeout is None else monotonic() + timeout
        with _state_lock:
            while self._state not in _DONE_STATES:
                if deadline is None:
                    self._condition.wait()
                else:
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        return
                    self._condition.wait(remaining)

    def result(self, timeout: float | None = None):
        try:
            self._wait(timeout)
            state = self._state
            if state == FINISHED:
                if self._exception is None:
                    return self._result
                raise self._exception
            if state in _CANCELLED_STATES:
                raise CancelledError()
            raise TimeoutError()
        finally:
            self = None  # break the frame -> exception -> traceback -> frame cycle, like Future does

    def exception(self, timeout: float | None = None):
        self._wait(timeout)
        state = self._state
        if state == FINISHED:
            return self._exception
        if state in _CANCELLED_STATES:
            raise CancelledError()
        raise TimeoutError()
