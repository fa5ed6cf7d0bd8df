"""register()/unregister(): reference counting, the Blender timer, and what stopping does."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _blender, _pacing
from tests import support
from tests.support import start_thread


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_accepting_from_import_without_register():
    s = mt.stats()
    assert s.accepting and s.registered == 0


def test_register_is_reference_counted():
    mt.register()
    mt.register()
    assert mt.stats().registered == 2
    mt.unregister()
    assert mt.stats().accepting
    mt.post_on_main(int)
    mt.unregister()
    s = mt.stats()
    assert not s.accepting and s.registered == 0
    with pytest.raises(mt.SchedulerStopped):
        mt.post_on_main(int)


def test_submissions_after_the_last_unregister_raise_until_register():
    mt.register()
    mt.unregister()
    for submit in (mt.run_on_main, mt.post_on_main):
        with pytest.raises(mt.SchedulerStopped, match="register"):
            submit(int)
    caught = []

    def worker():
        try:
            mt.call_on_main(int)
        except mt.SchedulerStopped as exc:
            caught.append(exc)

    start_thread(worker).join(10)
    assert len(caught) == 1 and isinstance(caught[0], RuntimeError)
    mt.register()
    future = mt.run_on_main(int)
    mt.pump()
    assert future.result(0) == 0


def test_extra_unregister_is_harmless():
    mt.unregister()
    mt.unregister()
    mt.register()
    mt.unregister()
    mt.unregister()
    assert mt.stats().registered == 0


def test_last_unregister_cancels_queued_work_and_logs_dropped_posts(caplog):
    mt.register()
    futures = [mt.run_on_main(int) for _ in range(3)]

    def dropped_task():
        pass

    mt.post_on_main(dropped_task)
    with caplog.at_level(logging.WARNING, logger="mainthread_tasks"):
        mt.unregister()
    assert all(f.cancelled() for f in futures)
    assert any("dropped_task" in r.getMessage() for r in caplog.records)
    s = mt.stats()
    assert (s.cancelled, s.pending, s.submitted) == (4, 0, 4)


def test_blocked_callers_get_scheduler_stopped():
    mt.register()
    outcomes = []

    def caller():
        try:
            mt.call_on_main(int)
        except mt.SchedulerStopped:
            outcomes.append("stopped")

    def waiter(future):
        try:
            future.result(timeout=30)
        except cf.CancelledError:
            outcomes.append("cancelled")

    callers = [start_thread(caller) for _ in range(4)]
    future = mt.run_on_main(int)
    w = start_thread(waiter, future)
    wait_until(lambda: mt.stats().pending == 5)
    mt.unregister()
    for t in callers + [w]:
        t.join(10)
        assert not t.is_alive()
    assert sorted(outcomes) == ["cancelled"] + ["stopped"] * 4


def test_unregister_while_threads_keep_submitting_loses_nothing():
    mt.register()
    ran = []
    futures = []
    refused = []
    lock = threading.Lock()
    stop = threading.Event()

    def producer():
        while not stop.is_set():
            try:
                f = mt.run_on_main(ran.append, 1)
            except mt.SchedulerStopped:
                with lock:
                    refused.append(1)
                time.sleep(0.0005)
                continue
            with lock:
                futures.append(f)

    threads = [start_thread(producer) for _ in range(8)]
    for _ in range(30):
        mt.pump()
        mt.unregister()  # stop: cancels what is queued
        time.sleep(0.002)
        mt.register()
    stop.set()
    for t in threads:
        t.join(10)
    mt.pump()
    mt.unregister()
    # Every accepted task either ran or was cancelled; none is left pending.
    assert all(f.done() for f in futures)
    assert sum(1 for f in futures if not f.cancelled()) == len(ran)
    assert refused  # the race was really exercised


def test_timer_registered_once_persistent_and_removed(timers):
    mt.register()
    mt.register()
    assert timers.is_registered(_blender._drain_timer)
    if hasattr(timers, "fake"):
        assert timers.fake.registered == [(_blender._drain_timer, 0.0, True)]
    mt.unregister()
    assert timers.is_registered(_blender._drain_timer)
    mt.unregister()
    assert not timers.is_registered(_blender._drain_timer)


def test_unregister_when_the_timer_is_already_gone(timers):
    mt.register()
    timers.unregister(_blender._drain_timer)  # e.g. removed by a script or a crash-cleanup
    mt.unregister()  # must not raise
    mt.register()  # and registering again puts it back
    assert timers.is_registered(_blender._drain_timer)
    mt.unregister()


@pytest.mark.fake_bpy
def test_failed_register_rolls_back(timers, mocker):
    mocker.patch.object(timers, "register", side_effect=RuntimeError("no timers"))
    with pytest.raises(RuntimeError):
        mt.register()
    assert mt.stats().registered == 0


@pytest.mark.allow_errors("logged", reason="a task fails on purpose: the timer must log it and go on")
def test_timer_callback_drains_within_budget_and_never_raises(monkeypatch):
    ran = []
    for i in range(5):
        mt.post_on_main(ran.append, i)
    mt.post_on_main(lambda: 1 / 0)  # fails: logged, never escapes the timer
    assert _blender._drain_timer() == 0.0
    assert ran == list(range(5))
    monkeypatch.setattr(_pacing.PACING, "tick_budget", 0.02)

    def slow():
        time.sleep(0.01)

    for _ in range(10):
        mt.post_on_main(slow)
    started = time.perf_counter()
    _blender._drain_timer()
    elapsed = time.perf_counter() - started
    # Stopped at the budget, not after all 10: the 2nd task, as long as the 1st, would overrun it.
    assert 0.01 <= elapsed < 0.2
    assert mt.stats().pending > 0
    assert mt.stats().ticks == 2
    support.discard_queued()


@pytest.mark.allow_errors("logged", reason="the interrupted pass is logged on purpose")
def test_timer_callback_survives_keyboard_interrupt_in_a_task():
    def interrupt():
        raise KeyboardInterrupt

    mt.post_on_main(interrupt)
    mt.post_on_main(int)
    assert _blender._drain_timer() == 0.0  # swallowed and logged: a raising timer is gone for good
    assert _blender._drain_timer() == 0.0
    assert mt.stats().pending == 0
