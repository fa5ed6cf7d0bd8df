"""A cheap, real ``concurrent.futures.Future`` for tasks that run on the main thread (no bpy).

``concurrent.futures.Future.__init__`` builds a ``threading.Condition`` for every future (an RLock
plus half a dozen bound methods), and every transition takes that lock: most of the cost of a
future, and more than the whole rest of a queued task. ``MainThreadFuture`` keeps Future's private
state layout, so everything in ``concurrent.futures`` and ``asyncio.wrap_future`` that reaches into
it (``wait``, ``as_completed``, ``_chain_future``) keeps working, but:

- state defaults live on the class and ``__init__`` is ``object.__init__``: creating a future runs
  no Python code and sets no attribute. The thread that creates it makes its ``__dict__``, which
  the lock-free protocol below works on, before any other thread can see it (``MADE_BY_ITS_CREATOR``:
  the CPython 3.11 crash this prevents);
- each future's lock (``_lock``), its ``_condition`` (built on that lock) and its
  ``_waiters``/``_done_callbacks`` lists are only made when somebody needs them: to wait, add a
  callback, cancel, or set a result from outside. A lock of its own per future matters:
  ``concurrent.futures.wait`` and ``as_completed`` take every future's ``_condition`` in ``id()``
  order, which is deadlock-free only if no two futures share a lock;
- ``cancel()`` notifies waiters at once (state ``CANCELLED_AND_NOTIFIED``): nobody has to dequeue a
  cancelled task before ``concurrent.futures.wait`` sees it;
- the main thread starts and finishes a task's future without taking the lock (the scheduler's
  run loop, ``_dispatch.run_batch``, does both inline), with two atomic ``dict.setdefault`` calls
  on the future's ``__dict__`` (one C call each, under the GIL; they never run Python code since
  the keys are str):

  * start: ``setdefault("_state", RUNNING)``. ``_state`` stays off the instance (the class says
    PENDING) until the main thread starts the task or ``cancel()`` cancels it; both write it with
    setdefault, so exactly one of them wins.
  * finish: ``setdefault("_sync", None)``, then the result and FINISHED are stored. Whoever is
    about to wait on the future, add a callback or set its result from outside first sets
    ``_sync`` to True (``_watch``), then takes the lock and reads the state. If the main thread
    finds True, somebody may be waiting: it finishes under the lock and notifies, as Future does
    (``_finish``). If it finds nothing, it leaves None and writes the result and FINISHED right
    after; whoever comes later finds None, knows no notification is owed to it, waits for the
    state to read FINISHED (a few bytecodes of the main thread) and goes on as with any finished
    future. Either way a waiter sees a done state or gets exactly one notification.

``set_result``/``set_exception``/``cancel`` called by anybody else always take the lock. A task that
sets its own Future's result keeps it: the first result wins, as with any Future, and the
dispatcher logs the misuse instead of raising it (``_finish``). Waiting on the main thread never
blocks it: ``result()``/``exception()`` call the wait that the scheduler sets
(``set_main_thread_wait``), which runs queued tasks while waiting.
"""

from __future__ import annotations

import logging
import sys
import threading
from _thread import LockType, RLock, allocate_lock
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures._base import (  # the state names Future's own code and wait() compare against
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    LOGGER,
    PENDING,
    RUNNING,
)
from time import monotonic, sleep
from typing import Any, TypeVar

from ._threadinfo import is_main_thread

# The state names are re-exported: the scheduler compares against the ones Future's own code uses.
__all__ = ("FINISHED", "RUNNING", "MainThreadFuture", "set_main_thread_wait", "waited_future")

_T = TypeVar("_T")

logger = logging.getLogger("mainthread_tasks")

_INFINITY = float("inf")
_CANCELLED_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED)
_DONE_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class _MadeOnFirstUse:
    """A part of Future's state that a future makes only when somebody needs it (see the module
    docstring): ``_lock``, and ``_condition``/``_waiters``/``_done_callbacks``, asked for only by
    whoever is about to wait on the future or add a callback to it.

    A non-data descriptor: once made, the part is in the future's ``__dict__`` and found there
    first. ``dict.setdefault`` is atomic: if two threads race to make one, both get the winner's.
    (A descriptor, not ``__getattr__``: a class with ``__getattr__`` pays for it on every
    attribute access, and CPython cannot specialize them.)
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, future: MainThreadFuture[Any] | None, owner: type | None = None) -> Any:
        if future is None:
            return self
        name = self.name
        attrs = future.__dict__
        if name == "_lock":
            # Must be held while reading-then-changing this future's state (except the main
            # thread's lock-free start and finish, see the module docstring), and while touching
            # its _waiters/_done_callbacks. Reentrant like Future's.
            return attrs.setdefault("_lock", RLock())
        future._watch()
        made: threading.Condition | list[Any] = threading.Condition(future._lock) if name == "_condition" else []
        return attrs.setdefault(name, made)


class MainThreadFuture(Future[_T]):
    """The ``concurrent.futures.Future`` returned by ``run_on_main``.

    Any thread may wait on it, cancel it or add callbacks. Done-callbacks run in the thread that
    completes it: the main thread, or the thread that cancelled it. Calling ``result()`` or
    ``exception()`` on the main thread runs queued tasks while it waits instead of deadlocking.
    """

    # Class-level defaults: a new future sets nothing (see the module docstring).
    _state = PENDING
    _result = None
    _exception = None

    # RUNNING means the task runs on the main thread, up the stack of a main-thread wait: such a
    # wait could never end. (False for futures of tasks that run elsewhere, e.g. in a process.)
    _runs_on_main = True

    # Deliberately not Future.__init__ (see the module docstring); object's runs no Python code.
    # Whoever makes a future must make its __dict__ before any other thread can see it (see
    # MADE_BY_ITS_CREATOR below): the package's own futures are made only by run_on_main,
    # call_on_main, run_in_process and run_async.
    __init__ = object.__init__

    # The call a queued future carries (see _queue), until the main thread takes the task. Set by
    # its creator; ``_kwargs`` only when there are keyword arguments.
    _fn: Callable[..., Any]
    _args: tuple[Any, ...]
    _kwargs: dict[str, Any] | None = None

    _lock: Any = _MadeOnFirstUse()
    _condition: Any = _MadeOnFirstUse()
    _waiters: Any = _MadeOnFirstUse()
    _done_callbacks: Any = _MadeOnFirstUse()

    def _watch(self) -> None:
        # Tell the main thread somebody may wait (see the module docstring). Call before taking
        # self._lock to read the state. Returns once a lock-free finish, if any, has completed.
        attrs = self.__dict__
        if attrs.setdefault("_sync", True) is not None:
            return
        delay = waited = 1e-6
        # Bounded, as a safeguard: the scheduler never lets Ctrl-C land inside a finish, and this
        # may run under another future's lock (concurrent.futures.wait), which must not stay held.
        while attrs.get("_state") not in _DONE_STATES and waited < 10.0 and not is_main_thread():
            sleep(delay)  # lets the main thread run the few bytecodes left of its finish
            waited += delay
            delay = min(delay * 2, 0.01)

    def __repr__(self) -> str:
        state = self._state
        if state == FINISHED:
            if self._exception is not None:
                return (
                    f"<{type(self).__name__} at {id(self):#x} state=finished raised {type(self._exception).__name__}>"
                )
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
        # Caller holds self._lock and has just moved the future to a done state.
        attrs = self.__dict__
        waiters = attrs.get("_waiters")
        if waiters:
            for waiter in waiters:
                getattr(waiter, method)(self)
        condition = attrs.get("_condition")
        if condition is not None:
            condition.notify_all()
        waker = attrs.get("_waker")
        if waker is not None:
            waker.release()

    def _invoke_callbacks_if_any(self) -> None:
        if self.__dict__.get("_done_callbacks"):
            self._invoke_callbacks()  # type: ignore[attr-defined]  # Future's own, not in typeshed

    def cancel(self) -> bool:
        with self._lock:
            attrs = self.__dict__
            state = attrs.get("_state")
            if state is None:  # pending: race the main thread's start() for it
                state = attrs.setdefault("_state", CANCELLED_AND_NOTIFIED)
                if state is not CANCELLED_AND_NOTIFIED:
                    return False  # the main thread started it first
                self._notify_locked("add_cancelled")
            else:
                return state in _CANCELLED_STATES
        self._invoke_callbacks_if_any()
        return True

    def set_running_or_notify_cancel(self) -> bool:
        attrs = self.__dict__
        state = attrs.get("_state")
        if state is None:
            state = attrs.setdefault("_state", RUNNING)  # atomic against cancel(): see start()
            if state is RUNNING:
                return True
        if state in _CANCELLED_STATES:
            return False  # waiters were notified by cancel()
        raise RuntimeError(f"Future in unexpected state: {self!r}")

    def _set_locked(self, attr: str, value: object, method: str) -> bool:
        # False (and nothing changed) if the future is already done.
        with self._lock:
            if self._state in _DONE_STATES:
                return False
            setattr(self, attr, value)
            self._state = FINISHED
            self._notify_locked(method)
        self._invoke_callbacks_if_any()
        return True

    def set_result(self, result: _T) -> None:
        self._watch()  # the main thread's finish must then lock: see the module docstring
        if not self._set_locked("_result", result, "add_result"):
            raise InvalidStateError(f"{self._state}: {self!r}")

    def set_exception(self, exception: BaseException | None) -> None:
        self._watch()
        if not self._set_locked("_exception", exception, "add_exception"):
            raise InvalidStateError(f"{self._state}: {self!r}")

    def _finish(self, attr: str, value: object, method: str) -> None:
        """The main thread's finish of a task that somebody watches (or that failed). Never raises.

        A task that set its own Future's result or exception keeps it (the first result wins, as
        with any Future); the misuse is logged.
        """
        if not self._set_locked(attr, value, method):
            logger.warning(
                "%r: the task's %s was dropped: its Future was already done (set_result or "
                "set_exception called on it while the task ran); the first result wins",
                self,
                "result" if attr == "_result" else "exception",
            )

    def add_done_callback(self, fn: Callable[[Future[_T]], object]) -> None:
        if self._state not in _DONE_STATES:
            self._watch()
            with self._lock:
                if self._state not in _DONE_STATES:
                    self._done_callbacks.append(fn)
                    return
        try:
            fn(self)
        except Exception:  # noqa: BLE001 - logged, as concurrent.futures does; the other callbacks still run
            LOGGER.exception("exception calling callback for %r", self)

    # -- waiting -----------------------------------------------------------------------------

    def _wait(self, timeout: float | None) -> None:
        if timeout is not None and timeout != timeout:
            # NaN: no deadline could ever pass, and Condition.wait(nan) would block for ever.
            raise ValueError("timeout must be a number of seconds or None, got nan")
        if timeout == _INFINITY:
            timeout = None  # the same, and lock waits overflow on inf
        if self._state in _DONE_STATES:
            return
        if is_main_thread():
            if self._state == RUNNING and self._runs_on_main:
                # Only the main thread runs tasks, so this future's task is further up this very
                # stack: waiting for it would never end.
                raise RuntimeError(
                    f"{self!r} is the task running on the main thread right now; a task cannot wait for its own result"
                )
            _main_thread_wait(self, timeout)
            return
        deadline = None if timeout is None else monotonic() + timeout
        condition = self._condition  # made by _watch()ing first, before the state is read below
        with condition:
            while self._state not in _DONE_STATES:
                if deadline is None:
                    condition.wait()
                else:
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        return
                    condition.wait(remaining)

    def result(self, timeout: float | None = None) -> _T:
        try:
            self._wait(timeout)
            state = self._state
            if state == FINISHED:
                if self._exception is None:
                    return self._result  # type: ignore[return-value]  # FINISHED without an exception: a _T
                raise self._exception
            if state in _CANCELLED_STATES:
                raise CancelledError()
            raise TimeoutError()
        finally:
            del self  # break the frame -> exception -> traceback -> frame cycle, like Future does

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        state = self._state
        if state == FINISHED:
            return self._exception
        if state in _CANCELLED_STATES:
            raise CancelledError()
        raise TimeoutError()


#: Why every future's creator makes its ``__dict__`` at once (``future.__dict__`` after the
#: constructor). CPython 3.11 makes an object's __dict__ lazily, on first use, and making it may
#: start a garbage collection that runs Python code (gc callbacks, finalizers, weakref callbacks),
#: during which another thread can take the GIL and make a second dict over the same attribute
#: values: each later frees them under the other, and the interpreter segfaults in GC. Made by the
#: creator, before the future is shared, the dict is never made twice. 3.10 and 3.12+ are immune.
#: The race, reproduced: tests/test_future.py, "an object's __dict__ made twice".
MADE_BY_ITS_CREATOR = "the __dict__ of a shared object is made by the thread that creates it"
#: Whether creators make the dict: only where the race exists. Making it at birth costs run_on_main
#: throughput (more garbage collection in the submitting threads: docs/performance.md), and the
#: same test passes on 3.10, 3.12, 3.13 and 3.14 without it.
MAKE_DICT_AT_BIRTH = sys.version_info[:2] == (3, 11)


def waited_future(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[MainThreadFuture[Any], LockType]:
    """A new future that carries the call ``fn(*args, **kwargs)``, plus its waker: a held lock
    that is released when the future is done.

    ``call_on_main``'s waiter: one lock, instead of the Condition (and the lock per wait that
    ``Condition.wait`` allocates) that ``result()`` would make. Any thread.
    """
    future: MainThreadFuture[Any] = MainThreadFuture()
    waker = allocate_lock()
    waker.acquire()
    attrs = future.__dict__  # made here, by its creator (MADE_BY_ITS_CREATOR)
    attrs["_fn"] = fn
    attrs["_args"] = args
    if kwargs:
        attrs["_kwargs"] = kwargs
    attrs["_waker"] = waker
    attrs["_sync"] = True  # watched from birth: finishing takes the lock and releases the waker
    # Made here, by the waiting thread, so that the main thread's finish need not make one. Only
    # the finish and a stop's cancel() take it, never nested: a plain lock is enough.
    attrs["_lock"] = allocate_lock()
    return future, waker


def _no_main_thread_wait(future: MainThreadFuture[Any], timeout: float | None) -> None:
    raise NotImplementedError("mainthread_tasks._dispatch sets how the main thread waits")


# How the main thread waits for a future: by running queued tasks meanwhile, since the task it
# waits for may be one of them. The scheduler sets it at import (set_main_thread_wait).
_main_thread_wait: Callable[[MainThreadFuture[Any], float | None], None] = _no_main_thread_wait


def set_main_thread_wait(wait: Callable[[MainThreadFuture[Any], float | None], None]) -> None:
    """Set how ``result()``/``exception()`` wait on the main thread: ``wait(future, timeout)``
    returns once the future is done or ``timeout`` seconds have passed. At import."""
    global _main_thread_wait
    _main_thread_wait = wait
