"""The add-on glue in-process: the tick budget, the timer pass timings, when the preferences register.

The installed add-on itself is tested in real Blender by test_addon_install.py and test_gui.py.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from pathlib import Path

import pytest

import mainthread_tasks as mt
from mainthread_tasks import _blender, _pacing, _wake
from tests import support


def test_set_tick_budget_returns_the_previous_value_and_applies_to_the_next_pass(monkeypatch):
    assert mt.set_tick_budget(0.02) == _pacing.DEFAULT_TICK_BUDGET
    assert mt.set_tick_budget(0.001) == 0.02
    budgets = []
    monkeypatch.setattr(_blender, "run_for", lambda budget: budgets.append(budget) or 0)
    mt.post_on_main(int)
    _blender._drain_timer()
    assert budgets == [0.001]
    assert mt.pump() == 1


@pytest.mark.parametrize("bad", [0, -1.0, 1.5, math.nan, math.inf])
def test_set_tick_budget_rejects_values_out_of_range(bad):
    with pytest.raises(ValueError, match="0.0001 .. 1"):
        mt.set_tick_budget(bad)
    assert _pacing.PACING.tick_budget == _pacing.DEFAULT_TICK_BUDGET


@pytest.mark.parametrize("bad", ["4", None, True])
def test_set_tick_budget_rejects_non_numbers(bad):
    with pytest.raises(TypeError):
        mt.set_tick_budget(bad)


def test_timer_passes_record_a_queue_wait_bound():
    _blender._drain_timer()  # queue empty: marks it seen empty now
    mt.post_on_main(int)
    time.sleep(0.02)
    _blender._drain_timer()
    # The task waited about 20 ms; the bound is the time since the queue was last seen empty.
    assert 0.02 <= _pacing.PACING.queue_wait < 1.0
    assert _pacing.PACING.longest_queue_wait >= _pacing.PACING.queue_wait
    _pacing.reset_pass_stats()
    assert (_pacing.PACING.pass_interval, _pacing.PACING.queue_wait, _pacing.PACING.longest_queue_wait) == (
        0.0,
        0.0,
        0.0,
    )


def test_passes_draining_a_backlog_record_the_interval_and_blenders_part(monkeypatch):
    monkeypatch.setattr(_pacing.PACING, "tick_budget", 0.0001)
    for _ in range(3):
        mt.post_on_main(time.sleep, 0.005)
    _blender._drain_timer()  # runs one (budget spent), two left
    time.sleep(0.02)  # Blender's part of the pass
    _blender._drain_timer()
    assert 0.02 <= _pacing.PACING.blender_part < 1.0
    assert _pacing.PACING.pass_interval >= _pacing.PACING.blender_part + 0.005  # + the previous pass's task
    while mt.stats().pending:
        _blender._drain_timer()


def test_a_backlog_left_by_a_pass_keeps_growing_the_bound(monkeypatch):
    monkeypatch.setattr(_pacing.PACING, "tick_budget", 0.0001)

    def slow():
        time.sleep(0.005)

    _blender._drain_timer()
    for _ in range(4):
        mt.post_on_main(slow)
    _blender._drain_timer()  # runs one (budget spent), three left
    first = _pacing.PACING.queue_wait
    _blender._drain_timer()
    assert _pacing.PACING.queue_wait > first  # measured from the same "last empty" moment
    while mt.stats().pending:
        _blender._drain_timer()


class FakeClock:
    """Stands in for the timer's clock: tests set the time of each pass."""

    def __init__(self, now=100.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(_blender, "_clock", fake)
    monkeypatch.setattr(_blender, "_pass_end", fake.now)  # as register() leaves them
    monkeypatch.setattr(_blender, "_queue_empty_at", fake.now)
    for name, value in (("end", 0.0), ("spent", 0.0), ("count", 0), ("previous", 0)):
        monkeypatch.setattr(_blender._shared, name, value)  # no other copy ran a pass yet
    return fake


@pytest.fixture
def vendored_copy():
    """A second copy of the package, as an add-on that vendors it has: own modules, queue, timer."""
    name = "mtt_vendored_copy"
    folder = Path(mt.__file__).parent
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    copy = importlib.util.module_from_spec(spec)
    sys.modules[name] = copy
    try:
        spec.loader.exec_module(copy)
        copy.register()
        yield copy
    finally:
        if hasattr(copy, "unregister"):
            copy.unregister()
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]


def test_copies_of_the_library_share_one_budget_per_pass(clock, monkeypatch, vendored_copy):
    copies = (_blender, vendored_copy._blender)
    assert copies[0] is not copies[1] and copies[0]._shared is copies[1]._shared
    budgets: tuple[list, list] = ([], [])
    for copy, got in zip(copies, budgets, strict=True):
        monkeypatch.setattr(copy, "_clock", clock)

        def run_for(budget, got=got):  # a backlog that fills the whole budget
            got.append(budget)
            clock.now += budget
            return 1

        monkeypatch.setattr(copy, "run_for", run_for)
    mt.post_on_main(int)  # stays queued (run_for is a stub)
    vendored_copy.post_on_main(int)

    def one_pass(*order, apart=0.0):
        clock.now += 0.005  # Blender's part of the pass
        for i in order:
            copies[i]._queue_empty_at = clock.now  # pacing off: only the sharing is tested here
            copies[i]._drain_timer()
            clock.now += apart
        return [budgets[i][-1] for i in order]

    budget = _pacing.DEFAULT_TICK_BUDGET
    floor = budget * _pacing.MIN_BUDGET_SHARE
    assert one_pass(0) == [budget]  # alone: the whole budget
    assert one_pass(0, 1) == [budget, floor]  # the other copy's new backlog: what is left, at least the floor
    assert one_pass(0, 1) == [budget / 2, budget / 2]  # both had work in the pass before: half each
    assert one_pass(0, 1) == [budget / 2, budget / 2]
    assert one_pass(1) == [budget / 2]  # the first copy ran dry: one more pass at half...
    assert one_pass(1) == [budget]  # ...then the whole budget again
    # A timer that starts well after the other copy's pass ended runs in a later event-loop pass.
    assert one_pass(0, 1, apart=2 * _blender.SAME_PASS_WITHIN) == [budget, budget]
    assert _pacing.PACING.pass_budget == budget and vendored_copy._pacing.PACING.pass_budget == budget
    support.discard_queued()


def test_idle_passes_neither_count_nor_run_a_batch_and_poll_less_after_a_quiet_spell(clock, monkeypatch):
    monkeypatch.setattr(_blender, "run_for", lambda budget: pytest.fail("ran a batch with nothing queued"))
    clock.now += _blender.IDLE_AFTER / 2
    assert _blender._drain_timer() == 0.0  # recently registered: every pass
    clock.now += _blender.IDLE_AFTER
    assert _blender._drain_timer() == _blender.IDLE_POLL  # a quiet spell: every IDLE_POLL seconds
    clock.now += _blender.LONG_IDLE_AFTER
    assert _blender._drain_timer() == _blender.LONG_IDLE_POLL  # idling for long: less often still
    assert _pacing.PACING.queue_wait == 0.0 and mt.stats().ticks == 0
    assert _blender._queue_empty_at == clock.now  # the queue-wait bound still moves on
    monkeypatch.undo()  # the real run_for (and clock) again
    mt.post_on_main(int)
    assert _blender._drain_timer() == 0.0  # work: every pass again...
    assert mt.stats().ticks == 1 and mt.stats().pending == 0
    assert _blender._drain_timer() == 0.0  # ...for IDLE_AFTER seconds after it


def test_pacing_gives_back_an_overrun_of_blenders_part_and_adapts_to_a_lasting_one(clock, monkeypatch):
    budgets = []
    monkeypatch.setattr(_blender, "run_for", lambda budget: budgets.append(budget) or 1)
    mt.post_on_main(int)  # stays queued (run_for is a stub): every pass finds a backlog

    def passes(*parts):
        for part in parts:
            clock.now += part  # Blender's own part of the pass, then ours (instant here)
            _blender._drain_timer()
        return budgets[-len(parts) :]

    budget = _pacing.DEFAULT_TICK_BUDGET
    assert passes(0.5) == [budget]  # the first pass of a backlog: nothing to compare with
    assert passes(*[0.005] * 8) == [budget] * 8
    assert passes(0.008) == [pytest.approx(budget - 0.003)]  # 3 ms late: 3 ms less
    assert _pacing.PACING.pass_budget == pytest.approx(budget - 0.003) and _pacing.PACING.blender_part == pytest.approx(
        0.008
    )
    floor = budget * _pacing.MIN_BUDGET_SHARE
    assert passes(0.020) == [floor]  # very late: never below the floor, the queue keeps moving
    assert passes(0.005) == [budget]
    # Redraws that got slower for good (e.g. the tasks change the scene) become the usual.
    slow = passes(*[0.25] * 6)
    assert slow[:4] == [floor] * 4 and slow[-1] == budget
    # The queue runs dry (an idle pass sees it empty); a new backlog starts a fresh history.
    assert mt.pump() == 1
    clock.now += 0.005
    _blender._drain_timer()
    mt.post_on_main(int)
    assert passes(0.005, 0.005, 0.005) == [budget] * 3  # not measured against the 0.25 s passes
    support.discard_queued()


def test_passes_that_step_coroutines_are_paced_like_the_queues(clock, monkeypatch):
    """Coroutine steps (a busy source) with the queue empty: the same pacing as a backlog of tasks."""
    budgets = []

    def poll_sources(deadline):
        budgets.append(deadline - clock.now)
        return 1

    monkeypatch.setattr(_wake.SOURCES, "all", (object(),))
    monkeypatch.setattr(_wake.Sources, "due", lambda self: 0.0)  # always work left
    monkeypatch.setattr(_wake.Sources, "poll", lambda self, deadline=None: poll_sources(deadline))
    monkeypatch.setattr(_blender, "_sources_left_work", False)

    def passes(*parts):
        for part in parts:
            clock.now += part
            assert _blender._drain_timer() == 0.0
        return budgets[-len(parts) :]

    budget = _pacing.DEFAULT_TICK_BUDGET
    assert passes(0.5, *[0.005] * 8) == [pytest.approx(budget)] * 9  # a new backlog, then usual passes
    assert passes(0.008) == [pytest.approx(budget - 0.003)]  # 3 ms late: 3 ms less
    assert passes(0.020) == [pytest.approx(budget * _pacing.MIN_BUDGET_SHARE)]
    assert passes(0.005) == [pytest.approx(budget)]
    assert mt.stats().ticks == 0 and _pacing.PACING.pass_budget == 0.0  # the queue's figures are its own


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
        assert _pacing.PACING.tick_budget == pytest.approx(0.007)
        mt.register()  # a second user: registered once
        mt.unregister()
        assert preferences.MainThreadTasksPreferences.is_registered
        mt.unregister()
        assert not preferences.MainThreadTasksPreferences.is_registered
        assert not bpy.app.timers.is_registered(preferences._redraw_timer)
        mt.register()  # enabled again in the same session: the saved 7 ms applies at once
        assert _pacing.PACING.tick_budget == pytest.approx(0.007)
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
