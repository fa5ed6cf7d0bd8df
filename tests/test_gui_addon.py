"""What add-ons build on the library, in Blender's real UI under Xvfb (tiers blender-gui, blender-5.2-gui).

Starts ``xvfb-run blender --factory-startup --python tests/gui/addon_session.py`` with an empty
user folder, twice (see the session's docstring): ``main`` (ui_context from worker tasks, the
progress in the status bar, the example add-on examples/asset_downloader end to end, a real render
started with INVOKE_DEFAULT while a worker queues data changes, strict mode) and ``keys``, with
``--enable-event-simulate`` (the cancel button and ESC). Keeps the facts in
test-results/<tier>-addon-<mode>.json and the status bar as Xvfb showed it in
test-results/<tier>-<snapshot>.png.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests import support
from tests.addon_support import (
    RESULTS,
    ROOT,
    build,
    legacy_zip,
    read_outcome,
    session_env,
    ui_session_command,
    xwd_to_png,
)
from tests.support import run

pytestmark = [pytest.mark.blender, pytest.mark.blender_binary, pytest.mark.gui]

SESSION = ROOT / "tests" / "gui" / "addon_session.py"
EXAMPLE = ROOT / "examples" / "asset_downloader"
GUI_TIMEOUT = 300  # seconds; the session takes about a minute
STATUS_BAR = (26, 760)  # height of the strip kept, and its width from the left edge


def _session(tmp_path, mode: str) -> tuple[dict, str]:
    """Run the session in ``mode``; return its facts (snapshots converted) and its stdout."""
    if not support.IN_BLENDER_BINARY:
        pytest.fail("the GUI tier runs where Blender's executable is the interpreter (tier blender-gui)")
    addon_zip = build.build_zip(tmp_path / "dist")
    example_zip = legacy_zip(EXAMPLE, tmp_path)
    work = tmp_path / "gui"
    env = session_env(work)
    script = shutil.copy(SESSION, work / "addon_session.py")  # away from the repo: import what Blender installed
    result = work / "result.json"
    simulate = ("--enable-event-simulate",) if mode == "keys" else ()
    command = ui_session_command(work, script, str(result), str(addon_zip), str(example_zip), mode, flags=simulate)
    proc = run(command, GUI_TIMEOUT, env=env, cwd=work)
    facts = read_outcome(result, proc)

    RESULTS.mkdir(exist_ok=True)
    tier = os.environ.get("MAINTHREAD_TASKS_TIER", "blender-gui")
    (RESULTS / f"{tier}-addon-{mode}.json").write_text(json.dumps(facts, indent=2))
    height, width = STATUS_BAR
    for name, win in facts.get("snapshots", {}).items():
        box = (win["x"], win["y"] + win["height"] - height, width, height)
        xwd_to_png(work / f"{name}.xwd", RESULTS / f"{tier}-{name}.png", box)
    print(json.dumps(facts, indent=2))
    assert "ADDON SESSION OK" in proc.stdout
    return facts, proc.stdout


@pytest.mark.timeout(GUI_TIMEOUT + 60)
def test_addon_building_blocks_in_blender_ui(tmp_path):
    facts, _ = _session(tmp_path, "main")
    # The session asserted each step as it ran; the headline guarantees once more, from outside.
    assert facts["steps"][-1] == "step_strict_mode"
    display = facts["progress_display"]
    assert display["redraws_per_second_while_changing"] <= 11 and display["redraws_while_static_1_5s"] <= 1
    hold = facts["render_hold"]
    assert hold["ran_during_job"] == 0
    if not hold["blocked"]:
        assert hold["held_seen"], hold
    assert facts["example"]["created"] == 12


@pytest.mark.timeout(GUI_TIMEOUT + 60)
def test_cancel_button_and_esc_in_blender_ui(tmp_path):
    facts, _ = _session(tmp_path, "keys")
    assert facts["steps"][-1] == "step_example_cancelled_with_esc"
    assert facts["esc"]["probe_calls"] == 2
    created, asked = facts["example_cancelled"]["created_of"]
    assert 5 <= created < asked
