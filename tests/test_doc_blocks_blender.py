"""The README's add-on and every step of the tutorial, run in real Blender as they are printed.

Each is written into a temporary folder as the add-on a reader would have, imported, registered
and used the way the page says to try it; tests/doc_blocks.py has the blocks and how the tutorial's
steps add up. The coroutines run on the library's loop, stepped by ``pump_until`` as the add-on's
timer steps them in Blender's interface.
"""

from __future__ import annotations

import importlib
import shutil
import sys

import pytest

from mainthread_tasks.testing import pump_until
from tests import doc_blocks
from tests.support import ROOT

pytestmark = pytest.mark.blender

bpy = pytest.importorskip("bpy")  # real Blender in these tiers (conftest fails the tier otherwise)

EXAMPLE = ROOT / "examples" / "asset_downloader"
ASSETS = 3


def _import(folder, name):
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


@pytest.fixture
def forget_modules():
    """The modules a test imported from its temporary folder, and the objects it made, are gone
    after it (the test kit loads a fresh scene before each test; the bpy module's tiers do not)."""
    modules, objects = set(sys.modules), set(bpy.data.objects)
    yield
    for name in set(sys.modules) - modules:
        if name.startswith(("slow_cubes", "asset_downloader_step")):
            del sys.modules[name]
    for obj in set(bpy.data.objects) - objects:
        bpy.data.objects.remove(obj)


def test_the_readme_addon_adds_its_cubes_with_progress(tmp_path, forget_modules, capfd):
    (tmp_path / "slow_cubes.py").write_text(doc_blocks.block(doc_blocks.README, "addon").text)
    addon = _import(tmp_path, "slow_cubes")
    before = set(bpy.data.objects.keys())
    addon.register()
    try:
        assert bpy.ops.object.slow_cubes() == {"FINISHED"}
        assert len(bpy.data.objects) == len(before), "the operator returns before any cube"
        pump_until(lambda: len(bpy.data.objects) == len(before) + 5, timeout=30)
        pump_until(lambda: "Adding cubes: done, 5/5" in capfd.readouterr().err, timeout=10)
        cubes = sorted((obj for obj in bpy.data.objects if obj.name not in before), key=lambda o: o.location.x)
        assert [tuple(obj.location) for obj in cubes] == [(2.0 * i, 0.0, 0.0) for i in range(5)]
    finally:
        addon.unregister()


def _step_addon(tmp_path, step):
    """The add-on as it is after ``step`` steps of the tutorial, with the example's demo server."""
    name = f"asset_downloader_step{step}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text(doc_blocks.tutorial_file(step))
    shutil.copy(EXAMPLE / "demo_assets.py", folder / "demo_assets.py")
    return _import(tmp_path, name)


def _download(addon, **options):
    names = [f"asset_{i:03d}" for i in range(ASSETS)]
    assert bpy.ops.asset_downloader.download(count=ASSETS, **options) == {"FINISHED"}
    return names


@pytest.mark.parametrize("step", range(1, len(doc_blocks.TUTORIAL_STEPS) + 1))
def test_each_step_of_the_tutorial_works_as_it_says(tmp_path, forget_modules, capfd, step):
    addon = _step_addon(tmp_path, step)
    registered = addon.find_mainthread_tasks().stats().registered
    addon.register()
    try:
        mt = addon.mt
        assert mt.stats().registered == registered + 1  # step 1: "mt.stats().registered has gone up by one"
        if step == 1:
            return
        names = _download(addon)
        if step >= 5:
            assert addon.downloads
            pump_until(lambda: not addon.downloads, timeout=30)
        pump_until(lambda: all(name in bpy.data.objects for name in names), timeout=30)
        objects = [bpy.data.objects[name] for name in names]
        assert [tuple(obj.location) for obj in objects] == [((i % 6) * 1.5, 0.0, 0.0) for i in range(ASSETS)]
        # Step 2 adds empty meshes; from step 4 on, cubes made by an operator in the 3D view.
        assert all(len(obj.data.vertices) == (8 if step >= 4 else 0) for obj in objects)
        if step >= 3:  # the progress: headless, its last line on stderr
            pump_until(lambda: f"Downloading assets: done, {ASSETS}/{ASSETS}" in capfd.readouterr().err, timeout=10)
        if step >= 5:  # a failed download is reported
            _download(addon, url="http://127.0.0.1:1")
            pump_until(lambda: not addon.downloads, timeout=30)
            assert "Asset Downloader: Download failed: ConnectionRefusedError" in capfd.readouterr().out
    finally:
        addon.unregister()
    assert mt.stats().registered == registered
