"""Ctrl-C on the main thread while it dispatches: delivered once, nothing lost, no state left behind.

The signal is raised deterministically with ``signal.raise_signal(SIGINT)``, whose handler runs at
once in the frame that raised it: from a ``__del__`` or a weakref callback that the dispatcher's own
decrefs trigger (the task's result, its arguments, its function, its failed exception, a Future
nobody kept), and from inside a task. A KeyboardInterrupt raised inside a ``__del__`` or a weakref
callback is swallowed by Python (printed as "Exception ignored in"): the guard must hold such a
signal back and deliver it where it can raise, or the Ctrl-C is lost.
"""

from __future__ import annotations

import _thread
import functools
import random
import signal
import sys
import threading
import time
import weakref

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _dispatch, _interrupts, _queue


@pytest.fixture
def unraisable():
    """What Python swallowed during the test (an exception raised in __del__ or a callback)."""
    seen: list[BaseException | None] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda args: seen.append(args.exc_value)
    yield seen
    sys.unraisablehook = previous


class Bomb:
    """Sends this process SIGINT when it dies; its handler runs right there, in ``__del__``."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


def _assert_stats_add_up():
    s = mt.stats()
    assert s.running is None
    assert s.submitted == s.completed + s.failed + s.cancelled + s.pending, s


def weakref_bomb():
    """An object whose death sends SIGINT from a weakref callback instead."""

    class Target:
        pass

    target = Target()
    target.ref = weakref.ref(target, lambda _ref: signal.raise_signal(signal.SIGINT))
    return target


BOMBS = {"__del__": Bomb, "weakref callback": weakref_bomb}


def _noop(*_args):
    return None


def _fails_holding(bomb):
    local = bomb  # noqa: F841 - kept by the traceback's frame
    raise ValueError("a task that fails")


def _arm(where, bomb_kind):
    """Queue the task whose bookkeeping kills the bomb; returns what the test must keep."""
    make = BOMBS[bomb_kind]
    if where == "a run_on_main task's result, Future not kept":
        mt.run_on_main(make)
    elif where == "a post_on_main task's result":
        mt.post_on_main(make)
    elif where == "a post_on_main task's arguments":
        mt.post_on_main(_noop, make())
    elif where == "a run_on_main task's function":
        mt.run_on_main(functools.partial(_noop, make()))
    elif where == "a failed task's traceback, Future not kept":
        mt.run_on_main(_fails_holding, make())
    elif where == "a cancelled task's arguments":
        mt.run_on_main(_noop, make()).cancel()
    else:
        raise AssertionError(where)


WHERE = [
    "a run_on_main task's result, Future not kept",
    "a post_on_main task's result",
    "a post_on_main task's arguments",
    "a run_on_main task's function",
    "a failed task's traceback, Future not kept",
    "a cancelled task's arguments",
]


@pytest.mark.parametrize("bomb_kind", list(BOMBS))
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("after", [0, 1, 5], ids=lambda n: f"{n}_after")
def test_ctrl_c_from_the_dispatchers_own_decrefs_is_delivered_once_and_leaves_no_state(
    sigint_raises, unraisable, where, bomb_kind, after
):
    ran: list[int] = []
    before = [mt.run_on_main(ran.append, i) for i in range(3)]
    _arm(where, bomb_kind)
    later = [mt.run_on_main(ran.append, 100 + i) for i in range(after)]
    interrupted = 0
    for _ in range(10):  # until the queue is empty; a Ctrl-C ends one pump early
        try:
            while mt.pump():
                pass
            break
        except KeyboardInterrupt:
            interrupted += 1
    assert unraisable == [], "a Ctrl-C was raised where Python swallows it: lost"
    s = mt.stats()
    assert s.running is None, s
    assert s.pending == 0, s
    assert s.submitted == s.completed + s.failed + s.cancelled, s
    assert interrupted == 1, "the Ctrl-C must reach the code that called pump(), exactly once"
    assert sorted(ran) == [0, 1, 2] + [100 + i for i in range(after)], "every task ran once"
    assert all(f.done() for f in before + later)


def test_ctrl_c_inside_a_task_interrupts_that_task(sigint_raises, unraisable):
    def task():
        signal.raise_signal(signal.SIGINT)
        return "not reached"

    future = mt.run_on_main(task)
    follower = mt.run_on_main(int)
    with pytest.raises(KeyboardInterrupt):
        mt.pump()
    assert isinstance(future.exception(0), KeyboardInterrupt)
    assert not follower.done(), "the rest stays queued"
    assert mt.pump() == 1 and follower.result(0) == 0
    assert mt.stats().running is None and unraisable == []


def test_ctrl_c_deferred_in_a_nested_batch_reaches_the_task_that_waits(sigint_raises, unraisable):
    """A task waits on a Future on the main thread (a nested batch); the Ctrl-C lands in that
    batch's bookkeeping: it interrupts the waiting task once the nested task in hand is done,
    instead of leaving the wait spinning."""
    inner = mt.run_on_main(Bomb)  # its result dies in the nested batch's bookkeeping...
    del inner  # ...as nobody else keeps the Future
    waited = mt.run_on_main(int)
    outcome = []

    def waiting_task():
        try:
            waited.result(timeout=5)
            outcome.append("returned")
        except KeyboardInterrupt:
            outcome.append("interrupted")
            raise

    # waiting_task must run first: queue it, then move the two others behind it.
    waiter = mt.run_on_main(waiting_task)
    items = [_queue.get_nowait() for _ in range(3)]
    for index in (2, 0, 1):
        _queue.put(items[index])
    del items  # the queue alone keeps the Bomb's Future
    with pytest.raises(KeyboardInterrupt):
        mt.pump()
    assert outcome == ["interrupted"] and isinstance(waiter.exception(0), KeyboardInterrupt)
    while mt.pump():
        pass
    assert waited.result(0) == 0
    assert mt.stats().running is None and unraisable == []


def test_ctrl_c_in_a_done_callback_that_waits_does_not_spin(sigint_raises, unraisable):
    """A done-callback (dispatcher bookkeeping: Ctrl-C is held back there) waits on another Future;
    a Ctrl-C landing meanwhile must not stop the nested batches from running what it waits for."""
    waited = mt.run_on_main(int)
    results = []

    def callback(_future):
        bomb = Bomb()
        del bomb  # SIGINT now, inside the dispatcher's bookkeeping
        results.append(waited.result(timeout=5))

    first = mt.run_on_main(str)
    first.add_done_callback(callback)
    # first must run before waited: move waited behind it.
    items = [_queue.get_nowait() for _ in range(2)]
    for index in (1, 0):
        _queue.put(items[index])
    del items
    with pytest.raises(KeyboardInterrupt):
        mt.pump()
    assert results == [0]
    assert mt.stats().running is None and unraisable == []


def test_nested_guards_restore_the_handler_each_replaced(sigint_raises):
    """A task installs its own SIGINT handler and waits on the main thread (a nested pump installs
    the guard over the task's handler), then restores the guard: after the outer pump, Python's
    handler is back, not the task's."""

    def own_handler(signum, frame):
        raise KeyboardInterrupt

    def task():
        previous = signal.signal(signal.SIGINT, own_handler)
        try:
            mt.run_on_main(int).result(timeout=5)
        finally:
            signal.signal(signal.SIGINT, previous)

    mt.run_on_main(task)
    mt.pump()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_after_a_task_ran_run_forever_still_stops_the_outer_run_forever(sigint_raises):
    stop_inner = threading.Event()
    stopped = []

    def task():
        mt.post_on_main(stop_inner.set)
        mt.run_forever(until=stop_inner)

        def interrupt():
            signal.raise_signal(signal.SIGINT)

        mt.post_on_main(interrupt)  # the outer run_forever must hear this one
        stopped.append("inner")

    mt.post_on_main(task)
    waker = threading.Timer(10, lambda: stopped.append("timed out") or mt.post_on_main(int))
    waker.start()
    try:
        mt.run_forever(until=lambda: "timed out" in stopped)
    finally:
        waker.cancel()
        waker.join()
    assert stopped == ["inner"], "SIGINT no longer stopped the outer run_forever"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_task_runner_knows_its_task_line_on_this_python():
    """The guard tells a task from the dispatcher's bookkeeping by the line that calls it, found in
    the bytecode (``CALL_FUNCTION_EX``): a Python that compiles ``fn(*args)`` otherwise fails here."""
    import inspect

    lines, first = inspect.getsourcelines(_dispatch.run_batch)
    calls = {first + i for i, line in enumerate(lines) if "= fn(*args, **kwargs) if kwargs else fn(*args)" in line}
    assert len(calls) == 1
    assert _interrupts._task_lines[_dispatch.run_batch.__code__] == calls


CTRL_C_AFTER_RUN_FOREVER = r"""
import os, signal, sys, threading, time
import mainthread_tasks as mt

native = signal.getsignal(signal.SIGINT) is None  # the Blender binary handles SIGINT in C
try:  # run_forever looks for bpy: imported now, as a SIGINT during the bpy wheel's import crashes it
    import bpy
except ImportError:
    pass

def ctrl_c():  # Windows raises SIGINT for a Ctrl-C in a thread of its own (os.kill would end us)
    os.kill(os.getpid(), signal.SIGINT) if os.name == "posix" else signal.raise_signal(signal.SIGINT)

mt.post_on_main(lambda: threading.Timer(0.3, ctrl_c).start())  # once run_forever runs
mt.run_forever()
print("RUN_FOREVER STOPPED BY SIGINT", flush=True)
try:
    ctrl_c()
    time.sleep(0.5)
    print("AFTER: NO EXCEPTION", "native" if native else "python", flush=True)
except KeyboardInterrupt:
    print("AFTER: KeyboardInterrupt", "native" if native else "python", flush=True)
"""


def test_ctrl_c_after_run_forever_is_handled_as_before_it(tmp_path):
    """run_forever stops on Ctrl-C and then puts back what handled it before: Python's
    KeyboardInterrupt, or in the Blender binary Blender's own C handler (the first Ctrl-C prints
    a message and asks for a second), never the default action that kills Blender outright."""
    from tests.support import IN_BLENDER_BINARY, run_script

    script = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n" * (not IN_BLENDER_BINARY)
    proc = run_script(script + CTRL_C_AFTER_RUN_FOREVER, tmp_path, timeout=60)
    out = proc.stdout + proc.stderr
    assert "RUN_FOREVER STOPPED BY SIGINT" in out, out
    if IN_BLENDER_BINARY:
        assert "AFTER: NO EXCEPTION native" in out and "Press ^C again to kill Blender" in out, out
        assert proc.returncode in (0, 1), out  # Blender ends with 1 after a break event
    else:
        assert "AFTER: KeyboardInterrupt python" in out, out
        assert proc.returncode == 0, out


# -- Ctrl-C inside the dispatcher ----------------------------------------------------------


def test_ctrl_c_landing_anywhere_in_a_batch_loses_no_task(sigint_raises, fast_switching):
    """A thread interrupts the main thread at a random moment while it runs batches of tiny
    tasks: the interrupt lands in a task (its Future gets KeyboardInterrupt) or in the dispatcher
    (held back until the task in hand is finished); either way every task runs once or fails
    with KeyboardInterrupt, the rest stays queued, and the counters are exact."""
    rng = random.Random(10)
    fire = threading.Event()
    stop = False

    def interrupter():
        while True:
            fire.wait()
            fire.clear()
            if stop:
                return
            time.sleep(rng.random() * 0.004)
            _thread.interrupt_main()

    def work(n):
        for _ in range(300):  # long enough that some interrupts land inside it
            pass
        return n

    thread = threading.Thread(target=interrupter)
    thread.start()
    landed_in_task = landed_in_dispatcher = 0
    in_pump = False
    try:
        for _round in range(3000):  # until both windows were hit a few times (bounded)
            if _round >= 400 and landed_in_dispatcher >= 3 and landed_in_task >= 3:
                break
            posted = []
            futures = []
            for n in range(300):
                # Half the tasks are C functions: no frame of their own, so the interrupt often
                # lands in the dispatcher's frame, right after the queue handed it a task.
                futures.append(mt.run_on_main(int if n % 2 else work, n))
                mt.post_on_main(posted.append, n)
            fire.set()
            try:
                while True:
                    in_pump = True
                    mt.pump()
                    in_pump = False
                    time.sleep(0.0005)
            except KeyboardInterrupt:
                pass
            raised_in_pump, in_pump = in_pump, False
            while mt.pump():
                pass
            failed = [f for f in futures if f.exception() is not None]
            assert all(isinstance(f.exception(), KeyboardInterrupt) for f in failed)
            assert [f.result() for f in futures if f not in failed] == [
                n for n, f in enumerate(futures) if f not in failed
            ]
            assert len(failed) <= 1 and 299 <= len(posted) <= 300
            assert len(failed) + (300 - len(posted)) <= 1, "one interrupt, at most one task interrupted"
            if failed or len(posted) < 300:
                landed_in_task += 1
            elif raised_in_pump:
                landed_in_dispatcher += 1
            _assert_stats_add_up()
            assert mt.stats().pending == 0
    finally:
        stop = True
        fire.set()
        thread.join(5)
    assert landed_in_dispatcher > 0 and landed_in_task > 0, (landed_in_dispatcher, landed_in_task)


def test_ctrl_c_while_pump_waits_loses_the_task_that_wakes_it(sigint_raises, fast_switching):
    """A worker queues a task and interrupts the main thread blocked in pump(5): the task runs
    at once or stays queued, never dropped."""
    rng = random.Random(11)
    interrupted = 0
    for _round in range(300):
        ran = []
        spin = rng.randrange(0, 200)

        go = threading.Event()

        def worker(go=go, ran=ran, spin=spin):
            go.wait(5)
            time.sleep(0.001)  # main is in pump(5) by now, most of the time
            mt.post_on_main(ran.append, 1)
            for _ in range(spin):
                pass
            _thread.interrupt_main()

        thread = threading.Thread(target=worker)
        thread.start()
        try:
            go.set()
            mt.pump(5)
            time.sleep(0.05)  # the signal lands here if it did not land in pump
        except KeyboardInterrupt:
            interrupted += 1
        thread.join(5)
        mt.pump()
        assert ran == [1], "the task that woke pump() was lost"
        _assert_stats_add_up()
    assert interrupted == 300


def test_ctrl_c_inside_a_task_fails_its_future_and_its_caller_hears_it(sigint_raises):
    def task():
        _thread.interrupt_main()
        time.sleep(5)  # interrupted

    got = []

    def worker():
        try:
            mt.call_on_main(task)
        except KeyboardInterrupt:
            got.append("KeyboardInterrupt")

    thread = threading.Thread(target=worker)
    thread.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        while thread.is_alive():
            mt.pump(0.01)
    thread.join(5)
    assert got == ["KeyboardInterrupt"] and time.monotonic() - started < 4
    _assert_stats_add_up()


def test_the_guard_is_gone_after_pump(sigint_raises):
    mt.post_on_main(int)
    mt.pump()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


SIGINT_IN_A_BLOCK = r"""
import os, signal, sys, threading, time
import mainthread_tasks as mt
if signal.getsignal(signal.SIGINT) is None:  # the Blender binary: Python runs no SIGINT handler
    signal.signal(signal.SIGINT, signal.default_int_handler)

ready = threading.Event()
if os.environ.get("MT_CTRL_C_AFTER"):  # Windows: Ctrl-C comes as SIGINT raised in a thread of its own
    def ctrl_c():
        ready.wait()
        time.sleep(float(os.environ["MT_CTRL_C_AFTER"]))
        signal.raise_signal(signal.SIGINT)
    threading.Thread(target=ctrl_c, daemon=True).start()

calls = [0] * 8
def task(i):
    calls[i] += 1

def worker(i):
    try:
        while True:
            mt.call_on_main(task, i)
    except (mt.SchedulerStopped, KeyboardInterrupt) as exc:
        print("WORKER", i, "ENDED WITH", type(exc).__name__, flush=True)

def at_exit():  # after Python joined the workers: nothing may be left
    s = mt.stats()
    print("STATS", s.submitted, s.completed, s.failed, s.cancelled, s.pending, flush=True)
    assert s.submitted == s.completed + s.failed + s.cancelled and s.pending == 0, s
    print("EXIT CLEAN", flush=True)

import atexit
atexit.register(at_exit)
with mt.joined_threads() as scope:
    for i in range(8):
        scope.start(worker, i)
    print("READY", flush=True)  # every worker started: the SIGINT lands while the block drains
    ready.set()
"""


def test_real_sigint_at_a_random_moment_never_hangs_the_exit(tmp_path):
    """The issue's case: 8 workers looping call_on_main in a joined_threads block, SIGINT at a
    random moment; before the fix the exit hung in 9 of 10 runs. On Windows, where os.kill would
    end the process, the script raises SIGINT in a thread of its own, as Windows does for Ctrl-C."""
    import os
    import subprocess

    from tests.support import WINDOWS, kill_group, python_command

    script = tmp_path / "script.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(_root())!r})\n" + SIGINT_IN_A_BLOCK)
    rng = random.Random(12)
    for _run in range(10):
        delay = 0.05 + rng.random() * 0.3
        proc = subprocess.Popen(
            python_command(script),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=dict(os.environ, PYTHONFAULTHANDLER="1", MT_CTRL_C_AFTER=str(delay) if WINDOWS else ""),
        )
        try:
            assert proc.stdout.readline  # wait for READY (imports take a while in Blender)
            for line in proc.stdout:
                if "READY" in line:
                    break
            if not WINDOWS:
                time.sleep(delay)
                os.kill(proc.pid, signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        except BaseException:
            kill_group(proc)
            raise
        assert "EXIT CLEAN" in out, out[-3000:]
        assert out.count("ENDED WITH") == 8, out[-3000:]


def _root():
    from tests.support import ROOT

    return ROOT
