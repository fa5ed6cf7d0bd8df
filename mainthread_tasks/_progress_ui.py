"""Progresses in Blender's status bar: the item, its cancel button, ESC, throttled redraws. UI only.

Imported by ``_blender.register()`` only in Blender's UI (not ``--background``, not the bpy wheel).

- **Drawing.** A function prepended to ``STATUSBAR_HT_header`` draws the open progresses at the left
  end of the status bar, where a long report or scene statistics never push them out of the window
  (the newest two in full, then "+N"): label, count and percentage (a bar on Blender >= 4.0, which
  has ``UILayout.progress``) and a cancel button. It returns at once when none is open.
- **Redrawing.** The status bar redraws only when told to. ``StatusBar`` is a *source* of the
  scheduler while a progress is open: the UI timer asks it ``due()`` each pass and ``poll()``-s it
  at most every REDRAW_INTERVAL; a poll that finds the shown text changed tags the status bar
  region for redraw, from the main thread. The region is the one the status bar's last draw ran in
  (its global area is not reachable through ``window.screen.areas``); it is used only while that
  window still exists with the same, non-temporary screen and no window was opened or closed since,
  and forgotten at file load (Blender frees and reuses these structs: a stale one must never be
  touched). Without one, the redraw publishes the message-bus key the status bar listens to
  (``ViewLayer.name``), which also redraws the few editors that show that name.
- **ESC.** An add-on keymap item, ESC in the "Window" keymap, runs the cancel operator for the
  newest progress. Its ``poll()`` is False while no progress can be cancelled, and Blender then
  passes ESC on to the next handler: nothing else loses ESC. Modal operators (grab, rotate...) get
  ESC before window keymaps anyway.
"""

from __future__ import annotations

import logging
import zlib
from time import perf_counter

import bpy

from . import _progress
from ._wake import remove_source

__all__ = ("register", "unregister")

logger = logging.getLogger("mainthread_tasks")

#: Seconds between two redraws of the status bar while a progress changes (at most 10 a second).
REDRAW_INTERVAL = 0.1
#: Progresses drawn in full; more are summed up as "+N".
SHOWN_IN_FULL = 2

# Each copy of the library (installed add-on, bundled wheel, vendored copy) registers its own
# operator, so the name carries a tag of the package that holds this copy.
_TAG = "" if __package__ == "mainthread_tasks" else f"_{zlib.crc32(__package__.encode()):08x}"
CANCEL_IDNAME = f"mainthread_tasks.progress_cancel{_TAG}"
# Blender >= 4.0. (The stubs lack bl_rna.functions, which every Blender has.)
_HAS_PROGRESS_BAR = "progress" in bpy.types.UILayout.bl_rna.functions  # type: ignore[attr-defined]


class CancelProgress(bpy.types.Operator):
    bl_idname = CANCEL_IDNAME
    bl_label = "Cancel"
    bl_description = "Cancel this work (Esc over Blender cancels the newest one)"
    bl_options = {"INTERNAL"}

    serial: bpy.props.IntProperty(default=0, options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    @classmethod
    def poll(cls, _context: bpy.types.Context) -> bool:
        return _progress.find(0) is not None

    def execute(self, _context: bpy.types.Context) -> set[str]:
        target = _progress.find(self.serial)
        if target is None:
            return {"CANCELLED"}
        target.cancel()
        status_bar.redraw_soon()
        return {"FINISHED"}


class StatusBar:
    """The scheduler's source that keeps the status bar up to date. Main thread (any thread may
    add it; the scheduler calls it only on the main thread)."""

    ui_only = True  # redraws only: polled even while a render/bake/composite job holds the queue

    def __init__(self) -> None:
        self.next_poll = 0.0
        self.shown: tuple[tuple[int, str, str, bool], ...] = ()  # what the latest redraw showed
        # window pointer -> (screen pointer, status bar region)
        self.drawn_in: dict[int, tuple[int, bpy.types.Region]] = {}
        self.windows_when_drawn: frozenset[int] = frozenset()
        self.redraws = 0

    # -- the source protocol (see _wake.Source) -----------------------------------------------------

    def fds(self) -> tuple[int, ...]:
        return ()

    def busy(self) -> bool:
        return False

    def due(self) -> float:
        return max(0.0, self.next_poll - perf_counter())

    def poll(self, deadline: float | None = None) -> int:
        now = perf_counter()
        if now < self.next_poll:
            return 0
        self.next_poll = now + REDRAW_INTERVAL
        shown = tuple((p._serial, p.label, p.text(), p.cancelled) for p in _progress.open_progresses())
        if shown != self.shown:
            self.shown = shown
            self.redraw()
        elif not shown:
            _progress.remove_display_if_idle(self)
        return 0  # a redraw is not work: it must not keep the timer from idling

    def stop(self, message: str) -> None:
        self.forget_regions()

    # -- redrawing -----------------------------------------------------------------------------------

    def redraw_soon(self) -> None:
        self.next_poll = 0.0

    def remember(self, context: bpy.types.Context) -> None:
        """Called by the status bar's draw: the region it runs in is valid right now."""
        window, screen = context.window, context.screen
        if window is None or screen is None or context.region is None:
            return
        windows = frozenset(w.as_pointer() for w in context.window_manager.windows)  # type: ignore[union-attr]  # a draw has one
        if windows != self.windows_when_drawn:
            self.drawn_in.clear()
            self.windows_when_drawn = windows
        self.drawn_in[window.as_pointer()] = (screen.as_pointer(), context.region)

    def forget_regions(self) -> None:
        self.drawn_in.clear()
        self.windows_when_drawn = frozenset()

    def redraw(self) -> None:
        self.redraws += 1
        window_manager = bpy.context.window_manager
        windows = {w.as_pointer(): w for w in window_manager.windows} if window_manager else {}
        if frozenset(windows) != self.windows_when_drawn:
            self.forget_regions()  # a window opened or closed: its structs may have been reused
        tagged = False
        for key, (screen_pointer, region) in list(self.drawn_in.items()):
            window = windows.get(key)
            screen = window.screen if window is not None else None
            if screen is None or screen.as_pointer() != screen_pointer or screen.is_temporary:
                del self.drawn_in[key]  # its status bar may be gone: never touch that region again
                continue
            region.tag_redraw()
            tagged = True
        if not tagged:
            # The stubs want a struct instance; Blender takes the class too (it is what is listened to).
            bpy.msgbus.publish_rna(key=(bpy.types.ViewLayer, "name"))  # type: ignore[arg-type]


status_bar = StatusBar()
_draw_failed = False


def draw_status_bar(header: bpy.types.Header, context: bpy.types.Context) -> None:
    """Prepended to STATUSBAR_HT_header: the open progresses. Must never raise (Blender would print
    the error at every redraw)."""
    global _draw_failed
    items = _progress.open_progresses()
    if not items:
        return
    try:
        status_bar.remember(context)
        layout = header.layout
        if layout is None:  # never, while a header draws
            return
        for item in items[-SHOWN_IN_FULL:]:
            _draw_item(layout.row(align=True), item)
        if len(items) > SHOWN_IN_FULL:
            layout.label(text=f"+{len(items) - SHOWN_IN_FULL}")
        layout.separator(factor=2.0)
    except Exception:
        if not _draw_failed:
            _draw_failed = True
            logger.exception("mainthread_tasks: could not draw the progress in the status bar")


def _draw_item(row: bpy.types.UILayout, item: _progress.Progress) -> None:
    text = f"{item.label} {item.text()}"
    if item.cancelled:
        row.label(text=f"{text}: cancelling", icon="CANCEL")
        return
    fraction = item.fraction()
    if _HAS_PROGRESS_BAR and fraction is not None:
        bar = row.row(align=True)
        bar.ui_units_x = 10
        bar.progress(factor=fraction, type="BAR", text=text)
    else:
        row.label(text=text, icon="SORTTIME")
    row.operator(CANCEL_IDNAME, text="", icon="X", emboss=False).serial = item._serial


@bpy.app.handlers.persistent  # type: ignore[untyped-decorator]  # returns the function itself
def _forget_regions_at_load(*_args: object) -> None:
    status_bar.forget_regions()


_keymap_items: list[tuple[bpy.types.KeyMap, bpy.types.KeyMapItem]] = []
_registered = False


def register() -> None:
    """Status-bar item, cancel operator, ESC key, redraws. Main thread; idempotent."""
    global _registered
    if _registered:
        return
    bpy.utils.register_class(CancelProgress)
    _registered = True
    try:
        bpy.types.STATUSBAR_HT_header.prepend(draw_status_bar)
        bpy.app.handlers.load_pre.append(_forget_regions_at_load)
        keyconfig = bpy.context.window_manager.keyconfigs.addon  # type: ignore[union-attr]  # the UI has one
        if keyconfig is not None:
            keymap = keyconfig.keymaps.new(name="Window", space_type="EMPTY")
            _keymap_items.append((keymap, keymap.keymap_items.new(CANCEL_IDNAME, "ESC", "PRESS")))
        _progress.set_display(status_bar)
    except BaseException:
        unregister()
        raise


def unregister() -> None:
    """Undo register(); open progresses go on, shown on stderr. Main thread; idempotent."""
    global _registered
    _progress.set_display(None)
    remove_source(status_bar)
    status_bar.forget_regions()
    status_bar.shown = ()
    for keymap, item in _keymap_items:
        try:
            keymap.keymap_items.remove(item)
        except (ReferenceError, RuntimeError):  # the key configuration was already freed
            pass
    _keymap_items.clear()
    if _forget_regions_at_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_forget_regions_at_load)
    try:
        bpy.types.STATUSBAR_HT_header.remove(draw_status_bar)
    except ValueError:
        pass
    if _registered:
        _registered = False
        bpy.utils.unregister_class(CancelProgress)
