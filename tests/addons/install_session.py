"""Runs inside a fresh real Blender: install the built add-on the way users do, and check it.

    python install_session.py SCENARIO RESULT.json KEY=VALUE...                    # bpy wheel
    blender -b --factory-startup --python install_session.py -- SCENARIO RESULT.json KEY=VALUE...

tests/test_addon_install.py copies this file to a temporary folder and starts it with
``BLENDER_USER_RESOURCES`` pointing at an empty folder, so Blender installs into a throw-away user
folder and the project's own ``mainthread_tasks`` is not importable: every import below resolves to
what Blender installed. Each scenario asserts as it goes and returns facts; the JSON file gets
``{"ok": true, "facts": ...}`` or ``{"ok": false, "error": traceback}``.

Scenarios:
  extension          zip=... reload=yes|no : package_install_files(enable_on_install=True), preferences, dispatch,
                       Reload Scripts, disable/enable, uninstall (Blender >= 4.2)
  legacy             zip=... consumer_zip=... reload=yes|no : addon_install + addon_utils.enable, the same checks,
                       then a legacy add-on that imports it, enabled/disabled in both orders
  consumer           zip=... consumer_zip=... : the extension and an extension that imports it,
                       registered/unregistered in both orders (Blender >= 4.2)
  bundled            zip=... bundled_zip=... : an extension that bundles the library as a wheel,
                       alone and next to the installed extension (Blender >= 4.2)
"""

import json
import os
import sys
import threading
import traceback

import bpy  # first: in the bpy wheel, Blender's own modules (addon_utils) are importable after it

# isort: split
import addon_utils

EXT = "bl_ext.user_default.mainthread_tasks"
LEGACY = "mainthread_tasks"
USER_DIR = os.path.realpath(os.environ["BLENDER_USER_RESOURCES"])


# -- Blender operations, as the UI does them ---------------------------------------------------


def install_extension(zip_path):
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"}, result


def install_legacy(zip_path):
    result = bpy.ops.preferences.addon_install(filepath=zip_path, overwrite=True)
    assert result == {"FINISHED"}, result


def enable(name):
    # What the add-on's checkbox in Preferences runs; it calls addon_utils.enable(default_set=True).
    assert bpy.ops.preferences.addon_enable(module=name) == {"FINISHED"}
    assert addon_utils.check(name) == (True, True), addon_utils.check(name)
    return sys.modules[name]


def disable(name):
    assert bpy.ops.preferences.addon_disable(module=name) == {"FINISHED"}
    assert addon_utils.check(name)[1] is False, addon_utils.check(name)


# -- checks ------------------------------------------------------------------------------------


def timer_registered(mt):
    return bpy.app.timers.is_registered(mt._blender._drain_timer)


def preferences_registered(mt):
    module = sys.modules.get(mt.__name__ + "._preferences")
    return module is not None and module.MainThreadTasksPreferences.is_registered


def assert_running(mt, users, preferences):
    s = mt.stats()
    assert s.accepting and s.registered == users, s
    assert timer_registered(mt), "the drain timer is not registered"
    assert preferences_registered(mt) is preferences, f"preferences registered: {preferences_registered(mt)}"


def assert_stopped(mt):
    s = mt.stats()
    assert not s.accepting and s.registered == 0 and s.pending == 0, s
    assert not timer_registered(mt), "the drain timer outlived the last unregister()"
    assert not preferences_registered(mt), "the preferences outlived the last unregister()"
    try:
        mt.post_on_main(int)
    except mt.SchedulerStopped:
        pass
    else:
        raise AssertionError("a submission was accepted after the last unregister()")


def assert_installed_in_user_dir(mt):
    path = os.path.realpath(mt.__file__)
    assert path.startswith(USER_DIR + os.sep), f"{mt.__name__} imported from {path}, not from {USER_DIR}"
    return path


def dispatch(mt, threads=4, calls=50):
    """Workers call into the main thread; joined_threads runs the queue (no timers fire here)."""
    main = threading.main_thread()
    seen = []

    def on_main(i):
        seen.append(threading.current_thread() is main)
        return i * 2

    def worker(results):
        results.extend(mt.call_on_main(on_main, i) for i in range(calls))

    outputs = [[] for _ in range(threads)]
    with mt.joined_threads(timeout=60) as scope:
        for results in outputs:
            scope.start(worker, results)
    assert all(out == [i * 2 for i in range(calls)] for out in outputs), "results lost or out of order"
    assert len(seen) == threads * calls and all(seen), "a task ran off the main thread"
    return len(seen)


def check_tick_budget_preference(mt, name):
    prefs = bpy.context.preferences.addons[name].preferences
    assert abs(prefs.tick_budget_ms - 4.0) < 1e-6, prefs.tick_budget_ms
    prefs.tick_budget_ms = 2.5  # as dragging the slider does: applies at once
    assert abs(mt._pacing.PACING.tick_budget - 0.0025) < 1e-9, mt._pacing.PACING.tick_budget
    mt.set_tick_budget(0.004)
    prefs.tick_budget_ms = 4.0


def check_addon_lifecycle(name, reload):
    """The add-on ``name`` (enabled): preferences, dispatch, Reload Scripts, disable/enable."""
    mt = sys.modules[name]
    facts = {"module": name, "file": assert_installed_in_user_dir(mt)}
    assert_running(mt, users=1, preferences=True)
    check_tick_budget_preference(mt, name)
    facts["dispatched"] = dispatch(mt)
    if reload == "yes":
        mt = check_reload_scripts(name)
        facts["dispatched_after_reload"] = dispatch(mt)

    for _ in range(3):  # no timer or preferences left over, none doubled
        disable(name)
        assert_stopped(mt)
        mt = enable(name)
        assert_running(mt, users=1, preferences=True)
    facts["dispatched_after_reenable"] = dispatch(mt)
    disable(name)
    assert_stopped(mt)
    mt._blender.unregister()  # an extra unregister() never raises
    return facts


def check_reload_scripts(name):
    """F3 > Reload Scripts: Blender disables, reloads and enables every add-on."""
    mt = sys.modules[name]
    timer_before = mt._blender._drain_timer
    assert bpy.ops.script.reload() == {"FINISHED"}
    mt = sys.modules[name]
    assert_running(mt, users=1, preferences=True)
    assert mt._blender._drain_timer is timer_before or not bpy.app.timers.is_registered(timer_before), (
        "Reload Scripts left the previous drain timer registered: two timers would drain the queue"
    )
    return mt


def check_consumer(consumer_name, mt, prefix):
    consumer = sys.modules[consumer_name]
    assert consumer.mt is mt, f"{consumer_name} uses {consumer.mt.__name__}, expected {mt.__name__}"
    report = consumer.make_objects(prefix)
    assert report["created"] == report["marked"] == 100 and report["off_main"] == 0, report
    return report


def check_orders(mt_name, consumer_name):
    """The consumer and Main Thread Tasks, enabled and disabled in both orders."""
    mt = sys.modules[mt_name]
    reports = {}
    # Main Thread Tasks first, consumer second; disable the consumer first.
    enable(mt_name)
    enable(consumer_name)
    assert_running(mt, users=2, preferences=True)
    reports["mt_then_consumer"] = check_consumer(consumer_name, mt, "a")
    disable(consumer_name)
    assert_running(mt, users=1, preferences=True)
    disable(mt_name)
    assert_stopped(mt)
    # Consumer first (the library is imported, not yet an enabled add-on), then Main Thread Tasks;
    # disable Main Thread Tasks first: the consumer keeps working until it unregisters too.
    enable(consumer_name)
    assert_running(mt, users=1, preferences=False)
    enable(mt_name)
    assert_running(mt, users=2, preferences=True)
    disable(mt_name)
    assert mt.stats().registered == 1 and mt.stats().accepting and timer_registered(mt)
    reports["consumer_after_mt_disabled"] = check_consumer(consumer_name, mt, "b")
    disable(consumer_name)
    assert_stopped(mt)
    return reports


# -- scenarios ---------------------------------------------------------------------------------


def scenario_extension(zip, reload):
    install_extension(zip)
    facts = check_addon_lifecycle(EXT, reload)
    mt = enable(EXT)
    repos = bpy.context.preferences.extensions.repos
    index = next(i for i, repo in enumerate(repos) if repo.module == "user_default")
    result = bpy.ops.extensions.package_uninstall(repo_index=index, pkg_id="mainthread_tasks")
    assert result == {"FINISHED"}, result
    assert EXT not in bpy.context.preferences.addons
    assert not os.path.exists(os.path.dirname(facts["file"])), "uninstall left the files"
    assert_stopped(mt)  # uninstalling disabled it first
    return facts


def scenario_legacy(zip, consumer_zip, reload):
    install_legacy(zip)
    addon_utils.enable(LEGACY, default_set=True)  # how scripts and Blender's start-up enable add-ons
    facts = check_addon_lifecycle(LEGACY, reload)
    install_legacy(consumer_zip)
    facts["orders"] = check_orders(LEGACY, "mtt_consumer")
    return facts


def scenario_consumer(zip, consumer_zip):
    install_extension(zip)
    install_extension(consumer_zip)  # both enabled now
    consumer = "bl_ext.user_default.mtt_consumer"
    disable(consumer)
    disable(EXT)
    return check_orders(EXT, consumer)


def scenario_bundled(zip, bundled_zip):
    bundled = "bl_ext.user_default.mtt_consumer_bundled"
    install_extension(bundled_zip)
    copy = sys.modules[bundled].mt
    assert copy.__name__ == "mainthread_tasks", copy.__name__
    facts = {"bundled_file": assert_installed_in_user_dir(copy)}
    assert os.sep + "site-packages" + os.sep in facts["bundled_file"], facts  # Blender installed the wheel
    assert_running(copy, users=1, preferences=False)  # a library inside another add-on has no panel
    facts["alone"] = check_consumer(bundled, copy, "a")

    # Next to the installed extension: two independent copies, each with its own queue and timer.
    install_extension(zip)
    mt = sys.modules[EXT]
    assert mt is not copy and mt._blender._drain_timer is not copy._blender._drain_timer
    assert_running(mt, users=1, preferences=True)
    assert_running(copy, users=1, preferences=False)
    facts["beside_extension"] = check_consumer(bundled, copy, "b")
    facts["extension_dispatched"] = dispatch(mt)
    disable(EXT)  # the extension first: the bundled copy is not affected
    assert_stopped(mt)
    assert_running(copy, users=1, preferences=False)
    facts["after_extension_disabled"] = check_consumer(bundled, copy, "c")
    disable(bundled)
    assert_stopped(copy)
    enable(EXT)
    enable(bundled)
    disable(bundled)  # now the consumer first
    assert_stopped(copy)
    assert_running(mt, users=1, preferences=True)
    disable(EXT)
    assert_stopped(mt)
    return facts


SCENARIOS = {
    "extension": scenario_extension,
    "legacy": scenario_legacy,
    "consumer": scenario_consumer,
    "bundled": scenario_bundled,
}


def main(argv):
    scenario, result_path, *pairs = argv
    kwargs = dict(pair.split("=", 1) for pair in pairs)
    try:
        outcome = {"ok": True, "facts": SCENARIOS[scenario](**kwargs)}
    except BaseException:  # noqa: BLE001 - reported to the test through the JSON file
        outcome = {"ok": False, "error": traceback.format_exc()}
    outcome["blender"] = bpy.app.version_string
    with open(result_path, "w", encoding="utf-8") as fh:
        json.dump(outcome, fh, indent=2)
    print(json.dumps(outcome, indent=2), flush=True)
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    sys.exit(main(args))
