"""The kit's pytest plugin, inside Blender (the launcher loads it; docs/testing.md).

Per test, in this order:

- **setup**: a fresh scene (``read_homefile(use_factory_startup=True)``: the factory startup file;
  the add-ons stay enabled), then the watch starts: which threads, timers and handlers exist, how
  much work each copy of mainthread_tasks has, and hooks that catch what would only be printed
  (``threading.excepthook``, ``sys.excepthook`` for handlers and timers Blender calls, the
  ``mainthread_tasks`` logger's errors, the kit's own timer calls);
- **call**: a test that passed fails if an error was caught meanwhile (with its traceback);
- **teardown**, after every fixture's: the leaks (threads still alive after a grace period, work
  left queued or unfinished, timers and handlers the test added) and errors caught since; the test
  fails naming each (``@pytest.mark.allow_leaks`` opts out); leaked timers and handlers are removed
  and left-over tasks run, so the next test starts clean.

Across tests: ``bpy.app.timers`` fire during ``pump_until`` (``_pump.HeadlessTimers``); each test's
start and outcome go to the launcher's progress file as it happens, and faulthandler's watchdog
ends Blender (with every thread's traceback) when a test runs past the kit's ``--test-timeout``, so
that the launcher can report a crashed or hung test and run the rest in a fresh Blender.

Without the launcher (``-p mainthread_tasks.testing.plugin`` in your own pytest run inside Blender)
everything above but the progress file and the add-on installation works the same.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from . import _install, _pump

__all__ = ("SwallowedError",)

SESSION_ENV = "MAINTHREAD_TASKS_TESTING_SESSION"  #: the launcher's session file (JSON), if any

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


# -- the session --------------------------------------------------------------------------------------


class _Session:
    """What the launcher asked for (its session file), or the defaults without it."""

    def __init__(self) -> None:
        path = os.environ.get(SESSION_ENV)
        data: dict[str, Any] = json.loads(Path(path).read_text()) if path else {}
        self.launched = path is not None  #: run by the launcher (else: -p in your own pytest run)
        self.mode: str = data.get("mode") or _current_mode()
        self.addons: list[str] = data.get("addons", [])
        self.progress_path: str | None = data.get("progress")
        self.fault_path: str | None = data.get("fault")
        self.deselect: set[str] = set(data.get("deselect", []))
        self.test_timeout: float = float(data.get("test_timeout", 0))
        #: Outside the UI session: why gui tests are skipped here, or None when the launcher runs
        #: them in a UI session of their own (then they are left out here).
        self.gui_skip: str | None = data.get("gui_skip", "not in Blender's UI: run through the launcher")
        self.progress: IO[str] | None = None
        self.fault: IO[str] | None = None

    def write(self, **record: object) -> None:
        if self.progress is not None:
            self.progress.write(json.dumps(record) + "\n")
            self.progress.flush()  # Blender may die at any moment: the launcher reads what is here


def _current_mode() -> str:
    import bpy

    if not bpy.app.binary_path:
        return "module"
    return "background" if bpy.app.background else "gui"


_session: _Session | None = None
_timers: _pump.HeadlessTimers | None = None


# -- hooks: configuration and collection -------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "mainthread_tasks_thread_grace", "seconds a test's threads may take to end", default=str(THREAD_GRACE_SECONDS)
    )


def pytest_load_initial_conftests() -> None:
    # After pytest-cov has started measuring (its hook runs first) and before conftest.py files are
    # imported: the add-ons' own code is measured, and conftest.py may import them.
    _session_of()


def _session_of() -> _Session:
    """The session, set up on first use: the timers stand-in first, then the add-ons (whose
    register() may already register timers)."""
    global _session, _timers
    if _session is not None:
        return _session
    _session = session = _Session()
    import bpy

    _timers = _pump.HeadlessTimers(bpy.app.timers)
    _timers.install()
    _pump.active_timers = _timers
    bpy.app.handlers.load_pre.append(bpy.app.handlers.persistent(_on_file_load))
    try:
        _install.enable_addons(session.addons)
    except _install.AddonError as exc:
        raise pytest.UsageError(str(exc)) from None
    return session


def _on_file_load(*_args: object) -> None:
    # A load_pre handler (persistent, so it stays for the next file too).
    if _timers is not None:
        _timers.on_file_load()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gui: runs in Blender's real UI (a window; under Xvfb when there is no display)")
    config.addinivalue_line(
        "markers",
        "allow_leaks(*kinds, reason=None): the kit does not fail the test for these leaks "
        f"(no kinds: any); kinds: {', '.join(LEAK_KINDS)}",
    )
    config.addinivalue_line(
        "markers",
        "allow_errors(*kinds, reason=None): the kit does not fail the test for errors that were only "
        f"printed or logged (no kinds: any); kinds: {', '.join(ERROR_KINDS)}",
    )
    session = _session_of()
    if session.progress_path:
        session.progress = open(session.progress_path, "a", encoding="utf-8")  # for the session
    if session.fault_path:
        # After pytest's own faulthandler plugin (trylast): a crash's traceback goes to the file
        # the launcher reads. Every thread's: the crash may come from a worker.
        session.fault = open(session.fault_path, "w", encoding="utf-8")  # for the session
        faulthandler.enable(file=session.fault, all_threads=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    import bpy

    session = _session_of()
    mode = {"background": "--background", "gui": "the UI", "module": "the bpy module"}[session.mode]
    return [
        f"mainthread_tasks.testing: Blender {bpy.app.version_string} in {mode}, user folder "
        f"{bpy.utils.resource_path('USER')}, add-ons: {', '.join(_install.enabled) or 'none'}"
    ]


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what they do
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = _session_of()
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    gui_tests = 0
    for item in items:
        gui = item.get_closest_marker("gui") is not None
        gui_tests += gui
        if item.nodeid in session.deselect:
            dropped.append(item)  # ran (or crashed) in an earlier Blender of this run
        elif session.mode == "gui":
            # The launcher's UI session runs the gui tests only; your own run in the UI runs all.
            (keep if gui or not session.launched else dropped).append(item)
        elif gui and session.gui_skip is None:
            dropped.append(item)  # the launcher runs it in a UI session
        else:
            if gui and session.gui_skip is not None:
                item.add_marker(pytest.mark.skip(reason=session.gui_skip))
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    session.write(collected=len(keep), gui_tests=gui_tests)


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _session_of().write(start=nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _session_of().write(
        report={
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "duration": report.duration,
            "longrepr": report.longreprtext if report.outcome != "passed" else "",
            "skip": _skip_reason(report),
        }
    )


def _skip_reason(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    return ""


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    if _session_of().test_timeout > 0:
        faulthandler.cancel_dump_traceback_later()
    _session_of().write(finish=nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _session_of().write(exitstatus=int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _timers is not None:
        _timers.uninstall()
        _pump.active_timers = None
    session = _session
    if session is not None and session.progress is not None:
        session.progress.close()
        session.progress = None


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(name="pump_until")
def pump_until_fixture() -> Callable[..., None]:
    """``mainthread_tasks.testing.pump_until``: run main-thread work and due timers until a
    predicate is true (``pump_until(lambda: done, timeout=10.0)``)."""
    return _pump.pump_until


@pytest.fixture
def swallowed_errors(request: pytest.FixtureRequest) -> list[SwallowedError]:
    """The errors caught so far in this test that would otherwise only be printed. Remove the ones
    your test expects (``swallowed_errors.clear()``, ``.pop()``); any left fail the test."""
    watch: _Watch | None = request.node.stash.get(_WATCH, None)
    if watch is None:
        raise RuntimeError("swallowed_errors: the kit's watch is not running for this test")
    return watch.errors


# -- per test ------------------------------------------------------------------------------------------


_WATCH = pytest.StashKey["_Watch"]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    session = _session_of()
    if session.test_timeout > 0:
        # A test that runs longer ends Blender, with every thread's traceback in the fault file:
        # faulthandler's own watchdog, a thread of C that needs no GIL (the test may hold it, stuck
        # in C code). Set here, inside pytest's own faulthandler_timeout (which it replaces).
        faulthandler.dump_traceback_later(session.test_timeout, exit=True, file=session.fault or sys.stderr)
    started = time.perf_counter()
    context = _fresh_scene()
    reset = time.perf_counter()
    watch = _Watch(item, context)
    item.stash[_WATCH] = watch
    watch.reset_seconds = reset - started
    watch.check_seconds += time.perf_counter() - reset
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    watch = item.stash.get(_WATCH, None)
    try:
        result = yield
    except BaseException:
        if watch is not None and watch.errors:  # the test failed anyway: show them beside it
            item.add_report_section("call", "errors caught by mainthread_tasks.testing", watch.report_errors())
        raise
    if watch is not None and watch.errors:
        pytest.fail(watch.report_errors(), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    # tryfirst: the outermost wrapper, so this runs after every fixture's teardown.
    watch = item.stash.get(_WATCH, None)
    try:
        result = yield
    except BaseException:
        if watch is not None:
            problems = _finish(watch)
            if problems:  # the teardown failed anyway: show them beside it
                item.add_report_section("teardown", "mainthread_tasks.testing", problems)
        raise
    problems = _finish(watch) if watch is not None else ""
    if problems:
        pytest.fail(problems, pytrace=False)
    return result


def _finish(watch: _Watch) -> str:
    problems = watch.finish()
    _session_of().write(kit_seconds=[watch.reset_seconds, watch.check_seconds])
    return problems


def _fresh_scene() -> Any:
    """Load the factory startup file, as after ``blender --factory-startup``; the preferences, and
    with them the enabled add-ons, stay as they are. Returns the context override the test runs in,
    if one is needed (to be exited after it), else None."""
    import bpy

    bpy.ops.wm.read_homefile(use_factory_startup=True)
    context: Any = bpy.context
    windows = context.window_manager.windows
    if context.window is not None or not windows:
        return None
    # In the UI the tests run inside a timer, whose context loses its window when a file loads:
    # give it back (the window and its screen, no area: what a timer has in Blender).
    override = context.temp_override(window=windows[0])
    override.__enter__()
    return override


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
        timers = _timers
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
        timers = _timers
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
        timers = _timers
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
        timers = _timers
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
