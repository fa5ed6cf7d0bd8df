"""``ui_context()``: the window, area and region that operators need, inside a main-thread task.

A ``bpy.app.timers`` callback (and so every task the UI timer runs) has a window in its context but
no area or region, and ``pump()`` in ``--background`` has no more: operators such as
``bpy.ops.view3d.view_all`` or ``bpy.ops.mesh.primitive_cube_add`` with ``align="VIEW"`` then fail
their ``poll()`` ("context is incorrect"). ``ui_context`` finds the largest area of a type and enters
``bpy.context.temp_override`` onto it. Even ``blender --background --factory-startup`` and the bpy
wheel have one window with the "Layout" screen (VIEW_3D, PROPERTIES, OUTLINER, DOPESHEET_EDITOR), so
it works headless too.

``bpy`` is imported inside the function: importing the package stays inert.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypedDict

from ._errors import MainThreadTasksError, NoSuchArea, NotMainThreadError
from ._threadinfo import is_main_thread

if TYPE_CHECKING:
    from bpy.types import Area, Region, Screen, Window

__all__ = ("ui_context",)


class FoundArea(TypedDict):
    """What ``ui_context()`` found (a plain dict at run time)."""

    window: Window
    screen: Screen
    area: Area
    region: Region


@contextlib.contextmanager
def ui_context(area_type: str = "VIEW_3D", region_type: str = "WINDOW") -> Iterator[FoundArea]:
    """Run the block with an area of ``area_type`` and its ``region_type`` region as the context.

    Main thread only (a task run by ``run_on_main``/``call_on_main``/``post_on_main``, an operator,
    a handler). It picks the largest area of that type in the active window, else the largest one in
    any other window, and enters ``bpy.context.temp_override(window=..., area=..., region=...)``
    for the block, so that operators which need that editor pass their ``poll()``:

        # queued with run_on_main from a worker
        def frame_everything():
            with ui_context("VIEW_3D") as found:
                bpy.ops.view3d.view_all()
                print(found["area"].width)

    The block gets a dict with the ``window``, ``screen``, ``area`` and ``region`` it uses. Needs
    Blender 3.2 or newer (``temp_override``); the library is tested from Blender 3.4.

    Raises:
        NotMainThreadError: called from another thread.
        TypeError: ``area_type`` or ``region_type`` is not a string.
        ValueError: not one of Blender's area types (``bpy.types.Area.type``) or region types
            (``bpy.types.Region.type``), e.g. ``"VIEW3D"`` for ``"VIEW_3D"``.
        NoSuchArea: no window has such an area with such a region (closed, changed to another
            editor, a file whose layout lacks it, no window at all); also a ``LookupError``.
        MainThreadTasksError: Blender older than 3.2.
    """
    if not is_main_thread():
        raise NotMainThreadError(
            "ui_context() overrides bpy.context, so only the main thread may use it; "
            "from a worker, queue a function that uses it with run_on_main/call_on_main/post_on_main"
        )
    import bpy

    _check_type_name(bpy.types.Area, "area_type", area_type)
    _check_type_name(bpy.types.Region, "region_type", region_type)
    temp_override = getattr(bpy.context, "temp_override", None)
    if temp_override is None:
        raise MainThreadTasksError(
            f"ui_context() needs Blender 3.2 or newer (bpy.context.temp_override); this is Blender "
            f"{bpy.app.version_string} (the rest of mainthread_tasks works there)"
        )
    found = find_area(bpy, area_type, region_type)
    with temp_override(window=found["window"], area=found["area"], region=found["region"]):
        yield found


def _check_type_name(struct: type[Area | Region], argument: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"ui_context(): {argument} must be a string such as 'VIEW_3D', got {value!r}")
    # "type" is an EnumProperty; fake-bpy-module types bl_rna.properties' items as Property.
    names = struct.bl_rna.properties["type"].enum_items.keys()  # type: ignore[attr-defined]
    if value not in names:
        raise ValueError(
            f"ui_context(): {argument} {value!r} is not one of Blender's {struct.__name__} types: {', '.join(names)}"
        )


def find_area(bpy: Any, area_type: str, region_type: str) -> FoundArea:
    """The largest ``area_type`` area with a ``region_type`` region: in the active window if it has
    one, else in any window. Main thread. Raises NoSuchArea.

    ``bpy`` is the bpy module (Any: the tests pass a stand-in)."""
    window_manager = bpy.context.window_manager
    windows: list[Window] = list(window_manager.windows) if window_manager is not None else []
    active: Window | None = bpy.context.window
    groups: tuple[list[Window], ...] = (
        ([active], [w for w in windows if w != active]) if active is not None and active in windows else (windows,)
    )
    for group in groups:
        best: tuple[int, Window, Screen, Area, Region] | None = None
        for window in group:
            # A window has a screen (fake-bpy-module: Screen | None).
            screen: Screen = window.screen  # type: ignore[assignment]
            for area in screen.areas:
                if area.type != area_type:
                    continue
                region = next((r for r in area.regions if r.type == region_type), None)
                if region is not None and (best is None or area.width * area.height > best[0]):
                    best = (area.width * area.height, window, screen, area, region)
        if best is not None:
            return {"window": best[1], "screen": best[2], "area": best[3], "region": best[4]}
    if not windows:
        where = "Blender has no window"
    else:
        areas = [area for window in windows for area in window.screen.areas]  # type: ignore[union-attr]  # (as above)
        shown = sorted({area.type for area in areas})
        where = f"its {len(windows)} window(s) show {', '.join(shown) or 'no area'}"
        regions = sorted({r.type for area in areas if area.type == area_type for r in area.regions})
        if regions:
            where += f"; the {area_type} areas have {', '.join(regions)} regions"
    raise NoSuchArea(f"ui_context(): no {area_type} area with a {region_type} region: {where}", area_type, region_type)
