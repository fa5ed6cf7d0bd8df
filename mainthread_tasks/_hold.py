"""Holding queued tasks while Blender refuses data changes (render, bake, composite jobs).

While such a job runs, Blender's UI keeps running its timers (Blender 5.2: ~70 passes a second
through a Cycles render), and a task that changes data then fails with "can't modify blend data in
this state" or crashes Blender. So each UI timer pass that finds tasks first asks
``bpy.app.is_job_running`` (about 150 ns for the three job types when none runs), and while one
runs it moves the queued tasks to the held list (``_queue.held``), in order, instead of running them.
Once the job has ended the held tasks run first, within the usual tick budget, then the rest.

``ui_only(fn)`` marks a task that only touches the interface (a label, a redraw, a report): it runs
even while the queue is held, ahead of the held tasks. ``run_on_main(fn, *args, **kwargs)`` passes
every keyword to ``fn``, so the mark travels with the function, not as an option; it is looked at
only while the queue is held, and costs nothing otherwise.

Only the UI timer holds: ``pump()`` and what calls it (``_dispatch``) run tasks even during a job
(the main thread asked for them; in the UI, waiting for them would keep the job from ever ending).
Sources (``add_source``) are held too, except those marked ``ui_only`` (the progress display).
No bpy here: ``_blender`` passes ``bpy.app.is_job_running`` in.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable
from queue import Empty
from time import perf_counter
from typing import ParamSpec, TypeVar

from . import _queue
from ._args import not_callable
from ._dispatch import run_batch
from ._interrupts import GUARD, dispatcher
from ._wake import SOURCES

__all__ = ("ui_only",)

logger = logging.getLogger("mainthread_tasks")

#: The job types during which data must not change (bpy.app.is_job_running's names; 3.x to 5.x).
#: Not held for: RENDER_PREVIEW (material previews, nearly always running) and SHADER_COMPILATION.
HOLDING_JOBS = ("RENDER", "OBJECT_BAKE", "COMPOSITE")
#: While held, the timer looks again this often (seconds): held tasks start at most this long
#: after the job ends.
HOLD_POLL = 0.05

_UI_ONLY = "_mainthread_tasks_ui_only"
_P = ParamSpec("_P")
_T = TypeVar("_T")


class Hold:
    """Whether the UI timer holds the queue now, and since when. Written on the main thread."""

    __slots__ = ("reason", "holds", "since")

    def __init__(self) -> None:
        self.reason = ""  #: why the UI timer holds the queue right now, "" when it does not
        self.holds = 0  #: holds that began since the last reset_stats()
        self.since = 0.0  #: perf_counter() when the current hold began

    def reset(self) -> None:
        """For tests: not holding, nothing counted. The held tasks are ``_queue``'s."""
        self.reason = ""
        self.holds = 0


HOLD = Hold()


def ui_only(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """Mark ``fn`` as a task that only touches the interface: it is not held during jobs. Any thread.

    Returns a wrapper that calls ``fn`` with the same arguments; submit it as usual:

        post_on_main(ui_only(set_status_text), "Downloading 3/40")

    While a render, bake or composite job runs, the UI timer holds every other task until the job
    ends (``stats().held``), and runs these at once, ahead of the held ones. Such a task must not
    change blend data (objects, meshes, scenes...): that is what Blender refuses during those jobs.

    Raises:
        TypeError: ``fn`` is not callable.
    """
    if not callable(fn):
        raise not_callable(fn)
    if getattr(fn, _UI_ONLY, False):
        return fn

    @functools.wraps(fn)
    def ui_task(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return fn(*args, **kwargs)

    setattr(ui_task, _UI_ONLY, True)
    return ui_task


def is_ui_only(fn: object) -> bool:
    return getattr(fn, _UI_ONLY, False) is True


def job_running(is_job_running: Callable[[str], bool]) -> str:
    """Why data must not change now ("a RENDER job is running"), or "" . Main thread."""
    for job in HOLDING_JOBS:
        if is_job_running(job):
            return f"a {job} job is running"
    return ""


@dispatcher
def hold_pass(reason: str, budget: float) -> int:
    """A UI timer pass while ``reason`` holds the queue: move the queued tasks to the held list,
    keeping their order, and run the ui_only ones (and ui_only sources) now. Main thread. Returns
    how many tasks ran. Under the Ctrl-C guard: a Ctrl-C never lands between taking a task off the
    queue and putting it on the held list."""
    hold = HOLD
    if not hold.reason:
        hold.holds += 1
        hold.since = perf_counter()
        logger.debug("mainthread_tasks: holding the queue: %s", reason)
    hold.reason = reason
    deadline = perf_counter() + budget
    held = _queue.held
    ui_tasks: deque[_queue.Item] = deque()
    get_nowait = _queue.get_nowait
    ran = 0
    guarded = GUARD.install()
    try:
        for _ in range(_queue.qsize()):
            try:
                item = get_nowait()
            except Empty:
                break
            (ui_tasks if is_ui_only(_queue.task_fn(item)) else held).append(item)
        if ui_tasks:
            ran = run_batch(len(ui_tasks), None, ui_tasks.popleft)
    finally:
        held.extendleft(reversed(ui_tasks))  # left by a Ctrl-C: they run after the job
        if guarded:
            GUARD.restore()
    for source in SOURCES.all:
        if getattr(source, "ui_only", False):
            try:
                source.poll(deadline)
            except Exception:
                logger.exception("mainthread_tasks: polling %r failed", source)
    return ran


def release() -> None:
    """The job ended: the next passes run the held tasks. Main thread."""
    hold = HOLD
    if hold.reason:
        logger.debug(
            "mainthread_tasks: queue held for %.2f s (%s); %d task(s) to run",
            perf_counter() - hold.since,
            hold.reason,
            len(_queue.held),
        )
        hold.reason = ""
