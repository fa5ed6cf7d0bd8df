"""The tick budget and the timings of the UI timer's passes (no bpy).

``_blender`` (the timer) asks ``PACING`` for each pass's budget and records what the pass did;
``_preferences`` (the panel) shows the timings and sets the budget. Both import this module and
neither imports the other at import time, so there is no import circle between them.
"""

from __future__ import annotations

import math
import numbers

__all__ = ("PACING", "Pacing", "reset_pass_stats", "set_tick_budget")

#: Seconds of queued work one Blender event-loop pass may run before the UI gets to redraw. An idle
#: pass takes ~5 ms, so 4 ms of tasks per pass keeps the UI above ~100 passes/s under any backlog.
DEFAULT_TICK_BUDGET = 0.004
TICK_BUDGET_RANGE = (0.0001, 1.0)
#: However late Blender's own part of a pass ran, a pass that finds tasks gets at least this share
#: of the tick budget: the queue always moves.
MIN_BUDGET_SHARE = 0.125
#: How many recent passes tell what Blender's own part of a pass usually takes (their median).
PACING_SAMPLES = 9


class Pacing:
    """The tick budget, the pacing history, and the timings shown in the preferences.

    The budget is set from any thread (``set_tick_budget``); everything else is written by the
    timer, on the main thread.
    """

    __slots__ = (
        "tick_budget",
        "pass_interval",
        "blender_part",
        "pass_budget",
        "queue_wait",
        "longest_queue_wait",
        "_rests",
        "_rest_slot",
    )
    tick_budget: float
    pass_interval: float
    blender_part: float
    pass_budget: float
    queue_wait: float
    longest_queue_wait: float

    def __init__(self) -> None:
        self.tick_budget = DEFAULT_TICK_BUDGET
        self._rests: list[float] = []  # Blender's own part of the latest passes of this backlog (a ring)
        self._rest_slot = 0
        self.reset_pass_stats()

    def paced_budget(self, rest: float | None) -> float:
        """The budget of a pass that finds work; ``rest`` is Blender's own part since our previous
        pass, or None when that pass left no work (a new backlog).

        Pacing. In a backlog, Blender handled events, redrew and maybe slept since our previous pass
        ended: its own part of the pass. If that ran longer than its median over the latest passes
        of this backlog, the overrun is given back from this pass's budget, so that the time
        between two passes stays about budget + a usual pass (a longer redraw that persists becomes
        the usual within a few passes). A new backlog starts a fresh history: what Blender's passes
        took before it says little about now.
        """
        budget = self.tick_budget
        if rest is None:
            self.forget()
            return budget
        rests = self._rests
        if len(rests) < PACING_SAMPLES:
            rests.append(rest)
        else:
            rests[self._rest_slot] = rest
            self._rest_slot = (self._rest_slot + 1) % PACING_SAMPLES
        overrun = rest - sorted(rests)[len(rests) // 2]
        if overrun > 0.0:
            budget = max(budget * MIN_BUDGET_SHARE, budget - overrun)
        return budget

    def record_backlog_pass(self, rest: float, last_tick: float) -> None:
        """Between two passes in a row that both ran tasks (a backlog draining): Blender's own part
        (events, redraw, its 5 ms idle sleep), and the time between their starts, the interface's
        frame time while the queue drains."""
        self.blender_part, self.pass_interval = rest, rest + last_tick

    def record_wait(self, wait: float) -> None:
        """An upper bound of how long the tasks of the latest pass had waited."""
        self.queue_wait = wait
        if wait > self.longest_queue_wait:
            self.longest_queue_wait = wait

    def forget(self) -> None:
        """Forget Blender's part of the earlier passes: the next backlog starts a fresh history."""
        self._rests.clear()
        self._rest_slot = 0

    def reset_pass_stats(self) -> None:
        """Zero the pass timings shown in the preferences and forget the pacing history."""
        self.pass_interval = 0.0  #: between two passes that ran tasks: the time between their starts
        self.blender_part = 0.0  #: of that, Blender's own part
        self.pass_budget = 0.0  #: the budget the latest pass that ran tasks got
        self.queue_wait = 0.0  #: upper bound of how long its tasks had waited
        self.longest_queue_wait = 0.0
        self.forget()

    def reset(self) -> None:
        """For tests: the default budget, no timings, no history."""
        self.tick_budget = DEFAULT_TICK_BUDGET
        self.reset_pass_stats()


PACING = Pacing()


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
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
        raise TypeError(f"set_tick_budget(): seconds must be a number, got {seconds!r}")
    low, high = TICK_BUDGET_RANGE
    if math.isnan(seconds) or not low <= seconds <= high:
        raise ValueError(f"set_tick_budget(): seconds must be within {low:g} .. {high:g}, got {seconds!r}")
    previous, PACING.tick_budget = PACING.tick_budget, float(seconds)
    return previous


def reset_pass_stats() -> None:
    """Zero the pass timings shown in the preferences and forget the pacing history. Main thread."""
    PACING.reset_pass_stats()
