"""The public surface: the names of the contract exist, ``__all__`` lists exactly them."""

from __future__ import annotations

import concurrent.futures
import inspect

import mainthread_tasks

CONTRACT = {
    "run_on_main",
    "call_on_main",
    "post_on_main",
    "main_thread",
    "is_main_thread",
    "stats",
    "pump",
    "joined_threads",
    "register",
    "unregister",
    "MainThreadTasksError",
    "SchedulerStopped",
    "NotMainThreadError",
    "ThreadsStillRunning",
    "run_in_process",
    "set_process_workers",
    "ProcessDied",
    "ProcessPool",
    # part two: add-on ergonomics
    "ui_context",
    "NoSuchArea",
    "progress",
    "Progress",
    "strict_mode",
}


def test_all_is_a_sorted_tuple_of_existing_names():
    assert isinstance(mainthread_tasks.__all__, tuple)
    assert list(mainthread_tasks.__all__) == sorted(mainthread_tasks.__all__)
    for name in mainthread_tasks.__all__:
        assert hasattr(mainthread_tasks, name), name


def test_all_covers_the_contract_and_every_public_name():
    assert CONTRACT <= set(mainthread_tasks.__all__)
    for name in mainthread_tasks.__all__:  # ProcessDied is made on first use
        getattr(mainthread_tasks, name)
    public = {
        name
        for name, value in vars(mainthread_tasks).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name not in ("bl_info", "annotations")
    }
    assert public == set(mainthread_tasks.__all__)


def test_error_hierarchy():
    m = mainthread_tasks
    assert issubclass(m.SchedulerStopped, m.MainThreadTasksError)
    assert issubclass(m.SchedulerStopped, RuntimeError)
    assert issubclass(m.NotMainThreadError, m.MainThreadTasksError)
    assert issubclass(m.NotMainThreadError, RuntimeError)
    assert issubclass(m.ThreadsStillRunning, m.MainThreadTasksError)
    assert issubclass(m.ThreadsStillRunning, TimeoutError)
    assert issubclass(m.ProcessDied, m.MainThreadTasksError)
    # Imported only now, after mainthread_tasks made ProcessDied: importing multiprocessing from a
    # --python script crashes Debian's Blender 3.4.1 at exit unless its __mp_main__ alias goes.
    from concurrent.futures.process import BrokenProcessPool

    assert issubclass(m.ProcessDied, BrokenProcessPool)


def test_future_is_a_real_concurrent_future():
    future = mainthread_tasks.run_on_main(int)
    assert isinstance(future, concurrent.futures.Future)
    assert mainthread_tasks.pump() == 1
    assert future.result() == 0


def test_stats_has_the_contract_fields():
    s = mainthread_tasks.stats()
    for name in ("submitted", "completed", "failed", "cancelled", "pending", "holds"):
        assert isinstance(getattr(s, name), int), name
    assert s.held is False and s.held_reason == ""


def test_bl_info_matches_the_package_version():
    version = tuple(int(part) for part in mainthread_tasks.__version__.split("."))
    assert mainthread_tasks.bl_info["version"] == version
