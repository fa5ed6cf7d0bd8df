"""Holding queued tasks while a render/bake/composite job runs (the UI timer, driven by hand here).

``_blender._is_job_running`` stands for ``bpy.app.is_job_running``; the real render in Blender's UI
is a step of tests/gui/addon_session.py.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _args, _blender, _hold, _queue, _wake
from tests import support


class Jobs:
    """A stand-in for bpy.app.is_job_running that counts its calls."""

    def __init__(self):
        self.running = set()
        self.calls = 0

    def __call__(self, job_type):
        self.calls += 1
        return job_type in self.running


@pytest.fixture
def jobs(monkeypatch):
    fake = Jobs()
    monkeypatch.setattr(_blender, "_is_job_running", fake)
    yield fake
    fake.running.clear()
    _blender._drain_timer()  # ends a hold the test left
    mt.pump()
    _hold.HOLD.reset()


def test_tasks_wait_while_a_render_runs_and_run_in_order_after(jobs):
    ran = []
    jobs.running.add("RENDER")
    for i in range(5):
        mt.post_on_main(ran.append, i)
    future = mt.run_on_main(ran.append, "future")
    assert _blender._drain_timer() == _hold.HOLD_POLL
    assert _blender._drain_timer() == _hold.HOLD_POLL
    s = mt.stats()
    assert ran == [] and s.held and s.held_reason == "a RENDER job is running" and s.holds == 1
    assert s.pending == 6 and not future.done()
    mt.post_on_main(ran.append, "late")  # submitted during the hold: after the held ones
    _blender._drain_timer()
    assert ran == [] and mt.stats().pending == 7
    jobs.running.clear()
    assert _blender._drain_timer() == 0.0
    assert ran == [0, 1, 2, 3, 4, "future", "late"] and future.done()
    s = mt.stats()
    assert not s.held and s.held_reason == "" and s.pending == 0 and s.completed == 7 and s.holds == 1


@pytest.mark.parametrize("job", _hold.HOLDING_JOBS)
def test_every_data_locking_job_holds(jobs, job):
    ran = []
    jobs.running.add(job)
    mt.post_on_main(ran.append, 1)
    _blender._drain_timer()
    assert ran == [] and mt.stats().held_reason == f"a {job} job is running"


def test_previews_and_shader_compilation_do_not_hold(jobs):
    ran = []
    jobs.running.update({"RENDER_PREVIEW", "SHADER_COMPILATION"})
    mt.post_on_main(ran.append, 1)
    _blender._drain_timer()
    assert ran == [1] and not mt.stats().held


def test_a_worker_blocked_in_call_on_main_waits_for_the_job(jobs):
    jobs.running.add("OBJECT_BAKE")
    got = []
    worker = support.start_thread(lambda: got.append(mt.call_on_main(lambda: "baked")))
    support.wait_until(lambda: mt.stats().pending)
    for _ in range(20):
        _blender._drain_timer()
    assert got == [] and worker.is_alive()
    jobs.running.clear()
    _blender._drain_timer()
    worker.join(10)
    assert got == ["baked"]


def test_ui_only_tasks_run_during_the_hold_ahead_of_the_held_ones(jobs):
    ran = []
    jobs.running.add("RENDER")
    mt.post_on_main(ran.append, "data 1")
    label = mt.ui_only(ran.append)
    mt.post_on_main(label, "label 1")
    future = mt.run_on_main(mt.ui_only(lambda: ran.append("label 2") or "ok"))
    mt.post_on_main(ran.append, "data 2")
    _blender._drain_timer()
    assert ran == ["label 1", "label 2"] and future.result(0) == "ok"
    assert mt.stats().pending == 2
    jobs.running.clear()
    _blender._drain_timer()
    assert ran == ["label 1", "label 2", "data 1", "data 2"]


@pytest.mark.allow_errors("logged", reason="the interrupted pass is logged on purpose; caplog checks it")
def test_a_ctrl_c_in_a_ui_only_task_during_the_hold_loses_nothing(jobs, caplog):
    def interrupted():
        raise KeyboardInterrupt

    ran = []
    jobs.running.add("RENDER")
    mt.post_on_main(ran.append, "data")
    mt.post_on_main(mt.ui_only(interrupted))
    mt.post_on_main(mt.ui_only(ran.append), "label")
    assert _blender._drain_timer() == _hold.HOLD_POLL  # the timer never raises: Blender would drop it
    assert "interrupted" in caplog.text
    assert ran == [] and mt.stats().pending == 2 and mt.stats().held  # the data task is still held
    jobs.running.clear()
    _blender._drain_timer()
    assert ran == ["label", "data"]


def test_ui_only_keeps_the_function_recognisable():
    def set_status(text):
        """Sets the status."""
        return text

    wrapped = mt.ui_only(set_status)
    assert wrapped("x") == "x" and wrapped.__name__ == "set_status" and wrapped.__doc__ == "Sets the status."
    assert mt.ui_only(wrapped) is wrapped
    assert _args.task_name(wrapped).endswith("set_status")
    with pytest.raises(TypeError, match="callable"):
        mt.ui_only("print('x')")


def test_pump_runs_held_tasks_even_during_the_job(jobs):
    """The main thread asked for them (in the UI, waiting for the job to end would never end)."""
    ran = []
    jobs.running.add("RENDER")
    mt.post_on_main(ran.append, 1)
    _blender._drain_timer()
    mt.post_on_main(ran.append, 2)
    assert ran == [] and mt.pump() == 2 and ran == [1, 2]
    future = mt.run_on_main(lambda: "x")
    _blender._drain_timer()
    assert future.result(timeout=5) == "x"  # waiting on the main thread runs it


def test_the_last_unregister_cancels_held_tasks(jobs):
    mt.register()
    _blender._is_job_running = jobs  # register() bound bpy.app's
    jobs.running.add("RENDER")
    future = mt.run_on_main(int)
    submitted = threading.Event()

    def worker():
        submitted.set()
        mt.call_on_main(int)

    raised = []
    thread = support.start_thread(lambda: raised.append(support.raised_in_thread(worker)))
    submitted.wait(10)
    support.wait_until(lambda: mt.stats().pending == 2)
    _blender._drain_timer()
    assert mt.stats().pending == 2 and len(_queue.held) == 2
    mt.unregister()
    thread.join(10)
    assert future.cancelled() and isinstance(raised[0], mt.SchedulerStopped) and mt.stats().pending == 0


def test_sources_are_held_except_ui_only_ones(jobs):
    class Source:
        def __init__(self, ui_only):
            self.ui_only = ui_only
            self.polls = 0

        def fds(self):
            return ()

        def busy(self):
            return True

        def due(self):
            return 0.0

        def poll(self, deadline=None):
            self.polls += 1
            return 0

        def stop(self, message):
            pass

    data, ui = Source(False), Source(True)
    for source in (data, ui):
        _wake.add_source(source)
    try:
        jobs.running.add("COMPOSITE")
        for _ in range(3):
            assert _blender._drain_timer() == _hold.HOLD_POLL
        assert (data.polls, ui.polls) == (0, 3) and mt.stats().held
        jobs.running.clear()
        _blender._drain_timer()
        assert data.polls == 1 and not mt.stats().held
    finally:
        for source in (data, ui):
            _wake.remove_source(source)


def test_no_job_check_while_idle(jobs):
    """An empty queue costs what it cost before: the job check runs only in passes with tasks."""
    for _ in range(100):
        _blender._drain_timer()
    assert jobs.calls == 0
    mt.post_on_main(int)
    _blender._drain_timer()
    assert jobs.calls == len(_hold.HOLDING_JOBS)


@pytest.mark.allow_errors("logged", reason="the failing job check is logged on purpose; caplog checks it")
def test_a_failing_job_check_never_breaks_the_timer(jobs, caplog):
    def broken(_job):
        raise RuntimeError("no window manager")

    _blender._is_job_running = broken
    ran = []
    mt.post_on_main(ran.append, 1)
    assert _blender._drain_timer() == 0.0 and ran == [1]
    assert "checking for render/bake/composite jobs failed" in caplog.text


def test_many_threads_submitting_across_a_hold_lose_nothing_and_keep_order(jobs):
    """Per-thread order holds across the hold: held tasks run before later ones."""
    seen: dict[int, list[int]] = {}
    stop = threading.Event()

    def producer(t):
        i = 0
        while not stop.is_set() or i < 200:
            mt.post_on_main(seen.setdefault(t, []).append, i)
            i += 1

    threads = [support.start_thread(producer, t) for t in range(4)]
    for phase in range(60):
        if phase == 10:
            jobs.running.add("RENDER")
        if phase == 40:
            jobs.running.clear()
        _blender._drain_timer()
    stop.set()
    for thread in threads:
        thread.join(10)
    while mt.stats().pending:
        _blender._drain_timer()
    assert mt.stats().holds == 1
    for t, values in seen.items():
        assert values == list(range(len(values))), t
    assert isinstance(mt.run_on_main(int), cf.Future)
    mt.pump()
