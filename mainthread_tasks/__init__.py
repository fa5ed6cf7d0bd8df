"""mainthread_tasks: worker threads hand work to Blender's main thread.

``bpy`` is not thread-safe. Threads may do I/O and waiting; every ``bpy`` call goes through
``run_on_main`` / ``call_on_main`` / ``post_on_main`` (or ``@main_thread``) and runs on the main
thread: from a Blender timer in the UI, from ``pump()`` and what calls it in ``--background``.
For add-ons: ``ui_context()`` gives operators the area they need, ``progress()`` shows long work
with a cancel button, tasks wait while a render or bake runs (``ui_only()`` opts out), and
``strict_mode()`` makes ``bpy`` used from a worker thread fail loudly (docs/ui.md).
"""

from __future__ import annotations

import typing  # the module, not its names: the package's public names are exactly __all__

from ._async import main_loop, run_async
from ._blender import register, unregister
from ._dispatch import pump
from ._errors import MainThreadTasksError, NoSuchArea, NotMainThreadError, SchedulerStopped, ThreadsStillRunning
from ._future import MainThreadFuture
from ._headless import run_forever
from ._hold import ui_only
from ._pacing import set_tick_budget
from ._process import ProcessPool, run_in_process, set_process_workers
from ._progress import Progress, progress
from ._stats import Stats, stats
from ._strict import strict_mode
from ._submit import call_on_main, main_thread, post_on_main, run_on_main
from ._threadinfo import is_main_thread
from ._threads import ThreadScope, joined_threads
from ._ui import ui_context

if typing.TYPE_CHECKING:  # made on first use at run time: see __getattr__ below
    from ._errors import ProcessDied

__all__ = (
    "MainThreadFuture",
    "MainThreadTasksError",
    "NoSuchArea",
    "NotMainThreadError",
    "ProcessDied",
    "ProcessPool",
    "Progress",
    "SchedulerStopped",
    "Stats",
    "ThreadScope",
    "ThreadsStillRunning",
    "call_on_main",
    "is_main_thread",
    "joined_threads",
    "main_loop",
    "main_thread",
    "post_on_main",
    "progress",
    "pump",
    "register",
    "run_async",
    "run_forever",
    "run_in_process",
    "run_on_main",
    "set_process_workers",
    "set_tick_budget",
    "stats",
    "strict_mode",
    "ui_context",
    "ui_only",
    "unregister",
)

__version__ = "0.1.0"


def __getattr__(name: str) -> type[ProcessDied]:
    # ProcessDied is made on first use: see _errors.process_died().
    if name == "ProcessDied":
        from ._errors import process_died

        globals()[name] = value = process_died()
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Legacy add-on metadata (Blender <= 4.1); Blender >= 4.2 reads blender_manifest.toml instead.
# "blender": the oldest series a tier runs the legacy add-on in (install-legacy-blender: 3.4.1).
bl_info = {
    "name": "Main Thread Tasks",
    "author": "mainthread_tasks developers",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Edit > Preferences > Add-ons > Main Thread Tasks",
    "description": "Lets worker threads run bpy work safely on Blender's main thread",
    "category": "Development",
}
