"""One test's watch: the snapshots taken before it, the hooks that catch errors that would only be
printed or logged, and what it left behind (threads, tasks, processes, coroutines, timers,
handlers); see the plugin's docstring."""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
import types
from dataclasses import dataclass
from typing import Any

import pytest

from . import _pump

#: How long a thread the test started may take to end after the test (the library's queue keeps
#: running meanwhile: a worker may be waiting on the main thread).
THREAD_GRACE_SECONDS = 2.0

#: The kinds of leak, for ``@pytest.mark.allow_leaks(...)``.
LEAK_KINDS = ("threads", "tasks", "processes", "coroutines", "timers", "handlers")
#: The kinds of error that would only be printed or logged, for ``@pytest.mark.allow_errors(...)``.
ERROR_KINDS = ("timers", "handlers", "threads", "logged")

logger_name = "mainthread_tasks"  # the library's logger: a post_on_main task's failure is logged there


@dataclass
class SwallowedError:
    """An exception that only got printed or logged: from a timer callback, a handler, a thread, or
    a task of mainthread_tasks (``post_on_main``)."""

    kind: str  #: "timers", "handlers", "threads" or "logged" (see ERROR_KINDS)
    where: str  #: which callback, thread or log message
    exception: BaseException

    def text(self) -> str:
        lines = traceback.format_exception(type(self.exception), self.exception, self.exception.__traceback__)
        return f"{self.kind}: {self.where}\n{''.join(lines)}"


class _LoggedError(Exception):
    """An error mainthread_tasks logged without an exception attached."""


def _handler_lists() -> dict[str, list[Any]]:
    import bpy

    handlers = bpy.app.handlers
    return {name: value for name in dir(handlers) if isinstance(value := getattr(handlers, name), list)}


def _code_of(function: object) -> types.CodeType | None:
    for candidate in (function, getattr(function, "__func__", None), getattr(function, "func", None)):
        code = getattr(candidate, "__code__", None)
        if isinstance(code, types.CodeType):
            return code
    return None


def _allowed(item: pytest.Item, marker_name: str, kinds: tuple[str, ...]) -> set[str]:
    """The kinds an ``allow_leaks``/``allow_errors`` marker lets pass (no arguments: all)."""
    allowed: set[str] = set()
    for marker in item.iter_markers(marker_name):
        if not marker.args:
            return set(kinds)
        for kind in marker.args:
            if kind not in kinds:
                raise pytest.UsageError(
                    f"{item.nodeid}: {marker_name}({kind!r}): unknown kind; choose from {', '.join(kinds)}"
                )
            allowed.add(kind)
    return allowed


class _Watch:
    """One test's snapshots and hooks (see the module docstring)."""

    def __init__(self, item: pytest.Item, context: Any) -> None:
        self.item = item
        self.context = context  # the override entered for the test, if any (see _fresh_scene)
        self.test = item.nodeid
        self.errors: list[SwallowedError] = []
        self.allowed_errors = _allowed(item, "allow_errors", ERROR_KINDS)
        self.reset_seconds = 0.0  #: the fresh scene
        self.check_seconds = 0.0  #: the snapshots and checks (the threads' grace period aside)
        self.threads = set(threading.enumerate())
        self.handlers = {name: [id(f) for f in functions] for name, functions in _handler_lists().items()}
        self.copies = _pump.library_copies()
        self.work = {id(copy): _pump.pending_work(copy) for copy in self.copies}
        timers = _pump.active_timers
        if timers is not None:
            timers.test = self.test
            timers.on_error = self.caught
        # Hooks for what would only be printed.
        self.previous_thread_hook = threading.excepthook
        self.previous_sys_hook = sys.excepthook
        threading.excepthook = self.thread_hook
        sys.excepthook = self.sys_hook
        self.log_handler = _ErrorLog(self)
        logging.getLogger(logger_name).addHandler(self.log_handler)

    def caught(self, kind: str, where: str, exc: BaseException) -> None:
        if kind not in self.allowed_errors:
            self.errors.append(SwallowedError(kind, where, exc))

    def thread_hook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit and args.exc_value is not None:
            name = args.thread.name if args.thread is not None else "?"
            self.caught("threads", f"thread {name!r}", args.exc_value)
        self.previous_thread_hook(args)

    def sys_hook(self, kind: type[BaseException], value: BaseException, tb: types.TracebackType | None) -> None:
        # Blender prints (PyErr_Print, hence sys.excepthook) what a handler or a timer it called
        # raised; an operator's error also passes here, but it reaches its caller as RuntimeError
        # as well. So: only errors that start in a registered handler or timer callback.
        if tb is not None:
            where = self.callback_named(tb.tb_frame.f_code)
            if where is not None:
                self.caught(where[0], where[1], value)
        self.previous_sys_hook(kind, value, tb)

    def callback_named(self, code: types.CodeType) -> tuple[str, str] | None:
        for name, functions in _handler_lists().items():
            if any(_code_of(f) is code for f in functions):
                return "handlers", f"bpy.app.handlers.{name} function {code.co_name}"
        timers = _pump.active_timers
        if timers is not None and any(_code_of(t.function) is code for t in timers.timers):
            return "timers", f"bpy.app.timers callback {code.co_name}"
        return None

    def report_errors(self) -> str:
        errors, self.errors[:] = list(self.errors), []
        lines = [f"{len(errors)} error(s) were only printed or logged, not raised, during the test:"]
        return "\n".join(lines + [error.text() for error in errors])

    # -- the end of the test ------------------------------------------------------------------------

    def finish(self) -> str:
        """After the teardown: remove the hooks, find the leaks, clean up; the failure text or ""."""
        started = time.perf_counter()
        allowed = _allowed(self.item, "allow_leaks", LEAK_KINDS)
        leaks: list[str] = []
        # Work left behind, before the threads' grace period runs any of it.
        for copy in self.copies:
            before = self.work.get(id(copy), {})
            for kind, count in _pump.pending_work(copy).items():
                if count > before.get(kind, 0) and kind not in allowed:
                    leaks.append(f"{count - before.get(kind, 0)} {_WORK_WORDS[kind]} ({copy.__name__})")
        timers = _pump.active_timers
        leaked_timers = timers.registered_by(self.test) if timers is not None else []
        if leaked_timers and "timers" not in allowed:
            names = ", ".join(_pump._name(t.function) for t in leaked_timers)
            leaks.append(f"{len(leaked_timers)} bpy.app.timers still registered: {names}")
        leaked_handlers = self.new_handlers()
        if leaked_handlers and "handlers" not in allowed:
            names = ", ".join(f"{name}: {_pump._name(f)}" for name, f in leaked_handlers)
            leaks.append(f"{len(leaked_handlers)} bpy.app.handlers functions still added: {names}")
        threads = self.new_threads()
        if threads:
            waited = time.perf_counter()
            threads = self.wait_for(threads)
            started += time.perf_counter() - waited  # waiting on the test's threads is the test's time
            if threads and "threads" not in allowed:
                leaks.append(f"{len(threads)} thread(s) still running: {', '.join(t.name for t in threads)}")
        # Clean up what can be, so that the next test starts clean.
        if "timers" not in allowed and timers is not None:
            for timer in leaked_timers:
                timers.drop(timer)
        if "handlers" not in allowed:
            lists = _handler_lists()
            for name, function in leaked_handlers:
                if function in lists[name]:
                    lists[name].remove(function)
        if "tasks" not in allowed:
            for copy in self.copies:
                copy.pump(0)  # the tasks it left: their errors still count for this test
        self.remove_hooks()
        if self.context is not None:
            self.context.__exit__(None, None, None)
        self.check_seconds += time.perf_counter() - started
        text = []
        if leaks:
            text.append("the test left behind: " + "; ".join(leaks))
        if self.errors:
            text.append(self.report_errors())
        return "\n".join(text)

    def new_handlers(self) -> list[tuple[str, Any]]:
        found = []
        for name, functions in _handler_lists().items():
            before = self.handlers.get(name, [])
            found += [(name, f) for f in functions if id(f) not in before]
        return found

    def new_threads(self) -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            # a _DummyThread was not started by Python (a thread of Blender's that called into it)
            if t not in self.threads and t.is_alive() and not isinstance(t, threading._DummyThread)
        ]

    def wait_for(self, threads: list[threading.Thread]) -> list[threading.Thread]:
        grace = float(self.item.config.getini("mainthread_tasks_thread_grace"))
        deadline = time.monotonic() + grace
        while threads and time.monotonic() < deadline:
            for copy in self.copies:  # a worker may be waiting for the main thread
                copy.pump(0)
            threads[0].join(0.005)
            threads = [t for t in threads if t.is_alive()]
        return threads

    def remove_hooks(self) -> None:
        if threading.excepthook == self.thread_hook:
            threading.excepthook = self.previous_thread_hook
        if sys.excepthook == self.sys_hook:
            sys.excepthook = self.previous_sys_hook
        logging.getLogger(logger_name).removeHandler(self.log_handler)
        timers = _pump.active_timers
        if timers is not None:
            timers.test = None
            timers.on_error = None


_WORK_WORDS = {
    "tasks": "main-thread task(s) still queued",
    "processes": "process task(s) not finished",
    "coroutines": "coroutine(s) not finished",
}


class _ErrorLog(logging.Handler):
    """Errors logged on the ``mainthread_tasks`` logger during a test: a ``post_on_main`` task that
    raised, a failed timer pass. They are logged, not raised, so the test would pass."""

    def __init__(self, watch: _Watch) -> None:
        super().__init__(logging.ERROR)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            exc = _LoggedError(record.getMessage())
        self.watch.caught("logged", f"logged by {record.name}: {record.getMessage()}", exc)
