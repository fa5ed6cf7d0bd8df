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
import os
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import IO, Any

import pytest

from . import _install, _pump
from ._watch import ERROR_KINDS, LEAK_KINDS, THREAD_GRACE_SECONDS, SwallowedError, _Watch

__all__ = ("SwallowedError",)

SESSION_ENV = "MAINTHREAD_TASKS_TESTING_SESSION"  #: the launcher's session file (JSON), if any
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
