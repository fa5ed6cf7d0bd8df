"""Shared fixtures: every test starts with an accepting, empty scheduler and must not leak threads.

Tiers (see scripts/run_tests.py): plain CPython with fake-bpy-module (``-m "not blender"``), and real
Blender -- the binary (``--background``) and the bpy wheels -- (``-m "not fake_bpy"``). In a real
Blender tier MAINTHREAD_TASKS_TIER is set, and the run fails at once if ``bpy`` turns out not to be
real: a tier must never pass by quietly testing the wrong thing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mainthread_tasks  # noqa: E402 - after the sys.path entry above
from mainthread_tasks import _hold, _lifecycle, _pacing, _stats  # noqa: E402 - after the sys.path entry above
from tests import support  # noqa: E402 - after the sys.path entry above

# The test kit's sample add-on and its suite: tests/test_testing_kit.py runs them through the
# launcher, in a Blender of their own; some of them fail or crash Blender on purpose.
collect_ignore = ["kit_sample"]


def pytest_configure(config):
    tier = os.environ.get("MAINTHREAD_TASKS_TIER")
    kind = tier.removeprefix("windows-") if tier else tier  # windows-cpython-3.11 is plain, windows-bpy-* real
    plain = kind is not None and (kind == "cpython" or kind.startswith("cpython-"))  # cpython, cpython-3.13
    if tier and not plain and tier not in ("docs", "lint") and not support.REAL_BLENDER:
        raise pytest.UsageError(f"tier {tier!r} expects real Blender, but bpy is {support.bpy_origin()}")
    if plain and support.REAL_BLENDER:
        raise pytest.UsageError(f"the {tier} tier must run on fake-bpy-module, not real Blender")


def pytest_report_header(config):
    return f"mainthread_tasks tier: {os.environ.get('MAINTHREAD_TASKS_TIER', '(unset)')}; bpy: {support.bpy_origin()}"


class FakeTimers:
    """``bpy.app.timers`` as measured in real Blender: ``register`` never de-duplicates,
    ``unregister`` raises ValueError for an unknown function, identity is the function object."""

    def __init__(self):
        self.registered = []  # [(function, first_interval, persistent)]

    def register(self, function, first_interval=0.0, persistent=False):
        self.registered.append((function, first_interval, persistent))

    def unregister(self, function):
        for i, entry in enumerate(self.registered):
            if entry[0] is function:
                del self.registered[i]
                return
        raise ValueError("Error: function is not registered")

    def is_registered(self, function):
        return any(entry[0] is function for entry in self.registered)

    def count(self, function):
        return sum(1 for entry in self.registered if entry[0] is function)


@pytest.fixture(autouse=True)
def timers(mocker):
    """``bpy.app.timers``: the real one in real Blender, else a FakeTimers patched into fake-bpy-module."""
    if support.REAL_BLENDER:
        import bpy

        return bpy.app.timers
    import bpy.app.timers as module  # fake-bpy-module: importable, but without functions

    fake = FakeTimers()
    for name in ("register", "unregister", "is_registered"):
        mocker.patch.object(module, name, getattr(fake, name), create=True)
    module.fake = fake
    return module


@pytest.fixture(autouse=True)
def clean_scheduler(timers):
    """Each test starts accepting work with an empty queue; nothing it queued outlives it."""
    assert threading.current_thread() is threading.main_thread()
    _reset_scheduler()
    threads_before = set(threading.enumerate())
    yield
    leaked = _wait_for_threads(threads_before, timeout=10.0)
    left = mainthread_tasks.stats()
    _reset_scheduler()
    assert not leaked, f"test left threads running: {[t.name for t in leaked]}"
    # The scheduler's state must not outlive the test that made it: the first test to leave a
    # task "running" (a Ctrl-C that skipped the dispatcher's bookkeeping) or queued fails, alone.
    assert left.running is None, f"test left a task marked as running on the main thread: {left}"
    assert left.pending == 0, f"test left {left.pending} task(s) queued: {left}"


def _reset_scheduler() -> None:
    # Each stateful module's own reset, as a test would call it; no private attribute is poked.
    while mainthread_tasks.stats().registered:
        mainthread_tasks.unregister()
    _lifecycle.LIFECYCLE.reset()  # cancels what is queued, stops a process pool or loop left behind
    _stats.reset_stats()
    _pacing.PACING.reset()
    _hold.HOLD.reset()


def _wait_for_threads(before, timeout: float) -> list[threading.Thread]:
    # Keep running main-thread tasks: a leftover worker may be blocked on one.
    deadline = time.monotonic() + timeout
    while True:
        leaked = [
            t
            for t in threading.enumerate()
            # a _DummyThread: Python did not start it, so the test cannot end it
            if t not in before and t.is_alive() and not isinstance(t, threading._DummyThread)
        ]
        if not leaked or time.monotonic() > deadline:
            return leaked
        mainthread_tasks.pump(0.01)


@pytest.fixture
def sigint_raises():
    """Python's own SIGINT handler (the Blender binary runs none: it handles SIGINT in C)."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


@pytest.fixture
def fast_switching():
    """Threads take turns every 10 us instead of 5 ms: races show up within a test's time."""
    with support.fast_switching():
        yield
