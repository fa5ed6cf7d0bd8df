"""ui_context(): operators that need an area, run from main-thread tasks; NoSuchArea.

Real Blender (``--background`` and the bpy wheels: even there the factory startup has one window
with the "Layout" screen), plus the search logic and the error paths on fake objects (CPython).
"""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _ui
from tests import support


def test_no_such_area_is_a_lookup_error():
    assert issubclass(mt.NoSuchArea, mt.MainThreadTasksError)
    assert issubclass(mt.NoSuchArea, LookupError)


# -- the search, on fake windows (no Blender needed) ----------------------------------------------


class Struct(SimpleNamespace):
    """Compares by identity, like bpy structs compare by pointer."""

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__


def area(kind, width, height, regions=("HEADER", "WINDOW")):
    return Struct(type=kind, width=width, height=height, regions=[Struct(type=r) for r in regions])


def window(*areas):
    return Struct(screen=Struct(areas=list(areas)))


def fake_bpy(windows, active):
    return SimpleNamespace(context=SimpleNamespace(window=active, window_manager=SimpleNamespace(windows=windows)))


def test_the_largest_area_of_the_active_window_wins_over_larger_ones_elsewhere():
    small, large, other_window_huge = area("VIEW_3D", 100, 100), area("VIEW_3D", 300, 200), area("VIEW_3D", 2000, 2000)
    active = window(small, area("OUTLINER", 900, 900), large)
    other = window(other_window_huge)
    found = _ui.find_area(fake_bpy([other, active], active), "VIEW_3D", "WINDOW")
    assert found["area"] is large and found["window"] is active and found["screen"] is active.screen
    assert found["region"] is large.regions[1]


def test_another_window_is_searched_when_the_active_one_has_none():
    a, b = area("IMAGE_EDITOR", 100, 100), area("IMAGE_EDITOR", 500, 100)
    active = window(area("VIEW_3D", 900, 900))
    found = _ui.find_area(fake_bpy([active, window(a), window(b)], active), "IMAGE_EDITOR", "WINDOW")
    assert found["area"] is b


def test_without_an_active_window_every_window_is_searched():
    a = area("VIEW_3D", 100, 100)
    found = _ui.find_area(fake_bpy([window(a)], None), "VIEW_3D", "WINDOW")
    assert found["area"] is a


def test_an_area_without_the_region_does_not_count():
    without_ui = area("VIEW_3D", 900, 900, regions=("WINDOW",))
    with_ui = area("VIEW_3D", 100, 100, regions=("WINDOW", "UI"))
    found = _ui.find_area(fake_bpy([window(without_ui, with_ui)], None), "VIEW_3D", "UI")
    assert found["area"] is with_ui


def test_no_such_area_names_what_was_looked_for_and_what_exists():
    props = area("PROPERTIES", 100, 100, regions=("HEADER", "NAVIGATION_BAR", "WINDOW"))
    bpy = fake_bpy([window(area("VIEW_3D", 10, 10), props)], None)
    with pytest.raises(mt.NoSuchArea) as caught:
        _ui.find_area(bpy, "PROPERTIES", "UI")
    assert (caught.value.area_type, caught.value.region_type) == ("PROPERTIES", "UI")
    message = str(caught.value)
    assert "no PROPERTIES area with a UI region" in message
    assert "PROPERTIES, VIEW_3D" in message and "HEADER, NAVIGATION_BAR, WINDOW regions" in message


def test_no_window_at_all():
    with pytest.raises(mt.NoSuchArea, match="Blender has no window"):
        _ui.find_area(fake_bpy([], None), "VIEW_3D", "WINDOW")
    bpy = SimpleNamespace(context=SimpleNamespace(window=None, window_manager=None))
    with pytest.raises(mt.NoSuchArea, match="no window"):
        _ui.find_area(bpy, "VIEW_3D", "WINDOW")


def test_blender_older_than_3_2_gets_a_clear_error(monkeypatch):
    enum = SimpleNamespace(enum_items={"VIEW_3D": None, "WINDOW": None})
    struct = SimpleNamespace(bl_rna=SimpleNamespace(properties={"type": enum}))
    active = window(area("VIEW_3D", 10, 10))
    old = fake_bpy([active], active)
    assert not hasattr(old.context, "temp_override")  # Blender 3.0/3.1: none
    old.types = SimpleNamespace(Area=struct, Region=struct)
    old.app = SimpleNamespace(version_string="3.1.2")
    monkeypatch.setitem(sys.modules, "bpy", old)
    with pytest.raises(mt.MainThreadTasksError, match=r"needs Blender 3\.2 or newer.*3\.1\.2"):
        with mt.ui_context():
            pass


def test_off_the_main_thread_it_refuses():
    def worker():
        with mt.ui_context():
            pass

    error = support.raised_in_thread(worker)
    assert isinstance(error, mt.NotMainThreadError) and "run_on_main" in str(error)


# -- real Blender ---------------------------------------------------------------------------------

blender = pytest.mark.blender


def _bpy():
    import bpy

    return bpy


@blender
def test_view_all_needs_the_area_and_finishes_inside_ui_context():
    bpy = _bpy()
    assert bpy.context.area is None and not bpy.ops.view3d.view_all.poll()
    with mt.ui_context() as found:
        assert bpy.context.area == found["area"] and bpy.context.area.type == "VIEW_3D"
        assert bpy.context.region.type == "WINDOW" and bpy.context.window == found["window"]
        assert bpy.context.space_data.type == "VIEW_3D" and bpy.context.region_data is not None
        assert bpy.ops.view3d.view_all() == {"FINISHED"}
    assert bpy.context.area is None and bpy.context.region is None  # restored


@blender
def test_operators_change_the_view_from_a_worker_task():
    """What an add-on does: a worker queues a task that runs view operators in the 3D view."""
    bpy = _bpy()

    def top_view_of_a_new_cube():
        assert threading.current_thread() is threading.main_thread()
        with mt.ui_context("VIEW_3D") as found:
            assert bpy.ops.mesh.primitive_cube_add(size=2.0, location=(40.0, 0.0, 0.0)) == {"FINISHED"}
            cube = bpy.context.active_object
            assert bpy.ops.view3d.view_axis(type="TOP") == {"FINISHED"}
            assert bpy.ops.view3d.view_selected() == {"FINISHED"}
            view = found["area"].spaces.active.region_3d
            return cube.name, tuple(view.view_location), tuple(round(v, 4) for v in view.view_rotation)

    results = []
    with mt.joined_threads(timeout=60) as scope:
        scope.start(lambda: results.append(mt.call_on_main(top_view_of_a_new_cube)))
    name, location, rotation = results[0]
    try:
        assert abs(location[0] - 40.0) < 1e-3  # view_selected centred the view on the new cube
        assert rotation == (1.0, 0.0, 0.0, 0.0)  # looking down from the top
    finally:
        bpy.data.objects.remove(bpy.data.objects[name])


@blender
def test_other_editors_and_region_types():
    bpy = _bpy()
    with mt.ui_context("OUTLINER") as found:
        assert bpy.context.space_data.type == "OUTLINER"
        assert bpy.ops.outliner.expanded_toggle() == {"FINISHED"}
        assert bpy.ops.outliner.expanded_toggle() == {"FINISHED"}
    with mt.ui_context("VIEW_3D", "UI") as found:
        assert bpy.context.region.type == "UI" and found["region"].type == "UI"
    with mt.ui_context("PROPERTIES", "NAVIGATION_BAR"):
        assert bpy.context.area.type == "PROPERTIES"


@blender
def test_the_largest_of_two_3d_views_is_used():
    bpy = _bpy()
    with mt.ui_context() as found:
        big = found["area"]
    small = min((a for a in found["screen"].areas if a != big), key=lambda a: a.width * a.height)
    small_type = small.type
    assert small.width * small.height < big.width * big.height
    small.type = "VIEW_3D"  # two 3D views now (what a user gets by splitting one)
    try:
        with mt.ui_context() as found:
            assert found["area"] == big
        big.type = "IMAGE_EDITOR"
        with mt.ui_context() as found:
            assert found["area"] == small
            assert bpy.ops.view3d.view_all() == {"FINISHED"}
    finally:
        big.type = "VIEW_3D"
        small.type = small_type


@blender
def test_no_such_area_when_the_editor_is_gone_or_absent():
    bpy = _bpy()
    with pytest.raises(mt.NoSuchArea, match="no IMAGE_EDITOR area with a WINDOW region") as caught:
        with mt.ui_context("IMAGE_EDITOR"):
            pytest.fail("the block must not run")
    assert "VIEW_3D" in str(caught.value)
    with pytest.raises(mt.NoSuchArea, match="the PROPERTIES areas have .*NAVIGATION_BAR"):
        with mt.ui_context("PROPERTIES", "UI"):
            pass
    with mt.ui_context() as found:
        view = found["area"]
    view.type = "TEXT_EDITOR"  # the user turned the 3D view into another editor
    try:
        with pytest.raises(mt.NoSuchArea, match="no VIEW_3D area"):
            with mt.ui_context("VIEW_3D"):
                pass
        with mt.ui_context("TEXT_EDITOR") as found:
            assert found["area"] == view
    finally:
        view.type = "VIEW_3D"
    with mt.ui_context():
        assert bpy.ops.view3d.view_all() == {"FINISHED"}


@blender
def test_bad_types_fail_at_the_call():
    with pytest.raises(ValueError, match="'VIEW3D' is not one of Blender's Area types: .*VIEW_3D"):
        with mt.ui_context("VIEW3D"):
            pass
    with pytest.raises(ValueError, match="region_type 'MAIN'"):
        with mt.ui_context("VIEW_3D", "MAIN"):
            pass
    with pytest.raises(TypeError, match="string"):
        with mt.ui_context(3):
            pass


@blender
def test_the_context_is_restored_when_the_block_raises():
    bpy = _bpy()
    with pytest.raises(KeyError):
        with mt.ui_context():
            assert bpy.context.area is not None
            raise KeyError("boom")
    assert bpy.context.area is None and bpy.context.region is None
