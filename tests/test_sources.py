"""Sources: other main-thread work (process results, asyncio steps) polled where the queue runs."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

import mainthread_tasks
from mainthread_tasks import _blender, _pacing, _wake


class SocketSource:
    """A source whose work arrives as bytes on a socket, or at a due time.

    A socket, not a pipe: Windows can make only a socket non-blocking (a pipe from 3.12 on). Where
    the main thread sleeps in poll(2) it wakes on the socket; on Windows it looks every 10 ms.
    """

    def __init__(self, due=None):
        self.read_end, self.write_end = socket.socketpair()
        self.read_end.setblocking(False)
        self.got = []
        self.polls = 0
        self.stopped = None
        self.due_at = due
        self.deadlines = []

    def fds(self):
        return [self.read_end.fileno()]

    def send(self, data):
        self.write_end.send(data)

    def due(self):
        return None if self.due_at is None else self.due_at - time.monotonic()

    def busy(self):
        return False

    def poll(self, deadline=None):
        assert threading.current_thread() is threading.main_thread()
        self.polls += 1
        self.deadlines.append(deadline)
        done = 0
        if self.due_at is not None and time.monotonic() >= self.due_at:
            self.due_at = None
            done += 1
        try:
            data = self.read_end.recv(100)
        except BlockingIOError:
            data = b""
        self.got.append(data) if data else None
        return done + len(data)

    def stop(self, message):
        self.stopped = message
        self.read_end.close()
        self.write_end.close()


@pytest.fixture
def source():
    made = SocketSource()
    _wake.add_source(made)
    yield made
    _wake.remove_source(made)
    if made.stopped is None:
        made.stop("test over")


def test_pump_polls_sources_after_the_queue(source):
    order = []
    mainthread_tasks.post_on_main(order.append, "task")
    source.send(b"ab")
    assert mainthread_tasks.pump() == 1 + 2
    assert order == ["task"] and source.got == [b"ab"]


def test_pump_sleeps_until_a_source_fd_is_readable(source):
    timer = threading.Timer(0.2, source.send, (b"x",))
    started = time.monotonic()
    timer.start()
    assert mainthread_tasks.pump(5.0) == 1
    elapsed = time.monotonic() - started
    timer.join()
    assert 0.15 <= elapsed < 2.0, elapsed
    assert source.got == [b"x"]


def test_pump_wakes_for_a_task_submitted_while_it_sleeps_on_sources(source):
    ran = []
    timer = threading.Timer(0.2, mainthread_tasks.post_on_main, (ran.append, 1))
    started = time.monotonic()
    timer.start()
    assert mainthread_tasks.pump(5.0) == 1
    timer.join()
    assert ran == [1] and time.monotonic() - started < 2.0


def test_pump_wakes_at_a_source_due_time():
    source = SocketSource(due=time.monotonic() + 0.2)
    _wake.add_source(source)
    try:
        started = time.monotonic()
        assert mainthread_tasks.pump(5.0) == 1
        assert 0.15 <= time.monotonic() - started < 2.0
    finally:
        _wake.remove_source(source)
        source.stop("test over")


def test_pump_timeout_with_idle_sources(source):
    started = time.monotonic()
    assert mainthread_tasks.pump(0.1) == 0
    assert 0.09 <= time.monotonic() - started < 2.0


def test_waiting_on_a_future_on_main_polls_sources(source):
    future = mainthread_tasks.run_on_main(lambda: None)
    future.result(timeout=5)  # ran through pump: the source was polled meanwhile
    assert source.polls >= 1


def test_last_unregister_stops_sources_with_the_reason():
    source = SocketSource()
    mainthread_tasks.register()
    _wake.add_source(source)
    mainthread_tasks.unregister()
    assert source.stopped and "unregister" in source.stopped
    assert source not in _wake.SOURCES.all


@pytest.mark.allow_errors("logged", reason="the failing source is logged on purpose; caplog checks it")
def test_a_failing_source_is_logged_and_the_queue_goes_on(caplog):
    class Broken(SocketSource):
        def poll(self, deadline=None):
            raise ValueError("source bug")

    broken = Broken()
    _wake.add_source(broken)
    try:
        ran = []
        mainthread_tasks.post_on_main(ran.append, 1)
        with caplog.at_level(logging.ERROR, logger="mainthread_tasks"):
            assert mainthread_tasks.pump() == 1
        assert ran == [1] and "source bug" in caplog.text
    finally:
        _wake.remove_source(broken)
        broken.stop("test over")


def test_add_source_is_idempotent(source):
    _wake.add_source(source)
    assert sum(s is source for s in _wake.SOURCES.all) == 1


# -- the UI timer (driven by hand here; the GUI tier runs it in Blender's event loop) -------------


class FakeSource(SocketSource):
    def __init__(self):
        super().__init__()
        self.is_busy = False
        self.due_in = None

    def busy(self):
        return self.is_busy

    def due(self):
        return self.due_in


def test_timer_polls_a_busy_source_every_pass_within_the_budget(monkeypatch):
    source = FakeSource()
    _wake.add_source(source)
    try:
        monkeypatch.setattr(_blender, "_pass_end", _blender._clock() - 2 * _blender.LONG_IDLE_AFTER)  # long idle
        assert _blender._drain_timer() == _blender.LONG_IDLE_POLL and source.polls == 0  # idle source: not polled
        source.due_in = 0.02
        assert _blender._drain_timer() == pytest.approx(0.02)  # no later than its due time
        source.due_in = None
        source.is_busy = True
        source.send(b"r")
        started = time.perf_counter()
        assert _blender._drain_timer() == 0.0  # busy: every pass
        assert source.got == [b"r"] and started < source.deadlines[-1] <= started + _pacing.PACING.tick_budget + 0.01
        # Work done counts as work: the timer stays at every pass for IDLE_AFTER seconds.
        source.is_busy = False
        assert _blender._drain_timer() == 0.0
    finally:
        _wake.remove_source(source)
        source.stop("test over")


def test_timer_pass_with_tasks_gives_sources_part_of_the_budget():
    source = FakeSource()
    _wake.add_source(source)
    try:
        ran = []
        mainthread_tasks.post_on_main(ran.append, 1)
        started = time.perf_counter()
        assert _blender._drain_timer() == 0.0
        assert ran == [1] and source.polls == 1
        assert source.deadlines[0] <= started + _pacing.PACING.tick_budget / 2 + 0.01
    finally:
        _wake.remove_source(source)
        source.stop("test over")


class RingsAsItSleeps:
    """A source that gets work from "another thread" at the main thread's last check before it
    sleeps, after the sleep flag went up: that thread's wake_main() rings (writes the wake byte)."""

    def __init__(self):
        self.work = False
        self.checks = 0

    def fds(self):
        return []

    def busy(self):
        return False

    def due(self):
        self.checks += 1
        if self.checks == 2:  # Waker.sleep's re-check, with the flag raised
            self.work = True
            _wake.wake_main()
        return 0.0 if self.work else None

    def poll(self, deadline=None):
        done, self.work = int(self.work), False
        return done

    def stop(self, message):
        pass


def test_a_ring_answered_by_the_last_check_leaves_no_wake_for_the_next_sleep():
    source = RingsAsItSleeps()
    _wake.add_source(source)
    try:
        assert mainthread_tasks.pump(5.0) == 1
        started = time.monotonic()
        assert mainthread_tasks.pump(0.3) == 0
        assert time.monotonic() - started >= 0.25, "the next pump() woke at once: the ring's byte was left over"
    finally:
        _wake.remove_source(source)
