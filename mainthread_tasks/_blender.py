"""The Blender side: register()/unregister() and the timer that drains the queue in the UI within the
tick budget (the budget, the pacing and the pass timings are ``_pacing``'s).

This module imports ``bpy`` only inside functions, as every module of the package that uses it
does: importing the package touches no Blender state, and the core also runs on plain Python (where
register() just counts users).
"""

from __future__ import annotations

import logging
import sys
from time import perf_counter
from typing import Any

from . import _hold, _queue, _strict
from ._dispatch import COUNTERS, run_for
from ._hold import HOLD
from ._lifecycle import LIFECYCLE
from ._pacing import MIN_BUDGET_SHARE, PACING
from ._shared import shared_record
from ._wake import SOURCES

__all__ = ("register", "unregister")

logger = logging.getLogger("mainthread_tasks")

#: After IDLE_AFTER seconds without work the timer polls every IDLE_POLL seconds (every third idle
#: pass) instead of every pass, and after LONG_IDLE_AFTER seconds (Blender idling: most of its
#: time) every LONG_IDLE_POLL seconds: the first task after a quiet spell waits at most that much
#: longer.
IDLE_AFTER = 1.0
IDLE_POLL = 0.015
LONG_IDLE_AFTER = 10.0
LONG_IDLE_POLL = 0.05

#: Copies of this library in one Blender (the installed add-on, the wheel that extensions bundle,
#: a copy vendored inside a legacy add-on) each have their own queue and timer. So that a pass
#: stays within one tick budget however many of them have work, they keep what each pass spent in
#: one record, shared through ``sys.modules`` under this name (a new layout gets a new name):
#: ``end`` (perf_counter when the latest copy's pass that ran tasks ended), ``spent`` (seconds
#: those passes spent in the current pass of the event loop), ``count`` (how many ran tasks in
#: it) and ``previous`` (how many in the pass before). Main thread only, like the timers.
SHARED_PASS_RECORD = "_mainthread_tasks_shared_pass_1"
#: A copy's timer that starts this soon after another copy's pass ended runs in the same
#: event-loop pass (Blender calls the timers one after the other; a pass takes ~5 ms or more).
SAME_PASS_WITHIN = 0.0005


_shared = shared_record(
    SHARED_PASS_RECORD,
    "What the copies of mainthread_tasks spent in this pass.",
    end=0.0,
    spent=0.0,
    count=0,
    previous=0,
)
_clock = perf_counter
_qsize = _queue.qsize
_held = _queue.held  # tasks held during a render/bake/composite job (see _hold)


def _no_jobs(_job_type: str) -> bool:
    return False


#: bpy.app.is_job_running, bound at register() (Blender without it: never hold).
_is_job_running = _no_jobs

# The timer's state (its timings shown in the preferences are in _pacing). Main thread only (_drain_timer).
_pass_end = 0.0  #: perf_counter() when the latest pass that ran tasks ended (or register())
_queue_empty_at = 0.0  #: perf_counter() when a pass last saw the queue empty (idle passes too)
_sources_left_work = False  #: the latest sources pass left work ready (coroutine steps): a backlog


def _drain_timer() -> float:
    # The bpy.app.timers callback. It must never raise: Blender drops a timer that raises, for good.
    # Idle, it would run ~190 times a second, each time with the CPU caches cold after Blender's 5 ms
    # sleep: measured here, any timer that runs every pass costs 0.1-0.4% of a core that way, and
    # the old idle path with its statistics took ~11 us of Python a call (an empty function 2-3 us).
    # So an idle pass only checks the queue and reads the clock, and after a quiet spell the timer
    # polls every IDLE_POLL, later LONG_IDLE_POLL seconds instead of every pass (README,
    # "Performance"). Work found puts it back to every pass.
    global _queue_empty_at
    if _qsize() or _held or HOLD.reason:
        if _jobs_hold():
            return _hold.HOLD_POLL
        if _qsize() or _held:
            _run_pass()
            return 0.0
    now = _queue_empty_at = _clock()
    if SOURCES.all:
        return _sources_pass(now)
    return _idle_interval(now)


def _jobs_hold() -> bool:
    """While a render/bake/composite job runs, hold the queue instead of running it (see _hold);
    True while held. At the end of a hold the next passes run the held tasks. Never raises."""
    global _pass_end
    try:
        reason = _hold.job_running(_is_job_running)
    except BaseException:  # see _drain_timer
        logger.exception("mainthread_tasks: checking for render/bake/composite jobs failed")
        return False
    if reason:
        try:
            _hold.hold_pass(reason, PACING.tick_budget)
        except BaseException:  # a ui_only task's Ctrl-C, say: still held
            logger.exception("mainthread_tasks: a pass holding the queue was interrupted")
        return True
    if HOLD.reason:
        _hold.release()
        _pass_end = _clock()  # as after work: poll every pass while the held tasks drain
        PACING.forget()  # Blender's part of the passes during the job says nothing now
    return False


def _idle_interval(now: float) -> float:
    quiet = now - _pass_end
    if quiet < IDLE_AFTER:
        return 0.0
    return IDLE_POLL if quiet < LONG_IDLE_AFTER else LONG_IDLE_POLL


def _sources_pass(now: float) -> float:
    """A pass with the queue empty while sources (process results, the asyncio loop) exist.

    Polls them when one is busy or due, within the tick budget (paced like the queue's passes,
    see Pacing.paced_budget); then sleeps no longer than the idle rules allow, nor past the soonest
    due(). Never raises (see _drain_timer).
    """
    global _pass_end, _sources_left_work
    if _jobs_hold():  # process results and coroutine steps may change data too
        return _hold.HOLD_POLL
    due = None
    try:
        due = SOURCES.due()
        if due is not None and due <= 0.0:
            budget = PACING.paced_budget(now - _pass_end if _sources_left_work else None)
            if SOURCES.poll(now + budget):
                _pass_end = _clock()
            due = SOURCES.due()
    except BaseException:
        logger.exception("mainthread_tasks: polling the sources interrupted the timer pass")
    _sources_left_work = due is not None and due <= 0.0
    interval = _idle_interval(now)
    return interval if due is None or interval <= due else max(due, 0.0)


def _run_pass() -> None:
    """A timer pass that found tasks: run them within this pass's budget, keep the timings."""
    global _pass_end, _queue_empty_at
    started = _clock()
    try:
        # In a backlog (the pass before this one ran tasks and left some), Blender's own part of
        # the pass since then paces this one (see Pacing.paced_budget).
        rest = started - _pass_end if _pass_end > _queue_empty_at else None
        budget = PACING.paced_budget(rest)
        if rest is not None:
            PACING.record_backlog_pass(rest, COUNTERS.last_tick)
        # Other copies of the library that ran tasks earlier in this event-loop pass (see
        # SHARED_PASS_RECORD) already spent part of it.
        shared = _shared
        if not 0.0 <= started - shared.end <= SAME_PASS_WITHIN:  # no other copy ran tasks in this pass yet
            shared.previous, shared.count, shared.spent = shared.count, 0, 0.0
        if shared.previous > 1 or shared.spent:  # other copies have work: split the budget
            budget = max(budget * MIN_BUDGET_SHARE, min(budget / max(shared.previous, 1), budget - shared.spent))
        shared.count += 1
        if SOURCES.all:
            # Process results and coroutine steps share the pass's budget: at most half of it, so
            # that neither they nor the queue can starve the other.
            SOURCES.poll(started + budget * 0.5)
            budget = max(budget * MIN_BUDGET_SHARE, budget - (_clock() - started))
        PACING.pass_budget = budget
        if run_for(budget):
            # No queued task is older than the last moment the queue was seen empty. This bound
            # costs nothing per task (tasks carry no timestamp).
            PACING.record_wait(started - _queue_empty_at)
        _pass_end = _clock()
        if not _qsize() and not _held:
            _queue_empty_at = _pass_end
    except BaseException:  # see _drain_timer; the task's own failure is already recorded
        _pass_end = _clock()
        logger.exception("mainthread_tasks: a task interrupted the timer pass; the queue keeps running")
    _shared.spent += _pass_end - started
    _shared.end = _pass_end


def _bpy() -> Any:
    """The ``bpy`` module, or None on plain Python. (Any: the real module or fake-bpy-module.)"""
    try:
        import bpy
    except ImportError:  # plain Python: nothing to drive, pump()/joined_threads() still work
        return None
    return bpy


def in_blender_ui() -> bool:
    """True inside Blender's UI, where the add-on's timer drains the queue; False headless (the
    binary's ``--background``, the ``bpy`` module), and on plain Python."""
    bpy = _bpy()
    return bpy is not None and getattr(getattr(bpy, "app", None), "background", True) is False


def _is_enabled_addon(bpy: Any) -> bool:
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
    global _pass_end, _queue_empty_at, _is_job_running
    LIFECYCLE.acquire()
    try:
        bpy = _bpy()
        if bpy is None:
            return
        _is_job_running = getattr(bpy.app, "is_job_running", _no_jobs)
        _strict.enable_from_environment()  # MAINTHREAD_TASKS_STRICT=1
        timers = bpy.app.timers
        if not timers.is_registered(_drain_timer):
            _pass_end = _queue_empty_at = _clock()
            # persistent: survive File > New/Open; first_interval 0: start on the next pass.
            timers.register(_drain_timer, first_interval=0.0, persistent=True)
        if _is_enabled_addon(bpy):
            from . import _preferences

            _preferences.register()
        if in_blender_ui():
            from . import _progress_ui  # the status-bar display of progress()

            _progress_ui.register()
    except BaseException:
        # Roll back: Blender's addon_utils deletes the module of an add-on whose register() raised.
        if not LIFECYCLE.release():
            _remove_blender_side()
        raise


def unregister() -> None:
    """Undo one register(). The last one stops the scheduler and removes the timer. Main thread.

    On stop, queued Futures are cancelled, threads blocked in ``call_on_main`` raise
    SchedulerStopped, and submissions raise SchedulerStopped until the next register(). Never
    raises for an extra call or a timer that is already gone.
    """
    if LIFECYCLE.release():
        return
    _remove_blender_side()


def _remove_blender_side() -> None:
    bpy = _bpy()
    if bpy is None:
        return
    _strict.disable_if_enabled_here()
    for name in ("_progress_ui", "_preferences"):  # imported only if they were used
        module = sys.modules.get(f"{__package__}.{name}")
        if module is not None:
            module.unregister()
    timers = bpy.app.timers
    if timers.is_registered(_drain_timer):
        timers.unregister(_drain_timer)
