"""The add-on in Blender's real UI, under Xvfb, end to end (tier blender-gui).

Starts ``xvfb-run blender --factory-startup --python tests/gui/gui_session.py`` with an empty user
folder; the session installs and enables the built add-on with the Preferences operators and drives
every step from Blender's event loop (see its docstring), then quits with a worker still calling
into the main thread. Here we wait for it (with a timeout that kills Xvfb and Blender too), read its
verdict and measurements, and keep them in test-results/<tier>.json (plus the screen with the
preferences panel, test-results/<tier>-preferences.png; the tier is blender-gui or blender-5.2-gui).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from tests import support
from tests.addon_support import (
    RESULTS,
    ROOT,
    build,
    consumer_legacy_zip,
    read_outcome,
    session_env,
    ui_session_command,
    xwd_to_png,
)
from tests.dask_support import Cluster, dask_python_path
from tests.support import run

pytestmark = [pytest.mark.blender, pytest.mark.blender_binary, pytest.mark.gui]

SESSION = ROOT / "tests" / "gui" / "gui_session.py"
GUI_TIMEOUT = 300  # seconds; the session takes about 50


@pytest.mark.timeout(GUI_TIMEOUT + 60)
def test_addon_end_to_end_in_blender_ui(tmp_path):
    if not support.IN_BLENDER_BINARY:
        pytest.fail("the GUI tier runs where Blender's executable is the interpreter (tier blender-gui)")
    addon_zip = build.build_zip(tmp_path / "dist")
    consumer_zip = consumer_legacy_zip(tmp_path)
    work = tmp_path / "gui"
    env = session_env(work)
    dask_python = dask_python_path()
    cluster = Cluster(dask_python)  # for the session's cluster step
    env.update(MTT_DASK_ADDRESS=cluster.address, MTT_DASK_PYTHON=dask_python, MTT_ROOT=str(ROOT))
    script = shutil.copy(SESSION, work / "gui_session.py")  # away from the repo: import what Blender installed
    result = work / "result.json"
    command = ui_session_command(work, script, str(result), str(addon_zip), str(consumer_zip))
    try:
        proc = run(command, GUI_TIMEOUT, env=env, cwd=work)
    finally:
        cluster.close()
    facts = read_outcome(result, proc)

    RESULTS.mkdir(exist_ok=True)
    tier = os.environ.get("MAINTHREAD_TASKS_TIER", "blender-gui")
    (RESULTS / f"{tier}.json").write_text(json.dumps(facts, indent=2))
    xwd_to_png(work / "preferences.xwd", RESULTS / f"{tier}-preferences.png")
    print(json.dumps(facts, indent=2))

    # The session asserted each step as it ran; the headline guarantees once more, from outside.
    assert facts["steps"][-1] == "step_quit_with_a_worker_inside"
    assert facts["module_file"].startswith(str(work / "user")), facts["module_file"]
    trip = facts["round_trip"]
    assert trip["p50_ms"] <= 2 * trip["pass_median_ms"] + 2, trip
    backlog = facts["backlog"]
    assert (
        backlog["peak_pending"] >= 1000
        and backlog["longest_pass_ms"] <= backlog["tick_budget_ms"] + backlog["longest_task_ms"] + 10
    )
    assert all(0.9 <= ratio <= 1.1 for ratio in facts["timer_calls_per_pass"].values()), facts["timer_calls_per_pass"]
    # Blender quit by itself, after the add-on stopped the worker blocked in call_on_main.
    assert "QUIT WORKER GOT SchedulerStopped" in proc.stdout, proc.stdout[-3000:]
    assert "Blender quit" in proc.stdout
    # ... and the worker processes that were in the middle of a task: quickly, none left behind.
    assert time.time() - float(proc.stdout.split("QUITTING AT ", 1)[1].split()[0]) < 5.0, proc.stdout[-3000:]
    assert len(facts["quit_process_pids"]) == 2
    assert not [pid for pid in facts["quit_process_pids"] if os.path.exists(f"/proc/{pid}")], facts["quit_process_pids"]
    assert facts["run_in_process"]["new_threads"] == [], facts["run_in_process"]
    # 50 Dask tasks applied to the scene by done-callbacks, the UI passing, no thread, no dask.
    cluster_facts = facts["cluster"]
    assert cluster_facts["new_threads"] == [] and cluster_facts["dask_in_blender"] == [], cluster_facts
    assert cluster_facts["ui_gap_max_ms"] < 1000 and cluster_facts["broker_ended"], cluster_facts
    # Coroutines stepped by the add-on's timer: sleep(0) within a pass, no thread, File > New.
    assert facts["coroutines"]["sleep0_most_passes_between_steps"] <= 1, facts["coroutines"]
    assert facts["coroutines"]["threads_seen"] == ["MainThread"], facts["coroutines"]
    assert facts["coroutines_file_new"]["stale"].startswith("ReferenceError"), facts["coroutines_file_new"]
