"""The tasks that have not run yet: the queue every thread submits to, and the ones held (no bpy).

One process-wide queue (a ``queue.SimpleQueue``: its ``put`` is a single C call that never blocks)
holds the tasks. A task with a Future (``run_on_main``, ``call_on_main``) is queued as the Future
itself, which carries its call (``MainThreadFuture._fn``/``_args``/``_kwargs``, taken off it when
the task is taken off the queue: ``take_call``); a ``post_on_main`` task is an ``(fn, args,
kwargs)`` tuple. ``kwargs`` is None when there are none (so the empty dict each call makes is not
kept). One object per task fewer than a tuple around the Future: with many tasks queued, what the
garbage collector has to count and visit is most of a task's cost. Every thread's
submissions go into the same FIFO queue, so each thread's tasks run in the order it submitted
them. Any thread puts; only the main thread takes items off it to run them (``_dispatch``), and
any thread may empty it when the library stops (``_lifecycle``).

``held``: while a render, bake or composite job runs, the UI timer moves queued tasks here instead
of running them (``_hold``), oldest first; they run before anything queued once it ends. Written by
the main thread; any thread may empty it when the library stops (``deque.popleft`` is atomic).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeAlias

from ._future import MainThreadFuture

__all__ = ("Item", "get_nowait", "held", "pending", "put", "qsize", "take_call", "task_fn")

#: A queued task: its Future, which carries the call, or a post_on_main task's (fn, args, kwargs),
#: kwargs None when there are none.
Item: TypeAlias = "MainThreadFuture[Any] | tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any] | None]"
Call: TypeAlias = "tuple[MainThreadFuture[Any] | None, Callable[..., Any], tuple[Any, ...], dict[str, Any] | None]"

_queue: SimpleQueue[Item] = SimpleQueue()
put = _queue.put
get_nowait = _queue.get_nowait
qsize = _queue.qsize

held: deque[Item] = deque()


def pending() -> int:
    """Tasks that have not started: queued or held. Any thread."""
    return qsize() + len(held)


def take_call(item: Item) -> Call:
    """``(future, fn, args, kwargs)`` of an item taken off the queue (``future`` None for
    post_on_main); the future no longer holds its call. By whoever took the item. (The run loop,
    ``_dispatch.run_batch``, does the same inline.)"""
    if item.__class__ is tuple:
        fn, args, kwargs = item
        return None, fn, args, kwargs
    attrs = item.__dict__
    return item, attrs.pop("_fn"), attrs.pop("_args"), attrs.pop("_kwargs", None)  # type: ignore[return-value]


def task_fn(item: Item) -> Callable[..., Any]:
    """The function a queued item will call."""
    return item[0] if item.__class__ is tuple else item._fn  # type: ignore[union-attr]
