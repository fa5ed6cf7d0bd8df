"""pump(): runs queued tasks on the main thread, bounded per call, never from a worker."""

from __future__ import annotations

import gc
import math
import threading
import time
import weakref

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _dispatch
from tests import support
from tests.support import start_thread


def test_pump_with_nothing_queued_returns_zero_at_once():
    started = time.monotonic()
    assert mt.pump() == 0
    assert time.monotonic() - started < 0.5


def test_pump_waits_up_to_timeout_for_one_task():
    started = time.monotonic()
    assert mt.pump(0.1) == 0
    assert 0.09 <= time.monotonic() - started < 5


def test_pump_wakes_as_soon_as_a_task_arrives():
    t = threading.Timer(0.05, mt.post_on_main, args=(int,))
    t.start()
    started = time.monotonic()
    assert mt.pump(10) == 1
    assert time.monotonic() - started < 5
    t.join()


def test_pump_returns_how_many_ran_not_counting_cancelled():
    futures = [mt.run_on_main(int) for _ in range(5)]
    futures[1].cancel()
    futures[3].cancel()
    assert mt.pump() == 3


def test_pump_runs_only_what_was_queued_when_it_started():
    runs = []

    def again(n):
        runs.append(n)
        mt.post_on_main(again, n + 1)  # a task that queues itself forever

    mt.post_on_main(again, 0)
    assert mt.pump() == 1
    assert mt.pump() == 1
    assert runs == [0, 1]
    mt.pump()
    support.discard_queued()  # it would queue itself forever


@pytest.mark.parametrize("bad", [-1, -0.001, math.nan, float("-inf")])
def test_pump_rejects_negative_and_nan_timeouts(bad):
    with pytest.raises(ValueError, match="timeout"):
        mt.pump(bad)


def test_pump_rejects_non_numbers():
    with pytest.raises(TypeError, match="timeout"):
        mt.pump("1")


def test_pump_infinite_timeout_waits_like_none():
    t = threading.Timer(0.05, mt.post_on_main, args=(int,))
    t.start()
    assert mt.pump(math.inf) == 1
    t.join()


def test_pump_none_waits_without_limit_until_a_task():
    t = threading.Timer(0.05, mt.post_on_main, args=(int,))
    t.start()
    assert mt.pump(None) == 1
    t.join()


def test_pump_off_main_thread_raises():
    caught = []

    def worker():
        try:
            mt.pump()
        except mt.NotMainThreadError as exc:
            caught.append(exc)

    start_thread(worker).join(10)
    assert len(caught) == 1 and isinstance(caught[0], RuntimeError)


@pytest.mark.allow_errors("logged", reason="the task fails on purpose")
def test_a_raising_task_does_not_stop_the_batch():
    ran = []
    mt.post_on_main(lambda: 1 / 0)
    bad = mt.run_on_main(lambda: [][1])
    mt.post_on_main(ran.append, "after")
    assert mt.pump() == 3
    assert ran == ["after"]
    assert isinstance(bad.exception(0), IndexError)
    s = mt.stats()
    assert (s.completed, s.failed) == (1, 2)


def test_keyboard_interrupt_in_a_task_is_recorded_then_reraised():
    def interrupt():
        raise KeyboardInterrupt

    future = mt.run_on_main(interrupt)
    later = mt.run_on_main(lambda: "later")
    with pytest.raises(KeyboardInterrupt):
        mt.pump()
    assert isinstance(future.exception(0), KeyboardInterrupt)
    assert not later.done()  # left queued for the next pump, not lost
    assert mt.pump() == 1 and later.result(0) == "later"


@pytest.mark.allow_errors("logged", reason="the failure is logged on purpose; caplog checks it")
def test_system_exit_in_a_post_task_is_logged_then_reraised(caplog):
    def leave():
        raise SystemExit(3)

    mt.post_on_main(leave)
    with pytest.raises(SystemExit):
        mt.pump()
    assert mt.stats().failed == 1
    assert any("leave" in r.getMessage() for r in caplog.records)


def test_memory_error_in_a_task_goes_to_its_future():
    def oom():
        raise MemoryError

    future = mt.run_on_main(oom)
    assert mt.pump() == 1
    assert isinstance(future.exception(0), MemoryError)


def test_stats_counts_add_up():
    for _ in range(3):
        mt.post_on_main(int)
    failing = mt.run_on_main(lambda: 1 / 0)
    cancelled = mt.run_on_main(int)
    cancelled.cancel()
    mt.run_on_main(int)
    s = mt.stats()
    assert (s.submitted, s.pending) == (6, 6)
    mt.pump()
    s = mt.stats()
    assert (s.submitted, s.completed, s.failed, s.cancelled, s.pending) == (6, 4, 1, 1, 0)
    assert failing.exception(0) is not None
    assert s.longest_task >= 0 and s.running is None


def test_stats_names_the_running_task():
    seen = []

    def look():
        seen.append(mt.stats().running)

    mt.run_on_main(look)
    mt.pump()
    assert seen and "look" in seen[0]


def test_slow_task_is_logged_with_its_name(caplog, monkeypatch):
    from mainthread_tasks import _dispatch

    monkeypatch.setattr(_dispatch, "slow_task_seconds", 0.05)

    def sluggish():
        time.sleep(0.06)

    mt.post_on_main(sluggish)
    mt.post_on_main(int)
    assert mt.pump() == 2
    assert mt.stats().slow_tasks == 1
    assert any("sluggish" in r.getMessage() and "blocked the main thread" in r.getMessage() for r in caplog.records)


def test_deep_task_recursion_through_call_on_main():
    def nest(n):
        return n if n == 0 else mt.call_on_main(nest, n - 1)

    future = mt.run_on_main(nest, 200)
    mt.pump()
    assert future.result(0) == 0


def test_call_on_main_inside_a_task_runs_inline():
    def outer():
        return mt.call_on_main(lambda: "inner ran inline")

    future = mt.run_on_main(outer)
    assert mt.pump() == 1
    assert future.result(0) == "inner ran inline"


# -- a failed task pins memory -------------------------------------------------------------


class Big:
    """Stands in for a 200 MB argument."""


def _drop_and_raise(big):
    del big
    raise ValueError("failed")


@pytest.mark.allow_errors("logged", reason="the task fails on purpose: the test is about what its failure keeps alive")
def test_a_failed_task_keeps_neither_its_arguments_nor_a_cycle():
    gc.disable()
    try:
        big = Big()
        alive = weakref.ref(big)
        future = mt.run_on_main(_drop_and_raise, big)
        mt.post_on_main(_drop_and_raise, big)
        del big
        with pytest.raises(ValueError):
            mt.pump()
            future.result()
        future.result  # noqa: B018 - the failed Future is still held here
        assert alive() is None, "the traceback kept the last task's arguments alive"
        dead_future = weakref.ref(future)
        del future
        assert dead_future() is None, "a failed Future sits in a reference cycle"
    finally:
        gc.enable()


@pytest.mark.parametrize("end", ["ran", "cancelled", "dropped by a stop"])
def test_a_kept_future_holds_neither_its_function_nor_its_arguments(end):
    # A queued Future carries its call (see _queue). Callers keep Futures, and an argument may be
    # 200 MB: once the task ran, or never will, the Future must let go of the call.
    gc.disable()  # no collection may hide a reference kept by mistake
    try:
        big, named = Big(), Big()

        def task(arg, *, key):
            return None

        alive = [weakref.ref(obj) for obj in (big, named, task)]
        future = mt.run_on_main(task, big, key=named)
        del big, named, task
        if end == "ran":
            mt.pump()
        elif end == "cancelled":
            assert future.cancel()
            mt.pump()  # takes the cancelled task off the queue without running it
        else:
            mt.register()
            mt.unregister()  # the last one: what is queued is cancelled
        assert future.done()
        assert [ref() for ref in alive] == [None, None, None], "a done Future keeps its call alive"
    finally:
        gc.enable()


# -- a task object whose attributes raise --------------------------------------------------


class Command:
    """A callable whose __getattr__ raises, as command objects and proxies do."""

    def __getattr__(self, name):
        raise KeyError(name)

    def __repr__(self):
        raise RuntimeError("no repr either")

    def __call__(self):
        return "done"


def test_nothing_a_task_object_does_escapes_the_dispatcher(monkeypatch):
    monkeypatch.setattr(_dispatch, "slow_task_seconds", 0.0)  # every task is "slow": names looked up
    future = mt.run_on_main(Command())
    mt.post_on_main(Command())
    assert mt.pump() == 2
    assert future.result() == "done"
    assert "Command object" in mt.stats().longest_task_name
