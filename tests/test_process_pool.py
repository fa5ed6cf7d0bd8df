"""ProcessPool(workers=n): a local pool of an add-on's own, an Executor like CPython's, results on
the main thread (the shared pool of run_in_process is tests/test_process.py's)."""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import threading
import time

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _process
from tests import process_work as work
from tests import support
from tests.support import process_alive as alive
from tests.support import start_thread


@pytest.fixture
def pool():
    made = mt.ProcessPool(workers=2)
    yield made
    made._stop("test over")


def _pump_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        mt.pump(0.01)


def test_it_is_an_executor_with_results_on_the_main_thread(pool):
    assert isinstance(pool, cf.Executor)
    future = pool.submit(work.add, 1, 2, c=4)
    called_on = []
    future.add_done_callback(lambda f: called_on.append(threading.current_thread()))
    assert future.result(60) == 7 and called_on == [threading.main_thread()]
    assert list(pool.map(work.square, range(10))) == [i * i for i in range(10)]
    assert support.threads() == [threading.main_thread()]


def test_its_own_size_whatever_the_shared_pool_is(pool):
    previous = mt.set_process_workers(1)
    try:
        futures = [pool.submit(work.sleep_then, 0.4, i) for i in range(2)]
        assert [f.running() for f in futures] == [True, True]  # two workers at once, not one
        assert len(set(pool._processes())) == 2 and _process.SHARED._processes() == []
        assert [f.result(60) for f in futures] == [0, 1]
    finally:
        mt.set_process_workers(previous)


def test_stats_count_every_pool(pool):
    pool.submit(work.square, 2).result(60)
    mt.run_in_process(work.square, 3).result(60)
    s = mt.stats()
    assert (s.process_submitted, s.process_completed, s.processes) == (2, 2, 2), s
    _process.SHARED._stop("test over")


def test_shutdown_waits_and_ends_the_workers_then_submit_raises(pool):
    futures = [pool.submit(work.sleep_then, 0.2, i) for i in range(3)]
    pids = pool._processes()
    pool.shutdown()
    assert [f.result(0) for f in futures] == [0, 1, 2]
    assert not any(alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        pool.submit(work.square, 1)
    pool.shutdown()  # idempotent


def test_shutdown_cancel_futures_cancels_what_no_worker_started(pool):
    running = [pool.submit(work.sleep_then, 0.3, i) for i in range(2)]
    waiting = [pool.submit(work.square, i) for i in range(4)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in waiting)
    _pump_until(lambda: all(f.done() for f in running))
    assert [f.result(0) for f in running] == [0, 1]
    _pump_until(lambda: pool._processes() == [])
    assert mt.stats().process_cancelled == 4


def test_the_context_manager_shuts_down_with_wait(pool):
    with pool as same:
        futures = [same.submit(work.sleep_then, 0.1, i) for i in range(3)]
    assert [f.result(0) for f in futures] == [0, 1, 2] and pool._processes() == []


def test_shutdown_from_a_worker_thread_waits_for_the_main_thread(pool):
    futures = [pool.submit(work.sleep_then, 0.2, i) for i in range(2)]
    done = []
    thread = start_thread(lambda: (pool.shutdown(), done.append(True)))
    _pump_until(lambda: not thread.is_alive())
    assert done == [True] and [f.result(0) for f in futures] == [0, 1]


def test_it_starts_again_after_unregister_and_register(pool):
    mt.register()
    pid = pool.submit(work.pid).result(60)
    mt.unregister()
    assert not alive(pid)
    with pytest.raises(mt.SchedulerStopped):
        pool.submit(work.pid)
    mt.register()
    try:
        assert pool.submit(work.pid).result(60) not in (pid, os.getpid())
    finally:
        mt.unregister()


def test_bad_arguments():
    for bad in (0, 257):
        with pytest.raises(ValueError, match="1 .. 256"):
            mt.ProcessPool(bad)
    for bad in (1.5, "2", True):
        with pytest.raises(TypeError):
            mt.ProcessPool(bad)


def test_a_python_of_another_version_is_refused(tmp_path):
    fake = support.python_2_7(tmp_path)
    pool = mt.ProcessPool(1, python=str(fake))
    with pytest.raises(RuntimeError, match="Python 2.7"):
        pool.submit(work.square, 2)
    assert mt.stats().process_submitted == 0


def test_python_of_blenders_version_is_used(tmp_path):
    pool = mt.ProcessPool(1, python=sys.executable if not support.REAL_BLENDER else _interp())
    try:
        assert pool.submit(work.square, 3).result(60) == 9
    finally:
        pool._stop("test over")


def _interp():
    from mainthread_tasks import _interpreter

    return _interpreter.interpreter()
