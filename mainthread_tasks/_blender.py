"""The Blender side: register()/unregister(), the timer that drains the queue in the UI, the tick budget.

This module and ``_preferences`` are the only ones that import ``bpy``, and this one only inside
functions: importing the package touches no Blender state, and the core also runs on plain Python
(where register() just counts users).
"""

from __future__ import annotations

import logging
import math
import numbers
import sys
from time import perf_counter

from . import _scheduler

__all__ = ("register", "set_tick_budget", "unregister")

logger = logging.getLogger("mainthread_tasks")

#: Seconds of queued work one Blender event-loop pass may run before the UI gets to redraw. An idle
#: pass takes ~5 ms, so 4 ms of tasks per pass keeps the UI above ~100 passes/s under any backlog.
DEFAULT_TICK_BUDGET = 0.004
TICK_BUDGET_RANGE = (0.0001, 1.0)
tick_budget = DEFAULT_TICK_BUDGET

# Timings of the timer passes, for the preferences panel. Written by _drain_timer (main thread).
_pass_started = 0.0  #: perf_counter() at the start of the latest pass
_queue_empty_at = 0.0  #: perf_counter() when a pass last left the queue empty
pass_interval = 0.0  #: time between the latest two passes: one event-loop pass, ~5 ms when idle
queue_wait = 0.0  #: at the latest pass that ran tasks: upper bound of how long they had waited
longest_queue_wait = 0.0


def set_tick_budget(seconds: float) -> float:
    """Set how long one Blender event-loop pass may spend running queued tasks; return the old value.

    Any thread; applies from the next pass. A task already started is never interrupted, so a pass
    lasts at most the budget plus one task; what is left runs in the next passes. A smaller budget
    keeps the UI smoother under a backlog, a larger one drains a backlog in fewer passes. The
    add-on's preferences ("Tick budget") set the same value.

    Raises:
        TypeError: ``seconds`` is not a number.
        ValueError: ``seconds`` is outside 0.0001 .. 1.0.
    """
    global tick_budget
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
        raise TypeError(f"set_tick_budget(): seconds must be a number, got {seconds!r}")
    low, high = TICK_BUDGET_RANGE
    if math.isnan(seconds) or not low <= seconds <= high:
        raise ValueError(f"set_tick_budget(): seconds must be within {low:g} .. {high:g}, got {seconds!r}")
    previous, tick_budget = tick_budget, float(seconds)
    return previous


def reset_pass_stats() -> None:
    """Zero the pass timings shown in the preferences. Main thread."""
    global pass_interval, queue_wait, longest_queue_wait, _queue_empty_at
    pass_interval = queue_wait = longest_queue_wait = 0.0
    _queue_empty_at = _pass_started


def _drain_timer() -> float:
    # bpy.app.timers callback, every event-loop pass (~5 ms when idle). It must never raise:
    # Blender unregisters a timer that raises, for good.
    global _pass_started, _queue_empty_at, pass_interval, queue_wait, longest_queue_wait
    try:
        started = perf_counter()
        pass_interval = started - _pass_started
        _pass_started = started
        if _scheduler.run_for(tick_budget):
            # No queued task is older than the last moment the queue was seen empty. This bound
            # costs nothing per task (tasks carry no timestamp).
            queue_wait = started - _queue_empty_at
            longest_queue_wait = max(longest_queue_wait, queue_wait)
            if not _scheduler.stats().pending:
                _queue_empty_at = perf_counter()
        else:  # found the queue empty (an idle pass: one clock read in all)
            _queue_empty_at = started
    except BaseException:  # noqa: BLE001 - see above; the task's own failure is already recorded
        logger.exception("mainthread_tasks: a task interrupted the timer pass; the queue keeps running")
    return 0.0


def _bpy():
    try:
        import bpy
    except ImportError:  # plain Python: nothing to drive, pump()/joined_threads() still work
        return None
    return bpy


def _is_enabled_addon(bpy) -> bool:
    # True when Blender lists this package in Edit > Preferences > Add-ons: the installed add-on or
    # extension, not a copy bundled inside another add-on. addon_utils adds the entry before it
    # calls register().
    try:
        addons = bpy.context.preferences.addons
    except AttributeError:  # fake-bpy-module (type stubs) has no context: not real Blender
        return False
    return __package__ in addons


def register() -> None:
    """Start accepting work and, in Blender's UI, drain the queue from a timer. Main thread.

    Reference-counted: every add-on that uses the library (installed or bundled) may call it; the
    timer is registered once. Safe after an unregister() and across File > New/Open (the timer is
    persistent). When this package is itself an enabled add-on, also registers its preferences.

    Raises:
        SchedulerStopped: Python is exiting.
    """
    global _pass_started, _queue_empty_at
    _scheduler.acquire()
    try:
        bpy = _bpy()
        if bpy is None:
            return
        timers = bpy.app.timers
        if not timers.is_registered(_drain_timer):
            _pass_started = _queue_empty_at = perf_counter()
            # persistent: survive File > New/Open; first_interval 0: start on the next pass.
            timers.register(_drain_timer, first_interval=0.0, persistent=True)
        if _is_enabled_addon(bpy):
            from . import _preferences

            _preferences.register()
    except BaseException:
        # Roll back: Blender's addon_utils deletes the module of an add-on whose register() raised.
        if not _scheduler.release():
            _remove_blender_side()
        raise


def unregister() -> None:
    """Undo one register(). The last one stops the scheduler and removes the timer. Main thread.

    On stop, queued Futures are cancelled, threads blocked in ``call_on_main`` raise
    SchedulerStopped, and submissions raise SchedulerStopped until the next register(). Never
    raises for an extra call or a timer that is already gone.
    """
    if _scheduler.release():
        return
    _remove_blender_side()


def _remove_blender_side() -> None:
    bpy = _bpy()
    if bpy is None:
        return
    preferences = sys.modules.get(f"{__package__}._preferences")  # imported only if it was used
    if preferences is not None:
        preferences.unregister()
    timers = bpy.app.timers
    if timers.is_registered(_drain_timer):
        timers.unregister(_drain_timer)
