"""ProcessPool(cluster=...): tasks on a real Dask cluster, results on the main thread, no thread in Blender.

The cluster is real and started here: ``tests/dask_cluster.py`` (a LocalCluster, scheduler and 2
worker processes on 127.0.0.1) run by the interpreter with ``distributed`` that scripts/run_tests.py
names in MAINTHREAD_TASKS_DASK_PYTHON (a venv of scripts/_setup.py; the sid chroot's own in the 5.2
tiers); the broker runs that interpreter too. Blender's Python never imports dask. Runs in every
tier: plain CPython, Blender 3.4.1 --background, Blender 5.2 in the chroot, the bpy wheels.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _interpreter
from tests import process_work as work
from tests import support
from tests.dask_support import Cluster, dask_python_path
from tests.support import process_alive as alive
from tests.support import run_script, start_thread

pytestmark = [pytest.mark.timeout(120), pytest.mark.cluster]


@pytest.fixture(scope="module")
def dask_python() -> str:
    return dask_python_path()


@pytest.fixture(scope="module")
def cluster(dask_python):
    started = Cluster(dask_python)
    yield started
    started.close()


@pytest.fixture
def pool(cluster, dask_python):
    made = mt.ProcessPool(cluster=cluster.address, python=dask_python)
    yield made
    made._stop("test over")


def _pump_until(predicate, timeout=60.0, what="the condition"):
    deadline = time.monotonic() + timeout
    seen = set()
    while not predicate():
        seen.update(support.threads())
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        mt.pump(0.01)
    return seen


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# -- results ----------------------------------------------------------------------------------------


def test_results_come_from_cluster_workers_with_only_the_main_thread_in_blender(pool, cluster):
    futures = [pool.submit(work.pid) for _ in range(8)]
    called_on = []
    for future in futures:
        future.add_done_callback(lambda f: called_on.append(threading.current_thread()))
    seen = _pump_until(lambda: all(f.done() for f in futures), what="the cluster's results")
    seen.update(support.threads())
    pids = {f.result(0) for f in futures}
    assert pids <= set(cluster.workers) and os.getpid() not in pids, (pids, cluster.workers)
    assert pool._processes()[0] not in pids  # the broker only relays
    assert seen == {threading.main_thread()}, seen
    assert called_on == [threading.main_thread()] * 8
    assert "distributed" not in sys.modules and "dask" not in sys.modules
    s = mt.stats()
    assert (s.process_submitted, s.process_completed, s.process_running, s.processes) == (8, 8, 0, 1), s


def test_map_and_a_worker_thread_waiting(pool):
    assert list(pool.map(work.square, range(6))) == [i * i for i in range(6)]
    outcome = []
    thread = start_thread(lambda: outcome.append(pool.submit(work.add, 2, c=3).result(60)))
    _pump_until(lambda: not thread.is_alive(), what="the worker thread")
    assert outcome == [5]


def test_many_in_flight_each_outcome_reaches_its_own_future(pool):
    """The broker fetches finished results in batches: with 400 tasks in flight, results, errors
    and cancellations all reach the right Future, nothing left pending."""
    futures = [
        pool.submit(work.fail, "value", f"task {i}") if i % 7 == 3 else pool.submit(work.square, i) for i in range(400)
    ]
    cancelled = {i for i in range(49, 400, 50) if futures[i].cancel()}  # those still queued
    _pump_until(lambda: all(f.done() for f in futures), what="every future")
    assert cancelled, "every task had run before it could be cancelled"
    for i, future in enumerate(futures):
        if i in cancelled:
            assert future.cancelled(), i
        elif i % 7 == 3:
            error = future.exception(0)
            assert type(error) is ValueError and str(error) == f"task {i}", (i, error)
        else:
            assert future.result(0) == i * i, i


def test_the_workers_run_the_code_of_this_copy_of_the_library(tmp_path, monkeypatch):
    """execute goes to the workers once, in a worker plugin named with a hash of its code: two
    copies of the library (two add-ons) on one cluster each run their own."""
    import shutil

    from mainthread_tasks import _broker, _process_child

    name, plugin = _broker._execute_on_workers(object, _process_child.execute)
    assert plugin.name == name and plugin.execute is _process_child.execute and plugin.idempotent
    assert name == _broker._plugin_name() and name.startswith("mainthread_tasks-execute-")
    copy = tmp_path / "copy"
    shutil.copytree(Path(_broker.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "_process_child.py").write_text((copy / "_process_child.py").read_text() + "\n# another version\n")
    monkeypatch.setattr(_broker, "_HERE", str(copy))
    assert _broker._plugin_name() != name
    with pytest.raises(RuntimeError, match="not on a Dask worker"):  # here, in no worker
        _broker.run_on_worker(name, b"", {}, 1)


def test_equal_calls_are_separate_tasks(pool, tmp_path):
    trace = tmp_path / "ran"
    futures = [pool.submit(work.append_pid, str(trace)) for _ in range(5)]
    _pump_until(lambda: all(f.done() for f in futures))
    assert len(_lines(trace)) == 5, "Dask merged equal submissions"


# -- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, error", [("value", ValueError), ("custom", work.CustomError)])
def test_an_exception_keeps_its_type_and_the_workers_traceback(pool, kind, error):
    with pytest.raises(error, match="bad 42") as info:
        pool.submit(work.fail, kind, "bad 42").result(60)
    cause = str(info.value.__cause__)
    assert "in fail" in cause and "process_work.py" in cause, cause
    assert mt.stats().process_failed == 1


def test_a_function_the_workers_cannot_import_fails_with_their_error(pool, tmp_path, monkeypatch):
    (tmp_path / "mt_only_here.py").write_text("def f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import mt_only_here

    try:
        with pytest.raises(ModuleNotFoundError, match="mt_only_here"):
            pool.submit(mt_only_here.f).result(60)
    finally:
        del sys.modules["mt_only_here"]


# -- cancelling --------------------------------------------------------------------------------------


def test_cancelling_a_task_queued_on_the_cluster_cancels_it_there(pool, tmp_path):
    trace = tmp_path / "ran"
    blockers = [pool.submit(work.sleep_then, 1.5, i) for i in range(2)]  # both workers busy
    queued = [pool.submit(work.append_pid, str(trace)) for _ in range(3)]
    kept = pool.submit(work.square, 7)
    assert all(f.cancel() for f in queued) and all(f.cancelled() for f in queued)
    assert [f.result(60) for f in blockers] == [0, 1] and kept.result(60) == 49
    time.sleep(1.0)  # what the cluster would still run, it would run now
    mt.pump()
    assert _lines(trace) == [], "a cancelled task ran on the cluster"
    s = mt.stats()
    assert (s.process_completed, s.process_cancelled, s.process_running) == (3, 3, 0), s


def test_progress_attach_cancels_cluster_work(pool, tmp_path):
    trace = tmp_path / "ran"
    blockers = [pool.submit(work.sleep_then, 1.0, i) for i in range(2)]
    bar = mt.progress("Cluster work", total=2)
    attached = [bar.attach(pool.submit(work.append_pid, str(trace))) for _ in range(2)]
    bar.cancel()
    assert all(f.cancelled() for f in attached)
    assert [f.result(60) for f in blockers] == [0, 1]
    time.sleep(0.5)
    mt.pump()
    bar.close()
    assert _lines(trace) == []


# -- failures ----------------------------------------------------------------------------------------


def test_a_worker_killed_mid_task_does_not_leave_the_future_pending(pool, cluster, tmp_path):
    # Killed from outside once: Dask runs the task again on another worker.
    where = tmp_path / "pid"
    future = pool.submit(work.pid_then_sleep, str(where), 2.0)
    _pump_until(where.exists, what="the task to start")
    victim = int(where.read_text())
    support.kill_hard(victim)
    assert future.result(90) != victim
    # A task that kills every worker that runs it: after ALLOWED_FAILURES + 1 deaths Dask gives
    # up, and the Future fails with ProcessDied.
    with pytest.raises(mt.ProcessDied, match="KilledWorker") as info:
        pool.submit(work.exit_hard, 7).result(90)
    assert "lost on the Dask cluster" in str(info.value)
    assert pool.submit(work.square, 5).result(90) == 25  # the cluster goes on


def test_the_broker_dying_fails_every_future_in_flight(pool):
    futures = [pool.submit(work.sleep_then, 30) for _ in range(3)]
    mt.pump()
    (broker,) = pool._processes()
    support.kill_hard(broker)
    for future in futures:
        with pytest.raises(mt.ProcessDied, match=f"broker process \\(pid {broker}\\)"):
            future.result(30)
    assert pool.submit(work.square, 3).result(60) == 9  # a new broker
    assert pool._processes() != [broker]


def test_the_scheduler_going_away_fails_the_futures(dask_python):
    own = Cluster(dask_python)
    try:
        pool = mt.ProcessPool(cluster=own.address, python=dask_python)
        assert pool.submit(work.square, 2).result(60) == 4
        running = [pool.submit(work.sleep_then, 60) for _ in range(3)]
        mt.pump()
        (broker,) = pool._processes()
        started = time.monotonic()
        support.kill_hard(own.pid)  # the scheduler's process
        for future in running:
            with pytest.raises(mt.ProcessDied, match="Dask scheduler"):
                future.result(30)
        assert time.monotonic() - started < 15
        _pump_until(lambda: not alive(broker), 15, "the broker to end")
        pool._stop("test over")
    finally:
        own.close()


def test_an_interpreter_without_distributed_is_named(cluster):
    pool = mt.ProcessPool(cluster=cluster.address, python=_interpreter.interpreter())
    try:
        with pytest.raises(mt.ProcessDied, match="cannot import distributed"):
            pool.submit(work.square, 2).result(60)
    finally:
        pool._stop("test over")


# -- shutting down -----------------------------------------------------------------------------------


def test_shutdown_waits_for_work_in_flight_then_ends_the_broker(pool):
    futures = [pool.submit(work.sleep_then, 0.3, i) for i in range(4)]
    (broker,) = pool._processes()
    pool.shutdown()
    assert [f.result(0) for f in futures] == [0, 1, 2, 3]
    assert not alive(broker)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(work.square, 1)


def test_shutdown_cancelling_futures_cancels_them_on_the_cluster(pool, tmp_path):
    trace = tmp_path / "ran"
    blockers = [pool.submit(work.sleep_then, 1.0, i) for i in range(2)]
    queued = [pool.submit(work.append_pid, str(trace)) for _ in range(3)]
    mt.pump()
    (broker,) = pool._processes()
    pool.shutdown(cancel_futures=True)
    assert all(f.cancelled() for f in blockers + queued)
    assert not alive(broker)
    time.sleep(1.5)  # the blockers' time: what the cluster still had would have run by now
    assert _lines(trace) == []


def test_the_last_unregister_ends_the_broker_and_cancels_cluster_work(pool, tmp_path):
    trace = tmp_path / "ran"
    mt.register()
    try:
        blockers = [pool.submit(work.sleep_then, 1.0, i) for i in range(2)]
        queued = pool.submit(work.append_pid, str(trace))
        mt.pump()
        (broker,) = pool._processes()
    finally:
        mt.unregister()
    for future in (*blockers, queued):
        with pytest.raises(mt.SchedulerStopped):
            future.result(0)
    assert not alive(broker)
    time.sleep(1.5)
    assert _lines(trace) == []
    mt.register()  # the same pool works again after register()
    try:
        assert pool.submit(work.square, 6).result(60) == 36
    finally:
        mt.unregister()


EXIT_WITH_CLUSTER_WORK = r"""
import os, time
import mainthread_tasks as mt
from tests import process_work as work

pool = mt.ProcessPool(cluster={address!r}, python={python!r})
assert pool.submit(work.square, 3).result(60) == 9
running = [pool.submit(work.append_pid, {trace!r}) for _ in range(1)] + [pool.submit(work.sleep_then, 60)]
mt.pump()
print("BROKER", pool._processes()[0], flush=True)
print("SCRIPT ENDS AT", time.time(), flush=True)
"""


def test_interpreter_exit_ends_the_broker(cluster, dask_python, tmp_path):
    trace = tmp_path / "ran"
    script = EXIT_WITH_CLUSTER_WORK.format(address=cluster.address, python=dask_python, trace=str(trace))
    proc = run_script(script, tmp_path, timeout=120)
    ended = time.time()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    broker = int(out.split("BROKER ", 1)[1].split()[0])
    assert ended - float(out.split("SCRIPT ENDS AT ", 1)[1].split()[0]) < 10, out
    deadline = time.monotonic() + 10
    while alive(broker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(broker), "the broker outlived the interpreter"


def test_blenders_python_never_imports_dask():
    assert "distributed" not in sys.modules and "dask" not in sys.modules


def test_bad_arguments_are_refused_at_once():
    with pytest.raises(ValueError, match="Dask scheduler address"):
        mt.ProcessPool(cluster="localhost:8786")
    with pytest.raises(ValueError, match="workers= is for a local pool"):
        mt.ProcessPool(2, cluster="tcp://127.0.0.1:1")
    with pytest.raises(TypeError, match="python must be"):
        mt.ProcessPool(cluster="tcp://127.0.0.1:1", python=3)
