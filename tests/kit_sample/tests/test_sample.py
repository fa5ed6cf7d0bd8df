"""The sample suite: what each test does is in its name; tests/test_testing_kit.py checks the verdicts."""

import ctypes
import os
import threading

import bpy
import kit_sample_addon
import pytest

import mainthread_tasks
from mainthread_tasks.testing import pump_until


def test_the_addon_is_enabled_from_the_temporary_user_folder():
    assert "kit_sample_addon" in bpy.context.preferences.addons
    assert hasattr(bpy.context.scene, "kit_sample_value")
    folder = bpy.utils.resource_path("USER")
    assert folder == os.environ["BLENDER_USER_RESOURCES"] and "mainthread_tasks-testing-" in folder
    for kind in ("CONFIG", "SCRIPTS", "DATAFILES"):
        assert bpy.utils.user_resource(kind).startswith(folder), kind


def test_a_timer_fires_by_its_intervals_during_pump_until():
    kit_sample_addon.start_ticking()
    pump_until(lambda: kit_sample_addon.ticks == 3, timeout=5)
    assert not bpy.app.timers.is_registered(kit_sample_addon.tick)


def test_scene_changes_stay_in_their_test_1():
    bpy.context.scene.kit_sample_value = 7
    bpy.ops.mesh.primitive_cube_add()


def test_scene_changes_stay_in_their_test_2():
    assert bpy.context.scene.kit_sample_value == 0
    assert sorted(o.name for o in bpy.data.objects) == ["Camera", "Cube", "Light"]


def test_leaks_a_thread():
    threading.Thread(target=threading.Event().wait, args=(10,), name="leaky-worker", daemon=True).start()


def test_leaks_a_timer():
    bpy.app.timers.register(kit_sample_addon.tick, first_interval=100)


def test_leaks_a_handler():
    bpy.app.handlers.depsgraph_update_post.append(lambda *args: None)


@pytest.mark.allow_leaks("threads", reason="the worker outlives the test on purpose")
def test_allowed_to_leak_a_thread():
    threading.Thread(target=threading.Event().wait, args=(10,), name="allowed-worker", daemon=True).start()


def test_a_post_on_main_task_fails():
    mainthread_tasks.post_on_main(lambda: 1 / 0)
    mainthread_tasks.pump()


def test_a_thread_fails():
    thread = threading.Thread(target=lambda: {}["missing"], name="failing-worker")
    thread.start()
    thread.join()


def test_a_handler_fails():
    @bpy.app.handlers.persistent
    def broken_handler(*args):
        raise ValueError("broken handler")

    bpy.app.handlers.depsgraph_update_post.append(broken_handler)
    try:
        bpy.ops.mesh.primitive_cube_add()
        bpy.context.view_layer.update()
    finally:
        bpy.app.handlers.depsgraph_update_post.remove(broken_handler)


def test_a_timer_fails():
    def broken_timer():
        raise RuntimeError("broken timer")

    bpy.app.timers.register(broken_timer)
    pump_until(lambda: not bpy.app.timers.is_registered(broken_timer), timeout=5)


def test_expected_errors_are_taken_from_swallowed_errors(swallowed_errors):
    mainthread_tasks.post_on_main(lambda: 1 / 0)
    pump_until(lambda: swallowed_errors, timeout=5)
    (error,) = swallowed_errors
    assert error.kind == "logged" and isinstance(error.exception, ZeroDivisionError)
    swallowed_errors.clear()


def test_crashes_blender():
    ctypes.string_at(0)  # a segfault, as a broken C extension would cause


def test_runs_after_the_crash_in_a_fresh_blender():
    assert len(bpy.data.objects) == 3


@pytest.mark.gui
def test_in_the_real_ui_a_timer_fires_during_pump_until():
    assert not bpy.app.background
    assert any(area.type == "VIEW_3D" for area in bpy.context.window.screen.areas)
    kit_sample_addon.start_ticking()
    pump_until(lambda: kit_sample_addon.ticks == 3, timeout=5)
