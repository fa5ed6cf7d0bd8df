"""MainThreadFuture behaves as a concurrent.futures.Future, from any thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures as cf
import logging
import math
import random
import threading
import time

import pytest

import mainthread_tasks as mt
from tests.support import start_thread


def test_result_timeout_from_a_worker():
    future = mt.run_on_main(int)
    outcome = []

    def worker():
        try:
            future.result(timeout=0.05)
        except cf.TimeoutError:
            outcome.append("timeout")

    start_thread(worker).join(10)
    assert outcome == ["timeout"]
    mt.pump()
    assert future.result(0) == 0


def test_cancel_before_it_runs():
    ran = []
    future = mt.run_on_main(ran.append, 1)
    assert future.cancel() and future.cancelled() and future.done()
    assert mt.pump() == 0
    assert ran == []
    with pytest.raises(cf.CancelledError):
        future.result(0)
    with pytest.raises(cf.CancelledError):
        future.exception(0)
    s = mt.stats()
    assert (s.cancelled, s.completed, s.pending) == (1, 0, 0)


def test_cannot_cancel_a_finished_or_running_future():
    running_state = []
    holder = {}

    def task():
        running_state.append((holder["f"].running(), holder["f"].cancel()))
        return 5

    holder["f"] = future = mt.run_on_main(task)
    mt.pump()
    assert running_state == [(True, False)]
    assert not future.cancel() and future.result(0) == 5


def test_exception_is_returned_by_exception():
    future = mt.run_on_main(lambda: 1 / 0)
    mt.pump()
    assert isinstance(future.exception(0), ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        future.result(0)


def test_done_callbacks_run_once_in_every_order():
    calls = []
    future = mt.run_on_main(lambda: "v")
    future.add_done_callback(lambda f: calls.append(("before", f.result(), threading.current_thread().name)))
    mt.pump()
    future.add_done_callback(lambda f: calls.append(("after", f.result(), threading.current_thread().name)))
    main = threading.main_thread().name
    assert calls == [("before", "v", main), ("after", "v", main)]


def test_callback_error_is_logged_not_raised(caplog):
    future = mt.run_on_main(int)
    future.add_done_callback(lambda f: 1 / 0)
    mt.pump()
    assert future.result(0) == 0
    assert any("exception calling callback" in r.getMessage() for r in caplog.records)


def test_cancel_runs_callbacks_and_wakes_wait():
    future = mt.run_on_main(int)
    got = []
    future.add_done_callback(lambda f: got.append(f.cancelled()))
    waiter = []
    t = start_thread(lambda: waiter.append(cf.wait([future], timeout=10)))
    time.sleep(0.05)
    future.cancel()
    t.join(10)
    assert got == [True]
    assert waiter[0].done == {future}
    assert mt.pump() == 0  # takes the cancelled task off the queue


def test_concurrent_futures_wait_and_as_completed_from_a_worker():
    futures = [mt.run_on_main(lambda i=i: i * i) for i in range(20)]
    results = {}

    def worker():
        done, not_done = cf.wait(futures, timeout=30)
        results["wait"] = (len(done), len(not_done))
        results["as_completed"] = sorted(f.result() for f in cf.as_completed(futures, timeout=30))
        results["first"] = cf.wait(futures, return_when=cf.FIRST_COMPLETED, timeout=30)

    with mt.joined_threads(timeout=30) as scope:
        scope.start(worker)
    assert results["wait"] == (20, 0)
    assert results["as_completed"] == sorted(i * i for i in range(20))


def test_wait_first_exception_sees_failures():
    futures = [mt.run_on_main(time.sleep, 0), mt.run_on_main(lambda: 1 / 0), mt.run_on_main(int)]
    out = []
    t = start_thread(lambda: out.append(cf.wait(futures, timeout=30, return_when=cf.FIRST_EXCEPTION)))
    while t.is_alive():
        mt.pump(0.01)
    assert futures[1] in out[0].done


def test_asyncio_wrap_future_in_a_worker_loop():
    future = mt.run_on_main(lambda: "from main")
    out = []

    def worker():
        async def wait():
            return await asyncio.wait_for(asyncio.wrap_future(future), 30)

        out.append(asyncio.run(wait()))

    with mt.joined_threads(timeout=30) as scope:
        scope.start(worker)
    assert out == ["from main"]


def test_asyncio_cancel_propagates_to_the_task():
    ran = []
    future = mt.run_on_main(ran.append, 1)
    out = []

    def worker():
        async def cancel_it():
            wrapped = asyncio.wrap_future(future)
            wrapped.cancel()
            try:
                await wrapped
            except asyncio.CancelledError:
                out.append("cancelled")
            await asyncio.sleep(0.05)  # the cancel reaches the source future via the loop

        asyncio.run(cancel_it())

    start_thread(worker).join(10)
    mt.pump()
    assert out == ["cancelled"]
    assert future.cancelled() and ran == []


def test_result_on_main_thread_drains_instead_of_deadlocking():
    order = []
    mt.run_on_main(order.append, "earlier")
    future = mt.run_on_main(lambda: order.append("target") or 7)
    assert future.result(timeout=10) == 7  # would deadlock if it simply blocked
    assert order == ["earlier", "target"]


def test_result_on_main_waits_for_a_worker_that_submits_later():
    def worker():
        time.sleep(0.05)
        return mt.run_on_main(lambda: "late")

    holder = []
    t = start_thread(lambda: holder.append(worker()))
    t.join(10)
    assert holder[0].result(timeout=10) == "late"


def test_main_thread_waits_for_a_task_that_itself_needs_a_worker():
    # Main waits on F; F's task waits (on main, nested) on G, which a worker submits.
    def inner():
        g_holder = []
        start_thread(lambda: g_holder.append(mt.run_on_main(lambda: "g"))).join(10)
        return g_holder[0].result(timeout=10)

    future = mt.run_on_main(inner)
    assert future.result(timeout=10) == "g"


def test_result_timeout_on_main_thread():
    never = mt.MainThreadFuture()  # not queued: never completes
    started = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        never.result(timeout=0.1)
    assert 0.09 <= time.monotonic() - started < 5


def test_a_task_waiting_on_its_own_future_gets_an_error():
    holder = {}

    def task():
        return holder["f"].result(timeout=1)

    holder["f"] = future = mt.run_on_main(task)
    mt.pump()
    with pytest.raises(RuntimeError, match="cannot wait for its own result"):
        future.result(0)


def test_set_result_twice_is_invalid():
    future = mt.MainThreadFuture()
    assert future.set_running_or_notify_cancel()
    future.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        future.set_result(2)
    with pytest.raises(cf.InvalidStateError):
        future.set_exception(ValueError())


def test_repr_says_state():
    future = mt.run_on_main(lambda: 1 / 0)
    assert "pending" in repr(future)
    mt.pump()
    assert "ZeroDivisionError" in repr(future)


def test_many_waiters_on_one_future():
    future = mt.run_on_main(lambda: "shared")
    results = []
    lock = threading.Lock()

    def waiter():
        value = future.result(timeout=30)
        with lock:
            results.append(value)

    threads = [start_thread(waiter) for _ in range(16)]
    time.sleep(0.05)
    mt.pump()
    for t in threads:
        t.join(30)
    assert results == ["shared"] * 16


def test_cancel_races_with_running():
    # Many cancels racing the main thread: each future ends exactly one way.
    for _ in range(20):
        ran = []
        futures = [mt.run_on_main(ran.append, i) for i in range(500)]
        t = start_thread(lambda futures=futures: [f.cancel() for f in reversed(futures)])
        mt.pump()
        t.join(10)
        mt.pump()
        cancelled = {i for i, f in enumerate(futures) if f.cancelled()}
        assert set(ran).isdisjoint(cancelled)
        assert set(ran) | cancelled == set(range(500))
        assert all(f.done() for f in futures)


def test_main_thread_lock_free_start_and_finish():
    # The run loop starts and finishes futures without the lock unless somebody watches
    # (MainThreadFuture's docstring); a cancelled one is never started.
    states = []
    quiet = mt.run_on_main(lambda: states.append(quiet.running()) or 1)
    watched = mt.run_on_main(lambda: 2)
    cancelled = mt.run_on_main(lambda: 3)
    got = []
    watched.add_done_callback(lambda f: got.append(f.result()))
    assert cancelled.cancel()
    assert mt.pump() == 2
    assert states == [True]
    assert "_sync" in quiet.__dict__ and quiet.__dict__["_sync"] is None  # finished without the lock
    assert (quiet.result(0), watched.result(0), got) == (1, 2, [2])
    assert cancelled.cancelled() and not cancelled.running()


def test_a_waiter_arriving_in_the_middle_of_a_lock_free_finish_waits_for_its_end():
    from mainthread_tasks import _future

    future = mt.MainThreadFuture()
    assert future.set_running_or_notify_cancel()  # the same atomic claim as the run loop's start
    attrs = future.__dict__
    attrs["_result"] = 7
    assert attrs.setdefault("_sync", None) is None  # the main thread's finish: nobody watches
    got = []
    t = start_thread(lambda: got.append(future.result(timeout=10)))
    time.sleep(0.05)  # the waiter arrives between that claim and the state write
    assert got == []
    attrs["_state"] = _future.FINISHED  # the finish ends without notifying anybody
    t.join(2)  # well before result()'s own timeout: it noticed the end of the finish
    assert got == [7]


def test_nan_timeout_is_refused_negative_means_now_inf_means_none():
    future = mt.run_on_main(int)
    outcomes = []

    def worker():
        for timeout in (math.nan, -1):
            try:
                future.result(timeout=timeout)
            except (ValueError, cf.TimeoutError) as exc:
                outcomes.append(type(exc))

    start_thread(worker).join(10)
    assert outcomes == [ValueError, cf.TimeoutError]
    with pytest.raises(ValueError):
        future.result(timeout=math.nan)
    with pytest.raises(ValueError):
        future.exception(timeout=math.nan)
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=-1)
    later = []
    t = start_thread(lambda: later.append(future.result(timeout=math.inf)))  # no OverflowError
    while t.is_alive() and not mt.pump(0.01):
        pass
    t.join(10)
    assert later == [0]
    assert future.result(timeout=math.inf) == 0


# -- CPython 3.11: an object's __dict__ made twice -------------------------------------------------
#
# CPython 3.11 keeps a new object's attributes in an inline values array and makes the __dict__
# object only when somebody asks for it. Making it allocates a dict, the allocation may start a
# garbage collection, and the collection runs Python code (gc.callbacks, finalizers, weakref
# callbacks) during which another thread can take the GIL and ask for the same __dict__: both get a
# dict of their own over the same values array, and whichever dies first frees it under the other
# (the segfault in dict_traverse seen in test_stress on 3.11.7 and under Wine; 3.10 and 3.12+ are
# immune). Every future the package makes must therefore have its __dict__ made by the thread that
# creates it, before any other thread can see it (_future.MADE_BY_ITS_CREATOR).


def _future_makers():
    from mainthread_tasks._future import waited_future

    async def nothing():
        pass

    return {
        "run_on_main": lambda: mt.run_on_main(int),
        "call_on_main's waited_future": lambda: waited_future(int, (), {})[0],
        "run_in_process": lambda: mt.run_in_process(int),
        "run_async": lambda: mt.run_async(nothing()),
    }


_kept_alive: list[object] = []  # on a buggy build, two dicts share one values array: free neither


@pytest.mark.parametrize("maker", list(_future_makers()))
def test_a_future_is_born_with_its_dict_so_no_two_threads_can_each_make_one(maker):
    import gc
    import sys

    from mainthread_tasks import _lifecycle

    future = _future_makers()[maker]()
    seen_by_other = []
    go, done = threading.Event(), threading.Event()

    def other_thread():  # what cancel(), _watch() and add_done_callback() do first
        go.wait(10)
        seen_by_other.append(future.__dict__)
        done.set()

    armed = [True]

    def hand_over_mid_collection(phase, info):
        # The collection that making the main thread's __dict__ started: let the other thread in.
        if phase == "start" and armed[0] and sys._getframe(1).f_code is test_code:
            armed[0] = False
            go.set()
            done.wait(10)

    test_code = sys._getframe().f_code
    thread = threading.Thread(target=other_thread)
    thread.start()
    threshold = gc.get_threshold()
    gc.callbacks.append(hand_over_mid_collection)
    try:
        hoard = [{} for _ in range(200)]  # empty the dict free list: making a dict must allocate
        gc.set_threshold(1)  # ...and any allocation collects
        seen_by_main = future.__dict__  # what _dispatch.run_batch does first with a future
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(hand_over_mid_collection)
        go.set()
        thread.join(10)
        del hoard
    _kept_alive.extend([future, seen_by_main, *seen_by_other])
    assert seen_by_other[0] is seen_by_main, "two __dict__ objects over one values array (CPython 3.11)"
    future.cancel()
    _lifecycle.LIFECYCLE.reject_queued()


# -- wait()/as_completed() with our futures and a stock one --------------------------------


def test_wait_on_sets_mixing_our_futures_and_a_stock_one_never_deadlocks(fast_switching):
    stock = concurrent.futures.Future()  # a pool job both threads wait on
    ours = [mt.run_on_main(int) for _ in range(64)]
    stop = threading.Event()

    def waiter(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            mine = rng.sample(ours, 3) + [stock]
            concurrent.futures.wait(mine, timeout=0)
            for _ in concurrent.futures.as_completed([*mine[:1], stock], timeout=None) if False else ():
                pass

    threads = [threading.Thread(target=waiter, args=(seed,), daemon=True) for seed in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(5)
    assert not any(t.is_alive() for t in threads), "concurrent.futures.wait deadlocked"
    stock.set_result(None)
    mt.pump()
    done, _ = concurrent.futures.wait([*ours, stock], timeout=5)
    assert len(done) == 65


def test_each_future_has_its_own_lock_made_lazily():
    a, b = mt.run_on_main(int), mt.run_on_main(int)
    assert "_lock" not in a.__dict__
    assert a._condition is not b._condition and a._lock is not b._lock
    mt.pump()


# -- set_result on a task's own Future ----------------------------------------------------


def test_a_task_setting_its_own_result_keeps_the_first_and_is_logged(caplog):
    holder = {}

    def task():
        holder["future"].set_result("the task's own")
        return "the return value"

    holder["future"] = future = mt.run_on_main(task)
    with caplog.at_level(logging.WARNING, logger="mainthread_tasks"):
        mt.pump()
    assert future.result() == "the task's own"
    assert "first result wins" in caplog.text


def test_set_result_misuse_while_somebody_watches_does_not_escape_pump(caplog):
    holder = {}
    called = []

    def task():
        holder["future"].set_exception(ValueError("set by the task"))
        return "ignored"

    holder["future"] = future = mt.run_on_main(task)
    future.add_done_callback(called.append)  # watched: the finish takes the lock
    with caplog.at_level(logging.WARNING, logger="mainthread_tasks"):
        assert mt.pump() == 1
    assert called == [future] and str(future.exception()) == "set by the task"
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.set_result(1)  # outside the dispatcher, misuse still raises as with any Future
