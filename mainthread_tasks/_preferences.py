"""The add-on's preferences panel: the tick budget and a live view of ``stats()``. Blender only.

Imported by ``_blender.register()`` only while this package is an enabled add-on (it has an entry
in Edit > Preferences > Add-ons), never at package import. A copy of the library bundled inside
another add-on has no panel and keeps the default budget unless that add-on calls
``set_tick_budget()``.
"""

from __future__ import annotations

import logging

import bpy

from . import _pacing, _stats

__all__ = ("register", "unregister")

logger = logging.getLogger("mainthread_tasks")

ADDON_MODULE = __package__  # "mainthread_tasks" (legacy add-on) or "bl_ext.<repo>.mainthread_tasks"
REDRAW_INTERVAL = 0.5  # seconds between refreshes of an open preferences window
_registered = False  # the classes below are registered with Blender


def _tick_budget_changed(prefs: MainThreadTasksPreferences, _context: bpy.types.Context) -> None:
    _pacing.set_tick_budget(prefs.tick_budget_ms / 1000.0)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000.0:.2f} ms"


class MAINTHREADTASKS_OT_reset_stats(bpy.types.Operator):
    bl_idname = "mainthread_tasks.reset_stats"
    bl_label = "Reset Statistics"
    bl_description = "Zero the counters and the longest timings (queued tasks are not touched)"
    bl_options = {"INTERNAL"}

    def execute(self, _context: bpy.types.Context) -> set[str]:
        _stats.reset_stats()
        _pacing.reset_pass_stats()
        return {"FINISHED"}


class MainThreadTasksPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_MODULE

    tick_budget_ms: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Tick Budget (ms)",
        description=(
            "Milliseconds of queued tasks one event-loop pass may run before the interface redraws. "
            "Smaller keeps the interface smoother under a backlog, larger drains it in fewer passes"
        ),
        default=_pacing.DEFAULT_TICK_BUDGET * 1000.0,
        min=_pacing.TICK_BUDGET_RANGE[0] * 1000.0,
        max=100.0,
        soft_max=20.0,
        step=10,
        precision=1,
        update=_tick_budget_changed,
    )

    def draw(self, _context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "tick_budget_ms")
        s = _stats.stats()
        rows = (
            ("Pending", str(s.pending), "Running", s.running or "-"),
            ("Completed", str(s.completed), "Failed", str(s.failed)),
            ("Cancelled", str(s.cancelled), "Add-ons using it", str(s.registered)),
            ("Passes with tasks", str(s.ticks), "Latest budget", _ms(_pacing.PACING.pass_budget)),
            ("Latest pass", _ms(s.last_tick), "Longest pass", _ms(s.longest_tick)),
            ("Pass interval", _ms(_pacing.PACING.pass_interval), "Blender's part", _ms(_pacing.PACING.blender_part)),
            (
                "Queue wait \u2264",
                _ms(_pacing.PACING.queue_wait),
                "Longest wait \u2264",
                _ms(_pacing.PACING.longest_queue_wait),
            ),
            ("Longest task", _ms(s.longest_task), "", s.longest_task_name),
        )
        box = layout.box()
        if not s.accepting:
            box.label(text="Stopped: submissions raise SchedulerStopped", icon="ERROR")
        grid = box.grid_flow(row_major=True, columns=4, even_columns=False, align=True)
        for row in rows:
            for text in row:
                grid.label(text=text)
        layout.operator(MAINTHREADTASKS_OT_reset_stats.bl_idname, icon="LOOP_BACK")


CLASSES = (MAINTHREADTASKS_OT_reset_stats, MainThreadTasksPreferences)


def _redraw_timer() -> float:
    # Panels redraw only when told to: refresh an open Preferences window so the numbers are live.
    # Must never raise (Blender drops a timer that raises).
    try:
        window_manager = bpy.context.window_manager
        for window in window_manager.windows if window_manager else ():
            for area in window.screen.areas:
                if area.type == "PREFERENCES":
                    area.tag_redraw()
    except Exception:
        logger.exception("mainthread_tasks: could not refresh the preferences window")
    return REDRAW_INTERVAL


def register() -> None:
    """Register the panel unless it is registered. Main thread; only while this package is an add-on.

    Applies the saved tick budget: preferences saved in a previous session take effect at start-up.
    """
    global _registered
    if _registered:
        return
    try:
        for cls in CLASSES:
            bpy.utils.register_class(cls)
        _registered = True
        prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences  # type: ignore[union-attr]  # set while add-ons register
        _pacing.set_tick_budget(prefs.tick_budget_ms / 1000.0)
        if not bpy.app.timers.is_registered(_redraw_timer):
            bpy.app.timers.register(_redraw_timer, first_interval=REDRAW_INTERVAL, persistent=True)
    except BaseException:
        unregister()
        raise


def unregister() -> None:
    """Remove the panel and its refresh timer; harmless when they are not registered. Main thread."""
    global _registered
    if bpy.app.timers.is_registered(_redraw_timer):
        bpy.app.timers.unregister(_redraw_timer)
    for cls in reversed(CLASSES):
        if cls.is_registered:  # type: ignore[union-attr]  # every bpy_struct class has it; the stubs lack it
            bpy.utils.unregister_class(cls)
    _registered = False
