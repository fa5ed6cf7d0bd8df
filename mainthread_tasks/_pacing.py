"""The tick budget and the timings of the UI timer's passes (no bpy).

``_blender`` (the timer) writes the timings and reads the budget; ``_preferences`` (the panel)
shows the timings and sets the budget. Both import this module and neither imports the other at
import time, so there is no import circle between them.
"""

from __future__ import annotations

import math
import numbers

__all__ = ("reset_pass_stats", "set_tick_budget")

#: Seconds of queued work one Blender event-loop pass may run before the UI gets to redraw. An idle
#: pass takes ~5 ms, so 4 ms of tasks per pass keeps the UI above ~100 passes/s under any backlog.
DEFAULT_TICK_BUDGET = 0.004
TICK_BUDGET_RANGE = (0.0001, 1.0)
tick_budget = DEFAULT_TICK_BUDGET

# The timings shown in the preferences. Written by the timer (main thread only).
# Between two passes in a row that both ran tasks (a backlog draining):
pass_interval = 0.0  #: time between their starts: the interface's frame time while the queue drains
blender_part = 0.0  #: of that, Blender's own part (events, redraw, its 5 ms idle sleep)
# At the latest pass that ran tasks:
pass_budget = 0.0  #: the budget it got: tick_budget, less if Blender's part before it ran long
queue_wait = 0.0  #: upper bound of how long its tasks had waited
longest_queue_wait = 0.0

# The pacing history (see _blender._paced_budget). Main thread only.
rests: list[float] = []  #: Blender's own part of the latest passes of this backlog (a ring)
rest_slot = 0


def set_tick_budget(seconds: float) -> float:
    """Set how long one Blender event-loop pass may spend running queued tasks; return the old value.

    Any thread; applies from the next pass. A task already started is never interrupted, so a pass
    lasts at most the budget plus one task; what is left runs in the next passes. A smaller budget
    keeps the UI smoother under a backlog, a larger one drains a backlog in fewer passes. When
    Blender's own part of a pass ran longer than it usually does (a slow redraw, a late wake-up),
    the next pass gives the overrun back, down to 1/8 of the budget, so that passes stay evenly
    spaced. Copies of the library in one Blender (the installed add-on, a bundled wheel, a vendored
    copy) share each pass: a copy's pass gets what the copies that ran before it in the same pass
    left of its budget (at least 1/8 of it), an equal share when several had work in the pass
    before. The add-on's preferences ("Tick budget") set the same value.

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
    """Zero the pass timings shown in the preferences and forget the pacing history. Main thread."""
    global pass_interval, blender_part, pass_budget, queue_wait, longest_queue_wait
    pass_interval = blender_part = pass_budget = queue_wait = longest_queue_wait = 0.0
    forget_pacing()


def forget_pacing() -> None:
    """Forget Blender's part of the earlier passes: the next backlog starts a fresh history. Main thread."""
    global rest_slot
    rests.clear()
    rest_slot = 0
