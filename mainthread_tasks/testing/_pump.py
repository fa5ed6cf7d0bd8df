"""``pump_until``, and ``bpy.app.timers`` that fire while it runs (Blender never fires them headless).

Blender keeps its timers in one list (``BLI_timer.cc``) and, once per pass of its event loop, calls
each whose time has come: ``register(function, *, first_interval=0, persistent=False)`` makes it
due ``first_interval`` seconds later; a callback that returns a number is due again that many
seconds (at least 0) after the start of the pass that called it; ``None``, an exception or any
other value unregisters it (the exception is printed, ``bpy_app_timers.cc``); loading a file drops
the timers that are not ``persistent``. Under ``--background`` that loop never runs, so the
callbacks never run either, and in the UI it does not run while a test's code does.

``HeadlessTimers`` stands in for ``register``/``unregister`` while the kit's plugin runs: each call
still goes to Blender (which checks the arguments, raises ``ValueError`` for an unknown function and
answers ``is_registered``), and the kit also notes when the timer is due. ``pump_until`` then calls
the due ones by Blender's rules above. Standard library only; ``bpy`` is imported where needed.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from typing import Any

from .._errors import NotMainThreadError
from .._threadinfo import is_main_thread

__all__ = ("HeadlessTimers", "library_copies", "pending_work", "pump_until")

#: How long pump_until sleeps at most between two looks at its predicate when nothing happens: a
#: pass of Blender's idle event loop (it sleeps 5 ms per idle pass).
SLICE_SECONDS = 0.005

#: What a timer callback, a handler or a thread raised: (kind, where, exception). Kinds: "timers",
#: "handlers", "threads", "logged" (an error mainthread_tasks logged: a post_on_main task's).
ErrorSink = Callable[[str, str, BaseException], None]


class _Timer:
    """A registered timer as the kit sees it: when it is due next (time.monotonic())."""

    __slots__ = ("due", "function", "persistent", "test")

    def __init__(self, function: Callable[[], object], due: float, persistent: bool, test: str | None) -> None:
        self.function = function
        self.due = due
        self.persistent = persistent
        self.test = test  #: the test that registered it (None: before any test)


def _name(function: object) -> str:
    name = getattr(function, "__qualname__", None)
    module = getattr(function, "__module__", None)
    if isinstance(name, str):
        return f"{module}.{name}" if isinstance(module, str) else name
    return repr(function)


class HeadlessTimers:
    """``bpy.app.timers.register``/``unregister`` that also note when each timer is due, so that
    ``pump_until`` can call them as Blender's event loop would (see the module docstring)."""

    def __init__(self, module: Any) -> None:
        self.module = module  # Any: bpy.app.timers, a module made in C
        self.real_register: Any = module.register
        self.real_unregister: Any = module.unregister
        self.timers: list[_Timer] = []  # in registration order, as Blender calls them
        self.test: str | None = None  #: the test running now (set by the plugin)
        self.on_error: ErrorSink | None = None  #: where a callback's exception goes (the plugin)

    # -- standing in for bpy.app.timers ---------------------------------------------------------

    def register(
        self, function: Callable[[], object], *, first_interval: float = 0.0, persistent: bool = False
    ) -> None:
        self.real_register(function, first_interval=first_interval, persistent=persistent)  # Blender checks them
        due = time.monotonic() + float(first_interval)
        self.timers.append(_Timer(function, due, bool(persistent), self.test))

    def unregister(self, function: Callable[[], object]) -> None:
        self.real_unregister(function)  # ValueError if it is not registered, as always
        self._forget(function)

    def install(self) -> None:
        self.module.register = self.register
        self.module.unregister = self.unregister

    def uninstall(self) -> None:
        # Only where ours are still in place (strict_mode may have wrapped them meanwhile).
        if self.module.register == self.register:
            self.module.register = self.real_register
        if self.module.unregister == self.unregister:
            self.module.unregister = self.real_unregister

    # -- the kit's side ---------------------------------------------------------------------------

    def _forget(self, function: object, entry: _Timer | None = None) -> None:
        for i, timer in enumerate(self.timers):
            if timer is entry or (entry is None and timer.function is function):
                del self.timers[i]
                return

    def on_file_load(self) -> None:
        """A file is loading: Blender drops the timers that are not persistent; so does the kit."""
        self.timers = [timer for timer in self.timers if timer.persistent]

    def registered_by(self, test: str) -> list[_Timer]:
        """The timers ``test`` registered that are still registered."""
        return [timer for timer in self.timers if timer.test == test]

    def drop(self, timer: _Timer) -> None:
        """Unregister ``timer`` (a leak the kit reported)."""
        self._forget(timer.function, timer)
        try:
            self.real_unregister(timer.function)
        except ValueError:  # gone already
            pass

    def next_due(self) -> float | None:
        return min((timer.due for timer in self.timers), default=None)

    def fire_due(self) -> int:
        """One pass of Blender's timer loop: call every timer that is due; return how many ran."""
        now = time.monotonic()  # like Blender: one time for the whole pass
        ran = 0
        for timer in list(self.timers):
            if timer.due > now or not any(t is timer for t in self.timers):
                continue  # not due, or unregistered by a callback earlier in this pass
            ran += 1
            try:
                returned = timer.function()
            except BaseException as exc:
                self._end(timer)
                self._report("timers", f"bpy.app.timers callback {_name(timer.function)}", exc)
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                continue
            if not any(t is timer for t in self.timers):
                continue  # it unregistered itself
            if returned is None:
                self._end(timer)
                continue
            interval = _as_interval(returned)
            if interval is None:
                # Blender prints "did not return None or float" and drops it: a bug worth a failure.
                self._end(timer)
                error = TypeError(
                    f"bpy.app.timers callback {_name(timer.function)} returned {returned!r}: not None or a "
                    "number of seconds; Blender prints an error and unregisters the timer"
                )
                self._report("timers", f"bpy.app.timers callback {_name(timer.function)}", error)
                continue
            timer.due = now + interval
        return ran

    def _end(self, timer: _Timer) -> None:
        self.drop(timer)

    def _report(self, kind: str, where: str, exc: BaseException) -> None:
        # Blender prints the traceback of a failed callback; so does the kit, then hands it on.
        print(f"Error in {where}:", file=sys.stderr)
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        if self.on_error is not None:
            self.on_error(kind, where, exc)


def _as_interval(value: object) -> float | None:
    # What PyFloat_AsDouble accepts: floats, ints and objects with __float__ or __index__.
    if isinstance(value, (str, bytes, bytearray)):
        return None
    try:
        return max(float(value), 0.0)  # type: ignore[arg-type]  # checked at run time, like Blender
    except (TypeError, ValueError):
        return None


#: The timers of the running plugin, if any (pump_until also works without: then it only pumps).
active_timers: HeadlessTimers | None = None


def library_copies() -> list[types.ModuleType]:
    """Every copy of mainthread_tasks loaded here: the add-on, copies bundled in other add-ons or
    extensions (``<addon>.mainthread_tasks``, ``bl_ext.<repo>.mainthread_tasks``), the kit's own.
    Each has its own queue."""
    copies: list[types.ModuleType] = []
    for name, module in list(sys.modules.items()):
        if name.rpartition(".")[2] != "mainthread_tasks" or not isinstance(module, types.ModuleType):
            continue
        if callable(getattr(module, "pump", None)) and callable(getattr(module, "stats", None)):
            if not any(module is known for known in copies):
                copies.append(module)
    return copies


def _coroutines(copy: types.ModuleType) -> int:
    # No public count of unfinished coroutines: the loop's own records (tasks, and coroutines
    # handed to run_async whose task does not exist yet).
    source = getattr(sys.modules.get(f"{copy.__name__}._async"), "_source", None)
    if source is None or getattr(source, "stopping", None) is not None:
        return 0
    return len(getattr(source, "tasks", ())) + len(getattr(source, "starting", ()))


def pending_work(copy: types.ModuleType) -> dict[str, int]:
    """What ``copy`` of the library still has to do: queued main-thread tasks, process tasks not
    finished, coroutines not finished."""
    stats = copy.stats()
    return {
        "tasks": stats.pending,
        "processes": getattr(stats, "process_pending", 0) + getattr(stats, "process_running", 0),
        "coroutines": _coroutines(copy),
    }


def _describe_pending(copies: list[types.ModuleType], timers: HeadlessTimers | None) -> str:
    parts = []
    for copy in copies:
        work = {kind: n for kind, n in pending_work(copy).items() if n}
        if work:
            what = ", ".join(f"{n} {kind}" for kind, n in work.items())
            parts.append(f"{copy.__name__} ({getattr(copy, '__file__', '?')}): {what}")
    if timers is not None and timers.timers:
        now = time.monotonic()
        parts.append(
            "timers: "
            + ", ".join(f"{_name(t.function)} due in {max(t.due - now, 0.0):.3f} s" for t in timers.timers[:10])
        )
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()]
    if others:
        parts.append(f"threads alive: {', '.join(others[:10])}")
    return "; ".join(parts) or "nothing"


def pump_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Run main-thread work until ``predicate()`` is true. Main thread.

    Runs what every copy of mainthread_tasks loaded here has for the main thread (queued tasks,
    process results, coroutine steps: each copy's ``pump()``) and, under the kit's plugin, the
    ``bpy.app.timers`` callbacks that are due, as Blender's event loop would. Between two looks at
    ``predicate`` it sleeps no longer than an idle pass of Blender's event loop (5 ms), less when a
    task comes in or a timer is due.

    Raises:
        TimeoutError: ``predicate()`` is still false after ``timeout`` seconds; the message says
            what was still pending (tasks, process tasks, coroutines, timers, threads).
        NotMainThreadError: called from another thread.
    """
    if not is_main_thread():
        raise NotMainThreadError("pump_until() runs main-thread work, so only the main thread may call it")
    deadline = time.monotonic() + timeout
    copies = library_copies()
    while True:
        if predicate():
            return
        timers = active_timers
        ran = timers.fire_due() if timers is not None else 0
        for copy in copies:
            ran += copy.pump(0)
        if ran:
            continue
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(
                f"pump_until({_name(predicate)}) was still false after {timeout} s; "
                f"still pending: {_describe_pending(copies, timers)}"
            )
        wait = min(SLICE_SECONDS, deadline - now)
        due = timers.next_due() if timers is not None else None
        if due is not None:
            wait = max(0.0, min(wait, due - now))
        if len(copies) == 1:
            copies[0].pump(wait)  # wakes as soon as a task is queued or a source is ready
        else:
            time.sleep(wait)
