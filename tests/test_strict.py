"""strict_mode(): each caught use of bpy raises NotMainThreadError in a worker and works on the main
thread, in real Blender; off, Blender's own functions and classes are back."""

from __future__ import annotations

import _thread
import logging
import time
import types

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _strict
from tests import support


def test_bad_arguments():
    with pytest.raises(TypeError, match="True or False"):
        mt.strict_mode(1)
    assert isinstance(support.raised_in_thread(lambda: mt.strict_mode(True)), mt.NotMainThreadError)


@pytest.mark.fake_bpy
def test_without_blender_it_says_so():
    with pytest.raises(mt.MainThreadTasksError, match="needs Blender's bpy module"):
        mt.strict_mode(True)
    assert mt.strict_mode(False) is False


blender = pytest.mark.blender


def _bpy():
    import bpy

    return bpy


@pytest.fixture
def strict():
    assert mt.strict_mode(True) is False
    yield _bpy()
    mt.strict_mode(False)


def _in_worker(fn):
    return support.raised_in_thread(fn, name="strict-worker")


def _noop_timer():
    return None


CAUGHT = {
    "bpy.app.timers.register()": lambda bpy: bpy.app.timers.register(_noop_timer, first_interval=60.0),
    "bpy.app.timers.unregister()": lambda bpy: bpy.app.timers.unregister(_noop_timer),
    "bpy.ops.object.select_all()": lambda bpy: bpy.ops.object.select_all(action="DESELECT"),
    "bpy.ops.object.select_all.poll()": lambda bpy: bpy.ops.object.select_all.poll(),
    "bpy.data": lambda bpy: bpy.data.objects,
    "bpy.context": lambda bpy: bpy.context.scene,
}


@blender
@pytest.mark.parametrize("what", list(CAUGHT))
def test_a_worker_gets_not_main_thread_error_before_blender_is_reached(strict, what):
    bpy = strict
    error = _in_worker(lambda: CAUGHT[what](bpy))
    assert isinstance(error, mt.NotMainThreadError), error
    message = str(error)
    assert message.startswith(f"strict mode: {what} called from thread 'strict-worker'")
    assert "post_on_main" in message
    assert not bpy.app.timers.is_registered(_noop_timer)  # the worker's call never reached Blender


@blender
def test_the_same_calls_work_on_the_main_thread(strict):
    bpy = strict
    bpy.app.timers.register(_noop_timer, first_interval=60.0)
    assert bpy.app.timers.is_registered(_noop_timer)
    bpy.app.timers.unregister(_noop_timer)
    assert bpy.ops.object.select_all.poll() in (True, False)
    assert isinstance(bpy.ops.object.select_all(action="DESELECT"), set)  # reached Blender (the result varies)
    assert len(bpy.data.objects) >= 0 and bpy.context.scene is not None
    from bpy import data  # the import statement reads the attribute too

    assert data == bpy.data


@blender
def test_the_same_calls_work_in_a_task_queued_from_a_worker(strict):
    bpy = strict

    def make_object():
        assert bpy.ops.mesh.primitive_cube_add(size=0.5) == {"FINISHED"}
        return bpy.context.active_object.name

    names = []
    with mt.joined_threads(timeout=30) as scope:
        scope.start(lambda: names.append(mt.call_on_main(make_object)))
    assert names and names[0] in bpy.data.objects
    bpy.data.objects.remove(bpy.data.objects[names[0]])


@blender
def test_an_operator_looked_up_in_strict_mode_still_describes_itself(strict):
    bpy = strict
    operator = bpy.ops.object.select_all
    assert operator.idname() == "OBJECT_OT_select_all"
    assert "select_all" in repr(operator) and operator.__doc__
    assert operator.get_rna_type().identifier == "OBJECT_OT_select_all"


@blender
def test_isinstance_and_temp_override_see_the_same_objects(strict):
    bpy = strict
    assert isinstance(bpy.data, bpy.types.BlendData) and isinstance(bpy.context, bpy.types.Context)
    assert isinstance(bpy, types.ModuleType)
    with bpy.context.temp_override(window=bpy.context.window_manager.windows[0]):
        assert bpy.context.window is not None
    with mt.ui_context():
        assert bpy.ops.view3d.view_all() == {"FINISHED"}


@blender
def test_threads_python_did_not_start_are_not_judged(strict):
    """Blender's own threads that call Python (drivers, render handlers) are left alone; a thread
    made with _thread (not threading) stands for them here."""
    bpy = strict
    got = []
    _thread.start_new_thread(lambda: got.append(type(bpy.data).__name__), ())
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == ["BlendData"]


def _patchable(bpy):
    """What strict mode replaces, as it is now."""
    ops_class = bpy.ops.__dict__.get("_BPyOpsSubModOp")  # Blender <= 5.0
    methods = (ops_class.__dict__["__call__"], ops_class.__dict__["poll"]) if ops_class else ()
    return (
        type(bpy),
        bpy.app.timers.register,
        bpy.app.timers.unregister,
        *methods,
        bpy.ops.__dict__.get("_op_create_function"),
    )  # Blender >= 5.1


@blender
def test_off_puts_blender_back_as_it_was():
    bpy = _bpy()
    before = _patchable(bpy)
    operator_type = type(bpy.ops.object.select_all)
    mt.strict_mode(True)
    assert type(bpy) is not types.ModuleType and bpy.app.timers.register is not before[1]
    assert mt.strict_mode(True) is True  # already on: nothing patched twice
    assert mt.strict_mode(False) is True
    assert _patchable(bpy) == before and before[0] is types.ModuleType
    assert type(bpy.ops.object.select_all) is operator_type
    assert mt.strict_mode(False) is False
    assert _in_worker(lambda: bpy.app.version) is None


@blender
def test_the_environment_variable_turns_it_on_at_register(monkeypatch, caplog):
    bpy = _bpy()
    monkeypatch.setenv("MAINTHREAD_TASKS_STRICT", "1")
    mt.register()
    try:
        assert type(bpy) is not types.ModuleType
        assert isinstance(_in_worker(lambda: bpy.context.scene), mt.NotMainThreadError)
        mt.register()  # a second user: still on, nothing patched twice
        mt.unregister()
        assert type(bpy) is not types.ModuleType
    finally:
        mt.unregister()
    assert type(bpy) is types.ModuleType  # the last unregister() turned it off
    monkeypatch.setenv("MAINTHREAD_TASKS_STRICT", "maybe")
    with caplog.at_level(logging.WARNING, logger="mainthread_tasks"):
        mt.register()
        mt.unregister()
    assert type(bpy) is types.ModuleType and "is not 1 or 0" in caplog.text


@blender
def test_the_record_is_shared_by_every_copy():
    import sys

    assert mt.strict_mode(True) is False
    try:
        assert sys.modules[_strict.SHARED_RECORD].patches
    finally:
        mt.strict_mode(False)
    assert sys.modules[_strict.SHARED_RECORD].patches is None
