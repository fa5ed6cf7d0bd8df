"""A second add-on that uses mainthread_tasks, as an asset downloader or a socket bridge would.

The tests install it next to Main Thread Tasks in real Blender, in three forms built from this one
file (tests/test_addon_install.py):

- an extension (Blender >= 4.2) that imports the *installed* Main Thread Tasks extension,
  ``bl_ext.<repo>.mainthread_tasks``;
- an extension that *bundles* the library as a wheel (``wheels/`` in its folder, listed in its
  manifest): Blender installs the wheel into its extensions' site-packages, so it imports
  ``mainthread_tasks``;
- a legacy add-on (``bl_info``, Blender <= 4.1) that imports the legacy add-on ``mainthread_tasks``.

Either way it calls the library's register()/unregister() from its own, which are reference-counted.
"""

from __future__ import annotations

import importlib
import os
import threading

import bpy

bl_info = {
    "name": "Main Thread Tasks consumer (test)",
    "author": "mainthread_tasks developers",
    "version": (0, 1, 0),
    "blender": (3, 0, 0),
    "description": "Test add-on: worker threads create objects through mainthread_tasks",
    "category": "Development",
}

#: This copy ships the library as a wheel (an extension listing ./wheels/*.whl in its manifest).
BUNDLED = os.path.isdir(os.path.join(os.path.dirname(__file__), "wheels"))

mt = None  # the mainthread_tasks module in use, set by register()


def import_mainthread_tasks():
    """The bundled copy if this add-on ships one, else the installed Main Thread Tasks add-on."""
    if BUNDLED:
        return importlib.import_module("mainthread_tasks")
    extensions = getattr(bpy.context.preferences, "extensions", None)  # None before Blender 4.2
    repos = [repo.module for repo in extensions.repos if repo.enabled] if extensions else []
    for name in [f"bl_ext.{repo}.mainthread_tasks" for repo in repos] + ["mainthread_tasks"]:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise  # mainthread_tasks is there but something it imports is missing
    raise ImportError("Main Thread Tasks is not installed: install it (Preferences > Add-ons / Get Extensions)")


def register():
    global mt
    mt = import_mainthread_tasks()
    mt.register()


def unregister():
    mt.unregister()


def make_objects(prefix: str, threads: int = 4, per_thread: int = 25) -> dict:
    """Worker threads create objects (``call_on_main``) and then mark them (``post_on_main``).

    Main thread. Joins the workers with ``joined_threads``, which runs the queue while it waits, so
    it works where Blender timers do not fire (``--background``, the bpy module). Returns a report.
    """
    main = threading.main_thread()
    off_main = []
    created = []

    def create(name):
        if threading.current_thread() is not main:
            off_main.append(name)
        obj = bpy.data.objects.new(name, None)
        bpy.context.scene.collection.objects.link(obj)
        return obj.name

    def mark(name, value):
        if threading.current_thread() is not main:
            off_main.append(name)
        bpy.data.objects[name]["mtt_consumer"] = value

    def worker(t):
        for i in range(per_thread):
            name = mt.call_on_main(create, f"{prefix}_{t}_{i}")
            mt.post_on_main(mark, name, i)
            created.append(name)

    with mt.joined_threads(timeout=60) as scope:
        for t in range(threads):
            scope.start(worker, t)
    mt.pump()  # the posts queued by the last iterations
    return {
        "module": mt.__name__,
        "module_file": mt.__file__,
        "created": len(created),
        "marked": sum(1 for name in created if bpy.data.objects[name].get("mtt_consumer") is not None),
        "off_main": len(off_main),
    }
