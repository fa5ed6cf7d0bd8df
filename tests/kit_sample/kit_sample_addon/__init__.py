"""A small add-on for the test kit's own tests (tests/test_testing_kit.py): a timer-driven counter."""

import bpy

bl_info = {
    "name": "Kit Sample (mainthread_tasks tests)",
    "author": "mainthread_tasks developers",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "category": "Development",
}

ticks = 0


def tick():
    """Counts three ticks, 20 ms apart, then stops: a timer-driven piece of work."""
    global ticks
    ticks += 1
    return 0.02 if ticks < 3 else None


def start_ticking():
    global ticks
    ticks = 0
    bpy.app.timers.register(tick, first_interval=0.05)


def register():
    bpy.types.Scene.kit_sample_value = bpy.props.IntProperty()


def unregister():
    del bpy.types.Scene.kit_sample_value
