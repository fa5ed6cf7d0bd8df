"""``stats()``: a snapshot of every part's counters (no bpy). Any thread.

Each part keeps its own counters -- the dispatcher (``_dispatch.COUNTERS``), the lifecycle's
cancellations at stop, the hold (``_hold.HOLD``), the process pool (``_process.counts``) -- and this
module only reads them: adding a counter is a field here plus the line that reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _process, _queue
from ._args import task_name
from ._dispatch import COUNTERS
from ._hold import HOLD
from ._lifecycle import LIFECYCLE

__all__ = ("Stats", "reset_stats", "stats")


@dataclass(frozen=True)
class Stats:
    """A snapshot of the scheduler, from ``stats()``.

    ``submitted`` counts tasks accepted into the queue (a submission refused with SchedulerStopped
    is not counted), so ``submitted == completed + failed + cancelled + pending (+1 while a task
    runs)``. Times are in seconds.
    """

    submitted: int  #: tasks accepted: completed + failed + cancelled + pending (+1 while one runs)
    completed: int  #: ran and returned
    failed: int  #: ran and raised (post_on_main failures are also logged)
    cancelled: int  #: never ran: cancelled by the caller, or by unregister()/exit
    pending: int  #: queued, not yet started
    running: str | None  #: name of the task running on the main thread right now, if any
    accepting: bool  #: False after the last unregister() or at exit: submissions raise SchedulerStopped
    registered: int  #: how many register() calls are outstanding
    ticks: int  #: Blender timer passes that found tasks to run (0 in --background: timers never fire)
    last_tick: float  #: time the latest of those passes spent running tasks
    longest_tick: float  #: longest such pass: the worst UI stall the queue caused
    longest_task: float  #: longest single task
    longest_task_name: str
    slow_tasks: int  #: tasks that took longer than ``_dispatch.slow_task_seconds`` (each is logged)
    # run_in_process: process_submitted == process_completed + process_failed + process_cancelled
    # + process_pending + process_running.
    processes: int = 0  #: worker processes alive
    process_submitted: int = 0  #: tasks accepted by run_in_process
    process_completed: int = 0  #: returned a result
    process_failed: int = 0  #: raised, lost with a dead worker, or stopped while running
    process_cancelled: int = 0  #: never started: cancelled, or dropped when the pool stopped
    process_pending: int = 0  #: waiting for a free worker process
    process_running: int = 0  #: in a worker process now
    #: The UI timer holds the queue: a render, bake or composite job is running, and tasks that
    #: change data would fail or crash Blender; they run once it ends (``ui_only`` tasks run now).
    held: bool = False
    held_reason: str = ""  #: why, e.g. "a RENDER job is running"; "" when not held
    holds: int = 0  #: how many times the UI timer began holding the queue


def stats() -> Stats:
    """Return a snapshot of the counters. Any thread."""
    counters = COUNTERS
    pending = _queue.pending()
    running_fn = counters.running
    running = None if running_fn is None else task_name(running_fn)
    cancelled = counters.cancelled + LIFECYCLE.cancelled_at_stop
    return Stats(
        submitted=counters.completed + counters.failed + cancelled + pending + (running is not None),
        completed=counters.completed,
        failed=counters.failed,
        cancelled=cancelled,
        pending=pending,
        running=running,
        accepting=LIFECYCLE.stopped is None,
        registered=LIFECYCLE.users,
        ticks=counters.ticks,
        last_tick=counters.last_tick,
        longest_tick=counters.longest_tick,
        longest_task=counters.longest_task,
        longest_task_name=counters.longest_task_name,
        slow_tasks=counters.slow_tasks,
        **_process.counts(),
        held=bool(HOLD.reason),
        held_reason=HOLD.reason,
        holds=HOLD.holds,
    )


def reset_stats() -> None:
    """Zero the counters (pending work is untouched). Main thread."""
    COUNTERS.reset()
    LIFECYCLE.reset_count()
    HOLD.holds = 0
    _process.reset_counts()
