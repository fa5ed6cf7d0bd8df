"""The add-on glue in-process: the tick budget, the timer pass timings, when the preferences register.

The installed add-on itself is tested in real Blender by test_addon_install.py and test_gui.py.
"""

from __future__ import annotations

import math
import sys
import time

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _blender


def test_set_tick_budget_returns_the_previous_value_and_applies_to_the_next_pass(monkeypatch):
    assert mt.set_tick_budget(0.02) == _blender.DEFAULT_TICK_BUDGET
    assert mt.set_tick_budget(0.001) == 0.02
    budgets = []
    monkeypatch.setattr(_blender._scheduler, "run_for", lambda budget: budgets.append(budget) or 0)
    _blender._drain_timer()
    assert budgets == [0.001]


@pytest.mark.parametrize("bad", [0, -1.0, 1.5, math.nan, math.inf])
def test_set_tick_budget_rejects_values_out_of_range(bad):
    with pytest.raises(ValueError, match="0.0001 .. 1"):
        mt.set_tick_budget(bad)
    assert _blender.tick_budget == _blender.DEFAULT_TICK_BUDGET


@pytest.mark.parametrize("bad", ["4", None, True])
def test_set_tick_budget_rejects_non_numbers(bad):
    with pytest.raises(TypeError):
        mt.set_tick_budget(bad)


def test_timer_passes_record_interval_and_a_queue_wait_bound():
    _blender._drain_timer()  # queue empty: marks it seen empty now
    mt.post_on_main(int)
    time.sleep(0.02)
    _blender._drain_timer()
    assert _blender.pass_interval >= 0.02
    # The task waited about 20 ms; the bound is the time since the queue was last seen empty.
    assert 0.02 <= _blender.queue_wait < 1.0
    assert _blender.longest_queue_wait >= _blender.queue_wait
    _blender.reset_pass_stats()
    assert (_blender.pass_interval, _blender.queue_wait, _blender.longest_queue_wait) == (0.0, 0.0, 0.0)


def test_a_backlog_left_by_a_pass_keeps_growing_the_bound(monkeypatch):
    monkeypatch.setattr(_blender, "tick_budget", 0.0001)

    def slow():
        time.sleep(0.005)

    _blender._drain_timer()
    for _ in range(4):
        mt.post_on_main(slow)
    _blender._drain_timer()  # runs one (budget spent), three left
    first = _blender.queue_wait
    _blender._drain_timer()
    assert _blender.queue_wait > first  # measured from the same "last empty" moment
    while mt.stats().pending:
        _blender._drain_timer()


def test_preferences_are_not_registered_unless_the_package_is_an_enabled_addon():
    # Here the package is imported from the repository, not enabled as an add-on.
    mt.register()
    try:
        assert f"{mt.__name__}._preferences" not in sys.modules
    finally:
        mt.unregister()


@pytest.mark.blender
def test_preferences_register_with_the_addon_entry_and_apply_the_saved_budget():
    # As addon_utils.enable(default_set=True) does: the entry exists before register() runs.
    import bpy

    addons = bpy.context.preferences.addons
    entry = addons.new()
    entry.module = mt.__name__
    try:
        mt.register()
        preferences = sys.modules[f"{mt.__name__}._preferences"]
        assert preferences.MainThreadTasksPreferences.is_registered
        prefs = addons[mt.__name__].preferences
        prefs.tick_budget_ms = 7.0
        assert _blender.tick_budget == pytest.approx(0.007)
        mt.register()  # a second user: registered once
        mt.unregister()
        assert preferences.MainThreadTasksPreferences.is_registered
        mt.unregister()
        assert not preferences.MainThreadTasksPreferences.is_registered
        assert not bpy.app.timers.is_registered(preferences._redraw_timer)
        mt.register()  # enabled again in the same session: the saved 7 ms applies at once
        assert _blender.tick_budget == pytest.approx(0.007)
        addons[mt.__name__].preferences.tick_budget_ms = 4.0  # (the old struct died with its class)
    finally:
        while mt.stats().registered:
            mt.unregister()
        addons.remove(addons[mt.__name__])


@pytest.mark.fake_bpy
def test_failed_register_removes_what_it_registered(timers, mocker):
    mocker.patch.object(_blender, "_is_enabled_addon", return_value=True)
    fake_preferences = mocker.MagicMock()
    fake_preferences.register.side_effect = RuntimeError("class registration failed")
    mocker.patch.dict(sys.modules, {f"{mt.__name__}._preferences": fake_preferences})
    with pytest.raises(RuntimeError, match="class registration failed"):
        mt.register()
    assert mt.stats().registered == 0
    assert not timers.is_registered(_blender._drain_timer)
    fake_preferences.unregister.assert_called_once_with()

