"""Real bpy work from worker threads, inside real Blender (the binary and the bpy wheels)."""

from __future__ import annotations

import threading

import pytest

import mainthread_tasks as mt

pytestmark = pytest.mark.blender


def _bpy():
    import bpy

    return bpy


def test_workers_create_objects_through_call_on_main():
    bpy = _bpy()
    main = threading.main_thread()
    names = []

    def make_object(name):
        assert threading.current_thread() is main
        mesh = bpy.data.meshes.new(name)
        obj = bpy.data.objects.new(name, mesh)
        bpy.context.scene.collection.objects.link(obj)
        return obj.name

    def worker(i):
        names.append(mt.call_on_main(make_object, f"mt_worker_{i}"))

    with mt.joined_threads(timeout=60) as scope:
        for i in range(8):
            scope.start(worker, i)
    try:
        assert sorted(names) == sorted(f"mt_worker_{i}" for i in range(8))
        assert all(name in bpy.data.objects for name in names)
    finally:
        for name in names:
            bpy.data.objects.remove(bpy.data.objects[name])


def test_many_posts_change_real_data_in_order():
    bpy = _bpy()
    obj = bpy.data.objects.new("mt_counter", None)
    obj["count"] = 0

    def bump(expected):
        assert obj["count"] == expected
        obj["count"] = expected + 1

    def worker():
        for i in range(2000):
            mt.post_on_main(bump, i)

    try:
        with mt.joined_threads(timeout=60) as scope:
            scope.start(worker)
        mt.pump()
        assert obj["count"] == 2000
        assert mt.stats().failed == 0
    finally:
        bpy.data.objects.remove(obj)


def test_timers_do_not_fire_here_so_pump_is_needed():
    # In --background and in the bpy module Blender never runs timers: register() still works.
    bpy = _bpy()
    assert bpy.app.background
    mt.register()
    try:
        future = mt.run_on_main(lambda: bpy.app.version)
        assert mt.pump() == 1
        assert future.result(0) == bpy.app.version
    finally:
        mt.unregister()
