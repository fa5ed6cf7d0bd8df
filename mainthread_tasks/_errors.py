"""The exceptions raised by mainthread_tasks (no bpy, no state but ``ProcessDied``, made on first use)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

__all__ = (
    "MainThreadTasksError",
    "NoSuchArea",
    "SchedulerStopped",
    "NotMainThreadError",
    "ProcessDied",
    "ThreadsStillRunning",
)


class MainThreadTasksError(Exception):
    """Base class of every error raised by mainthread_tasks."""


class SchedulerStopped(MainThreadTasksError, RuntimeError):
    """The scheduler is not accepting work: the last ``unregister()`` ran, or Python is exiting.

    Raised by submissions made while stopped, and in threads that were blocked in
    ``call_on_main`` when it stopped. Call ``register()`` to accept work again.
    """


class NotMainThreadError(MainThreadTasksError, RuntimeError):
    """A main-thread-only function (``pump``, ``joined_threads``, ``ui_context``) was called from
    another thread, or, in strict mode, a worker thread called into Blender (``bpy.ops``,
    ``bpy.app.timers.register``...).

    Worker threads submit work with ``run_on_main``/``call_on_main``/``post_on_main``; only the
    main thread runs it.
    """


class ThreadsStillRunning(MainThreadTasksError, TimeoutError):
    """``joined_threads`` reached its timeout with threads still alive.

    ``threads`` holds the ``threading.Thread`` objects that were still running.
    """

    def __init__(self, threads: Iterable[threading.Thread], timeout: float) -> None:
        self.threads = tuple(threads)  #: the threading.Thread objects still alive at the timeout
        self.timeout = timeout  #: the timeout, in seconds
        names = ", ".join(repr(t.name) for t in self.threads)
        super().__init__(
            f"{len(self.threads)} thread(s) still running after {timeout:g} s: {names}; "
            "make them finish (or pass a longer timeout) before the block ends"
        )


class NoSuchArea(MainThreadTasksError, LookupError):
    """``ui_context()`` found no area of the requested type with the requested region in any window.

    ``area_type`` and ``region_type`` say what was looked for. The area may have been closed or
    changed to another editor, the file may have a layout without one, or Blender may have no
    window at all.
    """

    def __init__(self, message: str, area_type: str, region_type: str) -> None:
        self.area_type = area_type  #: the area type looked for, e.g. "VIEW_3D"
        self.region_type = region_type  #: the region type looked for, e.g. "WINDOW"
        super().__init__(message)


# ProcessDied subclasses concurrent.futures.process.BrokenProcessPool, and that module imports
# multiprocessing. In Debian's Blender 3.4.1 a --python script that imports multiprocessing makes
# Blender crash at exit (multiprocessing aliases sys.modules["__mp_main__"] to the script's
# temporary __main__, which Blender frees before addon_utils.disable_all() touches it). So the class
# is made on first use -- a worker process died, or somebody asked for mainthread_tasks.ProcessDied
# -- and that alias, when the import made it inside Blender, is removed again.

if TYPE_CHECKING:
    from concurrent.futures.process import BrokenProcessPool

    class ProcessDied(MainThreadTasksError, BrokenProcessPool):
        pass


_process_died: type[ProcessDied] | None = None
_process_died_lock = threading.Lock()  # must be held while making ProcessDied

_PROCESS_DIED_DOC = """A worker process of ``run_in_process`` died (``os._exit``, a crash, killed) while running a task.

Only that task's Future fails with it; a new worker process takes the next task. It is also a
``concurrent.futures.process.BrokenProcessPool``, like ProcessPoolExecutor's error for the same event.
"""


def process_died() -> type[ProcessDied]:
    """The ``ProcessDied`` class, made on first use (see above). Any thread."""
    global _process_died
    if _process_died is None:
        with _process_died_lock:
            if _process_died is None:
                had_multiprocessing = "multiprocessing" in sys.modules
                from concurrent.futures.process import BrokenProcessPool

                main = sys.modules.get("__main__")
                if (
                    not had_multiprocessing
                    and "bpy" in sys.modules
                    and main is not None
                    and sys.modules.get("__mp_main__") is main
                ):
                    del sys.modules["__mp_main__"]
                made = type("ProcessDied", (MainThreadTasksError, BrokenProcessPool), {"__doc__": _PROCESS_DIED_DOC})
                made.__module__ = __name__
                _process_died = made
    return _process_died


def __getattr__(name: str) -> type[ProcessDied]:
    if name == "ProcessDied":
        return process_died()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
