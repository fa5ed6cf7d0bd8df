"""Coroutines on the main thread (run_async, main_loop) and run_forever: no thread, no busy polling."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from concurrent.futures import CancelledError

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _async, _blender, _wake
from tests import process_work, support
from tests.support import run_script


@pytest.fixture(autouse=True)
def fresh_loop():
    yield
    _wake.SOURCES.stop("test over")  # cancels coroutines, closes the loop
    assert _async._source is None or _async._source.loop.is_closed()


def _drive(future, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not future.done():
        assert time.monotonic() < deadline, "the coroutine did not finish"
        mt.pump(0.05)
    return future.result()


async def _on_main_thread(value):
    await asyncio.sleep(0)
    assert threading.current_thread() is threading.main_thread()
    return value


def test_run_async_from_the_main_thread():
    future = mt.run_async(_on_main_thread(7))
    assert not future.done()
    assert future.result(timeout=5) == 7  # result() on main steps the loop


def test_run_async_from_a_worker_waiting_on_its_future():
    results = []

    def worker():
        results.append(mt.run_async(_on_main_thread("from a worker")).result(timeout=10))

    with mt.joined_threads(timeout=20) as scope:
        scope.start(worker)
    assert results == ["from a worker"]


def test_coroutine_errors_reach_the_future():
    async def fails():
        await asyncio.sleep(0)
        raise KeyError("inside")

    future = mt.run_async(fails())
    with pytest.raises(KeyError, match="inside"):
        future.result(timeout=5)


def test_bad_input_is_refused_at_the_call():
    async def work():
        return 1

    with pytest.raises(TypeError, match="pass work"):
        mt.run_async(work)
    with pytest.raises(TypeError):
        mt.run_async(42)


def test_sleeping_coroutines_do_not_busy_poll():
    """pump(timeout) sleeps until the loop's next timer: a 0.3 s sleep costs a handful of wake-ups."""
    future = mt.run_async(asyncio.sleep(0.3, result="slept"))
    steps = 0
    started = time.monotonic()
    while not future.done():
        mt.pump(5)
        steps += 1
    assert future.result() == "slept"
    assert 0.28 <= time.monotonic() - started < 2
    assert steps <= 5, steps


def test_only_the_main_thread_runs_while_coroutines_and_processes_wait():
    async def waits():
        await asyncio.sleep(0.2)
        value = await asyncio.wrap_future(mt.run_in_process(process_work.square, 12))
        return value

    before = set(threading.enumerate())
    future = mt.run_async(waits())
    seen = set()
    while not future.done():
        seen.update(threading.enumerate())
        mt.pump(0.02)
    assert future.result() == 144
    assert seen <= before | {threading.main_thread()}, [t.name for t in seen - before]


def test_streams_on_loopback():
    async def serve_and_ask():
        async def echo(reader, writer):
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        answer = await reader.readline()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return answer

    assert _drive(mt.run_async(serve_and_ask())) == b"HELLO\n"


def test_streams_with_a_selector_that_has_no_fd_to_sleep_on(monkeypatch):
    """Windows' selector (select()-based) has no fd that turns readable: the main thread cannot
    sleep on it, so it looks at the sockets in its short sleep slices and steps the loop only when
    one has an event or a timer is due, never busily. Forced here with SelectSelector, which is
    what Windows gets."""
    import selectors

    _wake.SOURCES.stop("a fresh loop with another selector")
    monkeypatch.setattr(selectors, "DefaultSelector", selectors.SelectSelector)
    steps = []

    async def serve_and_ask_later():
        async def echo(reader, writer):
            await asyncio.sleep(0.3)  # nothing to do meanwhile but wait for the socket
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(b"hello\n")
        answer = await reader.readline()
        writer.close()
        server.close()
        return answer

    future = mt.run_async(serve_and_ask_later())
    source = _async._source
    assert source is not None and source.fds() == []
    original_step = source._step
    monkeypatch.setattr(source, "_step", lambda: steps.append(time.monotonic()) or original_step())
    started = time.monotonic()
    assert _drive(future, timeout=10) == b"HELLO\n"
    took = time.monotonic() - started
    assert took < 2, "the loop's I/O was not polled"
    # Steps for the connection, the lines, the timer and the closes only: none while they wait
    # (a busy loop would make thousands, a step per 10 ms slice 30).
    assert len(steps) <= 20, f"{len(steps)} loop steps in {took:.2f} s"


def test_run_in_executor_works_when_asked_for():
    async def offload():
        loop = asyncio.get_running_loop()
        assert loop is mt.main_loop()
        return await loop.run_in_executor(None, sum, [1, 2, 3])

    assert _drive(mt.run_async(offload())) == 6
    mt.main_loop().run_until_complete(mt.main_loop().shutdown_default_executor())


def test_cancel_cancels_the_coroutine_and_its_finally_runs():
    events = []

    async def long():
        try:
            await asyncio.sleep(60)
        finally:
            events.append("finally ran")

    future = mt.run_async(long())
    mt.pump()  # it starts and sleeps
    assert future.cancel()
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        mt.pump(0.05)
    assert events == ["finally ran"] and future.cancelled()
    with pytest.raises(CancelledError):
        future.result()


def test_waiting_on_a_future_inside_a_coroutine_says_what_to_do():
    async def wrong():
        return mt.run_async(asyncio.sleep(0)).result()

    with pytest.raises(RuntimeError, match="wrap_future"):
        mt.run_async(wrong()).result(timeout=5)


def test_last_unregister_cancels_coroutines_and_waiting_workers_get_scheduler_stopped(caplog):
    events = []
    outcome = []

    async def long():
        try:
            await asyncio.sleep(60)
        finally:
            events.append("finally ran")

    mt.register()
    future = mt.run_async(long())
    mt.pump()

    def worker():
        try:
            future.result(timeout=10)
        except mt.SchedulerStopped:
            outcome.append("SchedulerStopped")

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(0.05)
    with caplog.at_level(logging.WARNING):
        mt.unregister()
    thread.join(10)
    assert events == ["finally ran"] and outcome == ["SchedulerStopped"]
    assert "destroyed but it is pending" not in caplog.text
    with pytest.raises(mt.SchedulerStopped):
        mt.run_async(asyncio.sleep(0))
    mt.register()
    assert mt.run_async(_on_main_thread(1)).result(timeout=5) == 1  # a fresh loop after register()
    mt.unregister()


@pytest.mark.parametrize("where", ["coroutine", "done_callback"])
def test_last_unregister_from_inside_the_loop_stops_it_when_the_step_ends(where):
    """The last unregister() from a coroutine, or from a done-callback (which runs inside the loop's
    step), cannot close the loop there: the stop is finished as soon as that step ends."""
    events = []
    outcome = []

    async def long():
        try:
            await asyncio.sleep(60)
        finally:
            events.append("finally ran")

    async def quits():
        await asyncio.sleep(0)
        if where == "coroutine":
            mt.unregister()
        return "quit"

    mt.register()
    sleeper = mt.run_async(long())
    mt.pump()

    def worker():
        try:
            sleeper.result(timeout=10)
        except BaseException as exc:  # noqa: BLE001 - the test says which one it was
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=worker)
    thread.start()
    quitter = mt.run_async(quits())
    if where == "done_callback":
        quitter.add_done_callback(lambda _future: mt.unregister())
    deadline = time.monotonic() + 5
    while mt.stats().registered and time.monotonic() < deadline:
        mt.pump(0.05)
    assert not mt.stats().registered, "the coroutine never ran"
    # No further pump: the step that unregistered has ended, and the stop with it.
    assert events == ["finally ran"]
    assert sleeper.done() and isinstance(sleeper.exception(0), mt.SchedulerStopped)
    assert quitter.done() and quitter.result(0) == "quit"  # it ended within the step: its own result
    thread.join(10)
    assert outcome == ["SchedulerStopped"]
    assert _async._source.loop.is_closed()
    with pytest.raises(mt.SchedulerStopped):
        mt.run_async(asyncio.sleep(0))


def test_a_stop_cancels_the_tasks_the_coroutines_started_too():
    """Like asyncio.run: a task a coroutine created and left running has its ``finally`` run too."""
    events = []

    async def background():
        try:
            await asyncio.sleep(60)
        finally:
            events.append("background finally ran")

    async def starts_and_returns():
        starts_and_returns.task = asyncio.get_running_loop().create_task(background())
        await asyncio.sleep(0)
        return "returned"

    assert mt.run_async(starts_and_returns()).result(timeout=5) == "returned"
    _wake.SOURCES.stop("stopped by the test")
    assert events == ["background finally ran"] and starts_and_returns.task.cancelled()


def test_a_stop_from_another_thread_is_done_by_the_main_threads_next_poll():
    events = []

    async def long():
        try:
            await asyncio.sleep(60)
        finally:
            events.append("finally ran")

    future = mt.run_async(long())
    mt.pump()
    thread = threading.Thread(target=_wake.SOURCES.stop, args=("stopped from a thread",))
    thread.start()
    thread.join(5)
    assert not events and not future.done()  # asyncio's objects are the main thread's to touch
    mt.pump(1)
    assert events == ["finally ran"]
    assert isinstance(future.exception(0), mt.SchedulerStopped) and _async._source.loop.is_closed()
    assert not _wake.SOURCES.all


def test_after_main_loop_close_the_main_thread_sleeps_and_run_async_makes_a_new_loop():
    closed = mt.main_loop()
    mt.pump(0.001)  # the wake-up socket exists: the closed loop's fd number is not reused by it
    closed.close()
    assert not any(s is _async._source for s in _wake.SOURCES.all)  # dropped as a source
    started = time.monotonic()
    pumps = 0
    while time.monotonic() - started < 0.3:
        mt.pump(0.3)
        pumps += 1
    assert pumps <= 2, f"pump(0.3) returned at once {pumps} times: poll(2) on the closed loop's fd"
    assert mt.run_async(_on_main_thread("new loop")).result(timeout=5) == "new loop"
    assert mt.main_loop() is not closed and not mt.main_loop().is_closed()
    mt.main_loop().close()
    results = []

    def worker():
        try:
            results.append(mt.run_async(_on_main_thread("from a worker")).result(timeout=10))
        except BaseException as exc:  # noqa: BLE001 - the test says which one it was
            results.append(repr(exc))

    with mt.joined_threads(timeout=20) as scope:
        scope.start(worker)
    assert results == ["from a worker"]


def test_closing_the_main_loop_cancels_its_coroutines_first():
    """close() on the main loop does what asyncio.run does before closing: cancels the coroutines
    and lets their ``finally`` blocks run; their Futures are cancelled. Inside a coroutine it
    raises, as on any running loop."""
    events = []

    async def long():
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0)  # the loop still runs its finally blocks
            events.append("finally ran")

    async def closes_its_own_loop():
        asyncio.get_running_loop().close()

    with pytest.raises(RuntimeError, match="running"):
        mt.run_async(closes_its_own_loop()).result(timeout=5)
    future = mt.run_async(long())
    mt.pump()
    mt.main_loop().close()
    assert events == ["finally ran"]
    assert future.done()
    with pytest.raises(CancelledError):
        future.result(0)


def test_a_coroutine_that_refuses_to_stop_is_named_once_and_its_waiters_released(caplog):
    async def stubborn():
        while True:
            try:
                await asyncio.get_running_loop().create_future()  # nothing will ever wake it
            except asyncio.CancelledError:
                pass

    future = mt.run_async(stubborn())
    mt.pump()
    task = next(iter(_async._source.tasks)).get_name()
    with caplog.at_level(logging.WARNING):
        _wake.SOURCES.stop("stopped by the test")
        assert isinstance(future.exception(0), mt.SchedulerStopped)
        del future  # (its done-callback holds the task)
        gc.collect()  # the given-up task is garbage now: asyncio would log it as destroyed pending
    assert f"coroutine {task} did not finish after being cancelled" in caplog.text
    assert "destroyed but it is pending" not in caplog.text


def test_timers_wake_the_main_thread_and_cancelled_ones_do_not_pile_up():
    """The host sleeps until the loop's next timer, whoever made it (call_later, wait_for's timeout),
    and a timeout cancelled long before it is due is not kept until then."""

    async def times_out():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.get_running_loop().create_future(), 0.2)
        return "timed out"

    future = mt.run_async(times_out())
    started = time.monotonic()
    pumps = 0
    while not future.done():
        mt.pump(5)
        pumps += 1
    # 6 iterations of the loop (start, wait, time out, cancel, finish): a pump each, no busy polling
    assert future.result() == "timed out" and time.monotonic() - started < 2 and pumps <= 8, pumps
    loop = mt.main_loop()
    for _ in range(10_000):
        loop.call_later(3600, print).cancel()
    assert len(loop._mt_timers) <= 300
    assert _async._source.due() is None  # every one cancelled: nothing to wait for

    class Uncomparable:  # like a numpy array: == does not give a bool
        def __eq__(self, other):
            raise TypeError("compared")

        __hash__ = object.__hash__

    when = loop.time() + 60
    timers = [loop.call_at(when, print, Uncomparable()) for _ in range(3)]  # ties: never compared
    assert 59 < _async._source.due() <= 60
    for timer in timers:
        timer.cancel()


def test_the_ui_timer_steps_the_loop_and_sleeps_until_its_next_timer(monkeypatch):
    future = mt.run_async(asyncio.sleep(0.05, result="done"))
    monkeypatch.setattr(_blender, "_pass_end", _blender._clock() - 2 * _blender.LONG_IDLE_AFTER)  # long idle
    assert _blender._drain_timer() == 0.0  # a task is ready: steps it, and every pass while ready
    assert _blender._drain_timer() == 0.0  # work was done: every pass for IDLE_AFTER, as for tasks
    monkeypatch.setattr(_blender, "_pass_end", _blender._clock() - 2 * _blender.LONG_IDLE_AFTER)
    interval = _blender._drain_timer()
    assert 0.0 < interval <= 0.05  # sleeping: no later than its timer, no sooner than needed
    deadline = time.monotonic() + 5
    while not future.done() and time.monotonic() < deadline:
        time.sleep(_blender._drain_timer())
    assert future.result() == "done"
    assert _blender._drain_timer() == _blender.IDLE_POLL or _blender._drain_timer() <= _blender.LONG_IDLE_POLL


def test_a_live_idle_loop_costs_the_timer_what_an_idle_queue_costs(monkeypatch):
    mt.main_loop()  # alive, nothing scheduled
    monkeypatch.setattr(_blender, "_pass_end", _blender._clock() - 2 * _blender.LONG_IDLE_AFTER)
    assert _blender._drain_timer() == _blender.LONG_IDLE_POLL


def _busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_poll_with_a_deadline_ends_the_loop_iteration_at_it_and_keeps_the_order():
    """100 ready coroutines are one asyncio iteration: with a deadline, the poll stops starting
    their steps at it (the queue's rule), and the steps kept back run next, in their order."""
    order = []

    async def steps(n, count):
        for _ in range(count):
            order.append(n)
            _busy(0.0005)
            await asyncio.sleep(0)

    futures = [mt.run_async(steps(n, 3)) for n in range(100)]
    source = _async._source
    budget = 0.005
    most, polls = 0, 0
    while not all(f.done() for f in futures):
        before = len(order)
        assert source.poll(time.perf_counter() + budget) >= 1  # the first callback always runs
        most = max(most, len(order) - before)
        polls += 1
        assert polls < 10_000
    assert order == list(range(100)) * 3  # round robin, as asyncio runs them without a deadline
    # Steps of 0.5 ms: at most a budget's worth and one more per poll (a pause of the machine only
    # ends a poll sooner), not the 100 of a round.
    assert 2 <= most <= budget / 0.0005 + 1, most


def test_an_io_callback_cut_off_by_the_deadline_runs_once_when_its_fd_is_ready_again():
    import socket

    loop = mt.main_loop()
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    reads, spurious, busy = [], [], []

    def on_readable():
        try:
            reads.append(reader.recv(1))
        except BlockingIOError:  # called although nothing was left to read: ran twice
            spurious.append(1)

    try:
        for _ in range(20):
            loop.call_soon(lambda: (busy.append(1), _busy(0.001)))
        loop.add_reader(reader, on_readable)
        writer.send(b"x")
        source = _async._source
        source.poll(time.perf_counter() + 0.003)  # cut among the busy callbacks, before the reader's
        assert not reads and 1 <= len(busy) < 20
        while source.due() == 0.0:
            source.poll()
        assert reads == [b"x"] and not spurious
    finally:
        loop.remove_reader(reader)
        reader.close()
        writer.close()


@pytest.mark.blender
def test_a_coroutine_that_touches_a_removed_object_after_file_new_gets_reference_error():
    """File > New frees the objects a coroutine may hold: touching one raises ReferenceError in
    the coroutine, which lands in its Future (not a crash); the loop and other coroutines go on."""
    import bpy

    loop = mt.main_loop()
    file_new = loop.create_future()
    obj = bpy.data.objects.new("mt_async_stale", None)

    async def holds_an_object():
        before = obj.name
        await file_new
        return before, obj.name

    async def survives():
        await file_new
        await asyncio.sleep(0.01)
        return len(bpy.data.objects)

    stale = mt.run_async(holds_an_object())
    survivor = mt.run_async(survives())
    mt.pump()  # both start, and wait for File > New
    assert not stale.done() and not survivor.done()
    bpy.ops.wm.read_homefile(use_empty=True)
    file_new.set_result(None)
    assert isinstance(stale.exception(timeout=5), ReferenceError)
    assert survivor.result(timeout=5) == 0
    assert mt.main_loop() is loop and not loop.is_closed()


# -- run_forever ----------------------------------------------------------------------------------


def test_run_forever_until_an_event_set_by_a_worker():
    stop = threading.Event()
    ran = []

    def worker():
        mt.call_on_main(ran.append, "task")
        stop.set()

    thread = threading.Thread(target=worker)
    thread.start()
    mt.run_forever(until=stop)
    thread.join(5)
    assert ran == ["task"]


def test_run_forever_until_a_future_or_a_callable():
    future = mt.run_async(asyncio.sleep(0.1, result=1))
    started = time.monotonic()
    mt.run_forever(until=future)
    assert future.result() == 1 and time.monotonic() - started < 2
    deadline = time.monotonic() + 0.1
    mt.run_forever(until=lambda: time.monotonic() > deadline)
    with pytest.raises(TypeError):
        mt.run_forever(until=42)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_forever_returns_cleanly_on_a_signal(signum):
    before = signal.getsignal(signum)
    timer = threading.Timer(0.2, support.signal_self, (signum,))
    timer.start()
    started = time.monotonic()
    mt.run_forever()
    timer.join()
    assert time.monotonic() - started < 5
    assert signal.getsignal(signum) == (before if before is not None else signal.SIG_DFL)


def test_run_forever_refuses_the_ui_and_other_threads(monkeypatch):
    monkeypatch.setattr(_blender, "in_blender_ui", lambda: True)
    with pytest.raises(RuntimeError, match="headless"):
        mt.run_forever()
    errors = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(mt.NotMainThreadError, mt.run_forever)))
    thread.start()
    thread.join()
    assert errors


EXIT_WITH_LIVE_COROUTINES = r"""
import asyncio, warnings
warnings.simplefilter("error")
import mainthread_tasks as mt

async def forever():
    try:
        await asyncio.sleep(3600)
    finally:
        print("COROUTINE FINALLY RAN", flush=True)

future = mt.run_async(forever())
mt.pump()
print("SCRIPT ENDS WITH A SLEEPING COROUTINE", flush=True)
"""


def test_exit_with_a_live_coroutine_is_clean(tmp_path):
    started = time.monotonic()
    proc = run_script(EXIT_WITH_LIVE_COROUTINES, tmp_path, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "COROUTINE FINALLY RAN" in out, out
    for noise in ("was destroyed but it is pending", "Event loop is closed", "never awaited", "Traceback"):
        assert noise not in out, out
    assert time.monotonic() - started < 30


EXIT_AFTER_UNREGISTER_FROM_A_COROUTINE = r"""
import asyncio, sys, threading, time, warnings
warnings.simplefilter("error")
try:
    import bpy
    bpy.app.timers.register  # real Blender: register() adds the add-on's timer
except (ImportError, AttributeError):  # fake-bpy-module: nothing of Blender to drive
    sys.modules["bpy"] = None
import mainthread_tasks as mt

mt.register()

async def forever():
    try:
        await asyncio.sleep(3600)
    finally:
        print("COROUTINE FINALLY RAN", flush=True)

async def quits():
    await asyncio.sleep(0)
    mt.unregister()

future = mt.run_async(forever())
mt.pump()

def waiter():  # non-daemon: Python joins it at exit
    try:
        future.result()
    except mt.SchedulerStopped:
        print("WAITER GOT SchedulerStopped", flush=True)

threading.Thread(target=waiter).start()
mt.run_async(quits())
deadline = time.monotonic() + 10
while mt.stats().registered and time.monotonic() < deadline:
    mt.pump(0.05)
print("SCRIPT ENDS AFTER UNREGISTER IN A COROUTINE", flush=True)
"""


def test_exit_after_the_last_unregister_from_a_coroutine_is_clean(tmp_path):
    started = time.monotonic()
    proc = run_script(EXIT_AFTER_UNREGISTER_FROM_A_COROUTINE, tmp_path, timeout=30)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for line in ("SCRIPT ENDS AFTER UNREGISTER IN A COROUTINE", "COROUTINE FINALLY RAN", "WAITER GOT SchedulerStopped"):
        assert line in out, out
    for noise in ("was destroyed but it is pending", "Event loop is closed", "never awaited", "Traceback"):
        assert noise not in out, out
    assert time.monotonic() - started < 30


@pytest.mark.blender
def test_the_async_download_example(tmp_path):
    """examples/async_download.py: server and downloads are coroutines on the main thread; no thread at all."""
    from tests import support

    example = support.ROOT / "examples" / "async_download.py"
    command = [*support.python_command(example), "--", "--files", "5", "--save", str(tmp_path / "assets.blend")]
    env = dict(os.environ, PYTHONPATH=str(support.ROOT), PYTHONFAULTHANDLER="1")
    proc = support.run(command, 120, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "ASYNC DOWNLOAD OK" in out and "5 objects created from 5 downloads" in out, out
    assert "threads while downloading: ['MainThread']" in out and "bpy calls made off the main thread: 0" in out, out
    assert out.count("main thread created asset_0") == 5, out
    for noise in ("Traceback", "was destroyed but it is pending", "Event loop is closed", "never awaited"):
        assert noise not in out, out
    assert (tmp_path / "assets.blend").stat().st_size > 0
