"""Submitting work to the main thread: ``run_on_main``, ``post_on_main``, ``call_on_main`` and
``@main_thread`` (no bpy). Any thread.

Each puts one item on the queue (``_queue``) and, only if the main thread sleeps waiting for work,
wakes it (``_wake``); the main thread runs it (``_dispatch``). A submission is refused with
``SchedulerStopped`` once the library stops (``_lifecycle``). These are the hot paths: module
attributes they use are bound to names here once.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import ParamSpec, TypeVar

from . import _queue
from ._args import not_callable
from ._errors import SchedulerStopped
from ._future import MAKE_DICT_AT_BIRTH, MainThreadFuture, waited_future
from ._lifecycle import LIFECYCLE, STOPPED_BY_UNREGISTER
from ._threadinfo import MAIN_THREAD_IDENT
from ._wake import WAKER

__all__ = ("call_on_main", "main_thread", "post_on_main", "run_on_main")

_P = ParamSpec("_P")
_T = TypeVar("_T")

_get_ident = threading.get_ident
_put = _queue.put
_lifecycle = LIFECYCLE
_waker = WAKER


def run_on_main(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> MainThreadFuture[_T]:
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
        raise not_callable(fn)
    stopped = _lifecycle.stopped
    if stopped is not None:
        raise SchedulerStopped(stopped)
    future: MainThreadFuture[_T] = MainThreadFuture()
    future._fn = fn  # the future carries its call on the queue (see _queue)
    future._args = args
    if kwargs:
        future._kwargs = kwargs
    if MAKE_DICT_AT_BIRTH:  # made by its creator, before anybody else sees it (_future.MADE_BY_ITS_CREATOR)
        future.__dict__  # noqa: B018
    _put(future)
    if _waker.asleep:
        _waker.ring()
    if _lifecycle.stopped is not None:  # stopped between the check and the put: nothing may stay queued
        _lifecycle.reject_queued()
    return future


def post_on_main(fn: Callable[_P, object], /, *args: _P.args, **kwargs: _P.kwargs) -> None:
    """Queue ``fn(*args, **kwargs)`` for the main thread, fire-and-forget: the fast path. Any thread.

    No Future is made. If the task raises, the exception is logged with its traceback on the
    ``mainthread_tasks`` logger and counted in ``stats().failed``; if it is dropped unrun by
    ``unregister()``/exit, that is logged and counted in ``stats().cancelled``.

    Raises:
        TypeError: ``fn`` is not callable.
        SchedulerStopped: after the last ``unregister()``, or while Python exits.
    """
    if not callable(fn):
        raise not_callable(fn)
    stopped = _lifecycle.stopped
    if stopped is not None:
        raise SchedulerStopped(stopped)
    _put((fn, args, kwargs or None))
    if _waker.asleep:
        _waker.ring()
    if _lifecycle.stopped is not None:  # stopped between the check and the put: nothing may stay queued
        _lifecycle.reject_queued()


def call_on_main(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
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
        raise not_callable(fn)
    if _get_ident() == MAIN_THREAD_IDENT:
        return fn(*args, **kwargs)
    # The submit steps of run_on_main, inlined like in post_on_main: this is the hot path.
    stopped = _lifecycle.stopped
    if stopped is not None:
        raise SchedulerStopped(stopped)
    future: MainThreadFuture[_T]  # an annotation only: nothing runs for it
    future, waker = waited_future(fn, args, kwargs)
    _put(future)
    if _waker.asleep:
        _waker.ring()
    if _lifecycle.stopped is not None:  # stopped between the check and the put: nothing may stay queued
        _lifecycle.reject_queued()
    waker.acquire()  # released once the future is done: finished, or cancelled by a stop
    try:
        return future.result()
    except CancelledError:
        if future.cancelled():  # only the scheduler could have cancelled it: nobody else has it
            raise SchedulerStopped(_lifecycle.stopped or STOPPED_BY_UNREGISTER) from None
        raise
    finally:
        del future


def main_thread(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """Decorator: every call of ``fn``, from any thread, runs on the main thread.

    Same semantics as ``call_on_main`` (inline on the main thread; from a worker it blocks and
    returns the result or re-raises the exception). Keeps ``fn``'s name, docstring and signature.

    Raises:
        TypeError: ``fn`` is not callable (at decoration time).
    """
    if not callable(fn):
        raise not_callable(fn)

    @functools.wraps(fn)
    def on_main_thread(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return call_on_main(fn, *args, **kwargs)

    return on_main_thread
