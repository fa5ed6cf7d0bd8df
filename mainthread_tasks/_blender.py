"""The Blender side: register()/unregister() and the timer that drains the queue in the UI.

The only module that imports ``bpy``, and only inside functions: importing the package touches no
Blender state, and the core also runs on plain Python (where register() just counts users).
"""

from __future__ import annotations

import logging

from . import _scheduler

__all__ = ("register", "unregister", "tick_budget")

logger = logging.getLogger("mainthread_tasks")

#: Seconds of queued work one Blender event-loop pass may run before the UI gets to redraw.
DEFAULT_TICK_BUDGET = 0.004
tick_budget = DEFAULT_TICK_BUDGET


def _timers():
    try:
        import bpy
    except ImportError:  # plain Python: nothing to drive, pump()/joined_threads() still work
        return None
    return bpy.app.timers


def _drain_timer() -> float:
    # bpy.app.timers callback, every event-loop pass (~5 ms when idle). It must never raise:
    # Blender unregisters a timer that raises, for good.
    try:
        _scheduler.run_for(tick_budget)
    except BaseException:  # noqa: BLE001 - see above; the task's own failure is already recorded
        logger.exception("mainthread_tasks: a task interrupted the timer pass; the queue keeps running")
    return 0.0


def register() -> None:
    """Start accepting work and, in Blender's UI, drain the queue from a timer. Main thread.

    Reference-counted: every add-on that uses the library (installed or bundled) may call it; the
    timer is registered once. Safe after an unregister() and across File > Open (the timer is
    persistent).

    Raises:
        SchedulerStopped: Python is exiting.
    """
    _scheduler.acquire()
    try:
        timers = _timers()
        if timers is not None and not timers.is_registered(_drain_timer):
            # persistent: survive File > New/Open; first_interval 0: start on the next pass.
            timers.register(_drain_timer, first_interval=0.0, persistent=True)
    except BaseException:
        _scheduler.release()  # roll back, as Blender's addon_utils expects of a failed register()
        raise


def unregister() -> None:
    """Undo one register(). The last one stops the scheduler and removes the timer. Main thread.

    On stop, queued Futures are cancelled, threads blocked in ``call_on_main`` raise
    SchedulerStopped, and submissions raise SchedulerStopped until the next register(). Never
    raises for an extra call or a timer that is already gone.
    """
    if _scheduler.release():
        return
    timers = _timers()
    if timers is not None and timers.is_registered(_drain_timer):
        timers.unregister(_drain_timer)
