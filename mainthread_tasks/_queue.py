"""The tasks that have not run yet: the queue every thread submits to, and the ones held (no bpy).

One process-wide queue (a ``queue.SimpleQueue``: its ``put`` is a single C call that never blocks)
holds ``(future, fn, args, kwargs)`` items: ``future`` is None for ``post_on_main``, ``kwargs`` is
None when there are none (so the empty dict each call makes is not kept). Every thread's
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

__all__ = ("Item", "get_nowait", "held", "pending", "put", "qsize")

#: A queued task: (its future, None for post_on_main; fn; args; kwargs, None when there are none).
Item: TypeAlias = "tuple[MainThreadFuture[Any] | None, Callable[..., Any], tuple[Any, ...], dict[str, Any] | None]"

_queue: SimpleQueue[Item] = SimpleQueue()
put = _queue.put
get_nowait = _queue.get_nowait
qsize = _queue.qsize

held: deque[Item] = deque()


def pending() -> int:
    """Tasks that have not started: queued or held. Any thread."""
    return qsize() + len(held)
