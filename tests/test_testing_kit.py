"""The test kit (``python3 -m mainthread_tasks.testing``, docs/testing.md) tested in real Blender.

Two parts. The first runs inside this tier's own kit session (the blender-background and 5.2 tiers
run through the kit): ``bpy.app.timers`` as ``pump_until`` fires them, by Blender's rules. The
second runs the launcher itself on the sample add-on's suite in tests/kit_sample, against this
tier's Blender executable, and checks each test's verdict in the JUnit XML: leaks, errors that were
only printed, a timer, a gui test in the real UI, a crash followed by more tests, allow_leaks.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests import doc_blocks
from tests.support import ROOT, run

pytestmark = [pytest.mark.blender, pytest.mark.blender_binary]

bpy = pytest.importorskip("bpy")  # real Blender in these tiers (conftest fails the tier otherwise)

SAMPLE = ROOT / "tests" / "kit_sample"
LAUNCHER_TIMEOUT = 600  # seconds; the sample's run takes about 30 here


# -- timers under the kit's pump_until -------------------------------------------------------------


def test_timers_fire_by_first_interval_and_returned_interval_until_none(pump_until):
    calls = []

    def timer():
        calls.append(time.monotonic())
        return 0.05 if len(calls) < 3 else None

    registered = time.monotonic()
    bpy.app.timers.register(timer, first_interval=0.1)
    assert bpy.app.timers.is_registered(timer)
    pump_until(lambda: len(calls) == 3, timeout=5)
    assert calls[0] - registered >= 0.1
    assert all(b - a >= 0.05 for a, b in zip(calls, calls[1:], strict=False)), calls
    assert not bpy.app.timers.is_registered(timer)  # None unregistered it, in Blender too
    with pytest.raises(ValueError):
        bpy.app.timers.unregister(timer)


def test_a_file_load_drops_the_timers_that_are_not_persistent(pump_until):
    fired = []

    def kept():
        fired.append("kept")

    def dropped():
        fired.append("dropped")

    bpy.app.timers.register(kept, first_interval=0.05, persistent=True)
    bpy.app.timers.register(dropped, first_interval=0.05)
    bpy.ops.wm.read_homefile(use_factory_startup=True)
    assert bpy.app.timers.is_registered(kept) and not bpy.app.timers.is_registered(dropped)
    pump_until(lambda: fired, timeout=5)
    time.sleep(0.1)
    pump_until(lambda: True)
    assert fired == ["kept"]


def test_a_timer_that_returns_no_number_is_dropped_and_fails_the_test(pump_until, swallowed_errors):
    def wrong():
        return "soon"

    bpy.app.timers.register(wrong)
    pump_until(lambda: swallowed_errors, timeout=5)
    (error,) = swallowed_errors
    assert error.kind == "timers" and "not None or a number" in str(error.exception)
    assert not bpy.app.timers.is_registered(wrong)
    swallowed_errors.clear()


def test_pump_until_says_what_is_pending_when_it_times_out(pump_until):
    def never():
        return 10.0

    bpy.app.timers.register(never, first_interval=10)
    with pytest.raises(TimeoutError, match=r"still false after 0.1 s; still pending: .*never due in"):
        pump_until(lambda: False, timeout=0.1)
    bpy.app.timers.unregister(never)


# -- the launcher on the sample suite ----------------------------------------------------------------


def _launcher_environment(home: Path) -> tuple[str, dict[str, str]]:
    """A Python of Blender's Python version to run the launcher (as a user would from outside
    Blender), with this session's pytest importable: the launcher then gives Blender that pytest."""
    found = shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}")
    assert found, f"no python{sys.version_info[0]}.{sys.version_info[1]} on PATH to run the launcher with"
    # The interpreter itself, not a shim (pyenv's needs bash on PATH).
    python = subprocess.run(
        [found, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    import pluggy

    folders = {str(Path(module.__file__).resolve().parents[1]) for module in (pytest, pluggy)}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BLENDER_USER_", "MAINTHREAD_TASKS_TESTING_SESSION", "MAINTHREAD_TASKS_TIER"))
    }
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), *sorted(folders)]), HOME=str(home))
    env.pop("DISPLAY", None)  # the gui test runs on the kit's own Xvfb
    return python, env


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """The launcher's run of the sample suite: (its process, each test's verdict, the XML root)."""
    work = tmp_path_factory.mktemp("kit")
    home = work / "home"
    home.mkdir()
    python, env = _launcher_environment(home)
    # A studio's own folders for Blender: the kit's sessions must not use them either.
    env.update(
        BLENDER_USER_SCRIPTS=str(home / "studio" / "scripts"), BLENDER_USER_CONFIG=str(home / "studio" / "config")
    )
    report = work / "report.xml"
    command = [
        python,
        "-m",
        "mainthread_tasks.testing",
        "--blender",
        bpy.app.binary_path,
        "--addon",
        "kit_sample_addon",
        "--test-timeout",
        "120",
        f"--junitxml={report}",
        "-q",
    ]
    proc = run(command, LAUNCHER_TIMEOUT, cwd=SAMPLE, env=env)
    out = f"--- stdout ---\n{proc.stdout[-8000:]}\n--- stderr ---\n{proc.stderr[-8000:]}"
    assert report.exists(), out
    root = ET.parse(report).getroot()
    verdicts = {}
    for suite in root.iter("testsuite"):
        mode = {p.get("name"): p.get("value") for p in suite.iter("property")}["mode"]
        for case in suite.iter("testcase"):
            outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
            verdicts[case.get("name")] = (
                mode,
                "passed" if outcome is None else outcome.tag,
                "" if outcome is None else f"{outcome.get('message')}\n{outcome.text}",
            )
    return proc, verdicts, root, home, out


def _verdict(sample_run, name):
    proc, verdicts, _root, _home, out = sample_run
    assert name in verdicts, f"{name} is not in the report\n{out}"
    return verdicts[name]


def test_the_launcher_reports_every_test_and_fails_the_run(sample_run):
    proc, verdicts, root, _home, out = sample_run
    assert proc.returncode == 1, out
    assert len(verdicts) == 16, sorted(verdicts)
    suites = {p.get("value") for p in root.iter("property") if p.get("name") == "mode"}
    assert suites == {"background", "gui"}
    assert {p.get("value") for p in root.iter("property") if p.get("name") == "blender"} == {bpy.app.version_string}


@pytest.mark.parametrize(
    "name",
    [
        "test_the_addon_is_enabled_from_the_temporary_user_folder",
        "test_a_timer_fires_by_its_intervals_during_pump_until",
        "test_scene_changes_stay_in_their_test_1",
        "test_scene_changes_stay_in_their_test_2",
        "test_allowed_to_leak_a_thread",
        "test_expected_errors_are_taken_from_swallowed_errors",
    ],
)
def test_what_is_clean_passes(sample_run, name):
    mode, outcome, text = _verdict(sample_run, name)
    assert (mode, outcome) == ("background", "passed"), text


@pytest.mark.parametrize(
    "name, named",
    [
        ("test_leaks_a_thread", "1 thread(s) still running: leaky-worker"),
        ("test_leaks_a_timer", "1 bpy.app.timers still registered: kit_sample_addon.tick"),
        ("test_leaks_a_handler", "1 bpy.app.handlers functions still added: depsgraph_update_post"),
    ],
)
def test_a_leak_fails_the_test_naming_it(sample_run, name, named):
    mode, outcome, text = _verdict(sample_run, name)
    assert (mode, outcome) == ("background", "error"), text
    assert "the test left behind" in text and named in text, text


@pytest.mark.parametrize(
    "name, kind, original",
    [
        ("test_a_post_on_main_task_fails", "logged", "ZeroDivisionError: division by zero"),
        ("test_a_thread_fails", "threads", "KeyError: 'missing'"),
        ("test_a_handler_fails", "handlers", "ValueError: broken handler"),
        ("test_a_timer_fails", "timers", "RuntimeError: broken timer"),
    ],
)
def test_an_error_that_was_only_printed_fails_the_test_with_its_traceback(sample_run, name, kind, original):
    mode, outcome, text = _verdict(sample_run, name)
    assert (mode, outcome) == ("background", "failure"), text
    assert "were only printed or logged, not raised" in text and f"{kind}: " in text, text
    assert "Traceback (most recent call last)" in text and original in text, text


def test_a_crash_fails_its_test_with_the_traceback_and_the_rest_run_in_a_fresh_blender(sample_run):
    proc, _verdicts, _root, _home, out = sample_run
    mode, outcome, text = _verdict(sample_run, "test_crashes_blender")
    assert (mode, outcome) == ("background", "failure"), text
    assert "Blender crashed (SIGSEGV) during this test" in text, text
    assert "Fatal Python error: Segmentation fault" in text and "test_sample.py" in text, text
    mode, outcome, text = _verdict(sample_run, "test_runs_after_the_crash_in_a_fresh_blender")
    assert (mode, outcome) == ("background", "passed"), text
    assert "running the 1 test(s) not run yet in a fresh Blender" in proc.stdout, out


def test_a_gui_test_runs_in_the_real_ui_with_timers(sample_run):
    mode, outcome, text = _verdict(sample_run, "test_in_the_real_ui_a_timer_fires_during_pump_until")
    assert (mode, outcome) == ("gui", "passed"), text


def test_the_users_own_blender_folders_are_never_touched(sample_run):
    # HOME was an empty folder: Blender would have read and made ~/.config/blender there. The
    # sample's first test checked that Blender's user folder was the kit's temporary one.
    # (Blender does make the freedesktop thumbnail folders, ~/.cache/thumbnails, as it starts.)
    _proc, _verdicts, _root, home, _out = sample_run
    assert not (home / ".config" / "blender").exists(), sorted(home.rglob("*"))
    assert not (home / "studio").exists(), sorted(home.rglob("*"))


def test_the_launcher_says_when_there_is_no_blender(tmp_path):
    python, env = _launcher_environment(tmp_path)
    env.pop("BLENDER", None)
    env["PATH"] = str(tmp_path)  # no blender on it
    proc = subprocess.run(
        [python, "-m", "mainthread_tasks.testing", "-q"],
        cwd=SAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "no Blender: pass --blender PATH" in proc.stdout


def test_the_example_addons_own_tests_pass_as_the_tutorial_runs_them(tmp_path):
    command = doc_blocks.command(doc_blocks.block(doc_blocks.TUTORIAL, "test-command"))
    # The tutorial shows the example's demo server and tests whole: these runs run them.
    example = ROOT / "examples" / "asset_downloader"
    assert doc_blocks.included(doc_blocks.block(doc_blocks.TUTORIAL, "demo-assets")) == example / "demo_assets.py"
    tests = example / "tests" / "test_asset_downloader.py"
    assert doc_blocks.included(doc_blocks.block(doc_blocks.TUTORIAL, "tests")) == tests
    python, env = _launcher_environment(tmp_path)
    report = tmp_path / "report.xml"
    prefix = "python3 -m mainthread_tasks.testing "
    assert command.startswith(prefix), command
    args = shlex.split(command.removeprefix(prefix))
    command = [
        python,
        "-m",
        "mainthread_tasks.testing",
        "--blender",
        bpy.app.binary_path,
        *args,
        f"--junitxml={report}",
    ]
    proc = run(command, LAUNCHER_TIMEOUT, cwd=ROOT, env=env)  # from the top of a checkout
    out = f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, out
    root = ET.parse(report).getroot()
    modes = [
        {p.get("name"): p.get("value") for p in suite.iter("property")}["mode"] for suite in root.iter("testsuite")
    ]
    assert modes == ["background", "gui"], out
    assert [int(suite.get("tests")) for suite in root.iter("testsuite")] == [3, 1], out
    assert all(suite.get(k) == "0" for suite in root.iter("testsuite") for k in ("failures", "errors", "skipped")), out


def _tiny_suite(folder: Path, addon_register: str, test_body: str) -> None:
    """A one-file add-on (``tiny_addon.py``) and a test module, in ``folder``."""
    (folder / "tests").mkdir(parents=True)
    (folder / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (folder / "tiny_addon.py").write_text(
        'bl_info = {"name": "Tiny", "blender": (3, 4, 0), "category": "Development"}\n\n\n'
        f"def register():\n    {addon_register}\n\n\ndef unregister():\n    pass\n"
    )
    (folder / "tests" / "test_tiny.py").write_text(test_body)


def test_an_addon_that_fails_to_enable_stops_the_run_with_its_traceback(tmp_path):
    _tiny_suite(tmp_path / "suite", 'raise RuntimeError("cannot register")', "def test_nothing():\n    pass\n")
    python, env = _launcher_environment(tmp_path)
    command = [python, "-m", "mainthread_tasks.testing", "--blender", bpy.app.binary_path, "--addon", "tiny_addon.py"]
    proc = run(command, LAUNCHER_TIMEOUT, cwd=tmp_path / "suite", env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out  # pytest's usage error: nothing ran
    assert "enabling tiny_addon failed" in out and "RuntimeError: cannot register" in out, out


def test_a_hung_test_is_stopped_reported_and_the_rest_run(tmp_path):
    body = "import time\n\n\ndef test_hangs():\n    time.sleep(120)\n\n\ndef test_after():\n    pass\n"
    _tiny_suite(tmp_path / "suite", "pass", body)
    python, env = _launcher_environment(tmp_path)
    report = tmp_path / "report.xml"
    command = [python, "-m", "mainthread_tasks.testing", "--blender", bpy.app.binary_path, "--addon", "tiny_addon.py"]
    proc = run(
        [*command, "--test-timeout", "3", f"--junitxml={report}"], LAUNCHER_TIMEOUT, cwd=tmp_path / "suite", env=env
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    cases = {case.get("name"): case for case in ET.parse(report).getroot().iter("testcase")}
    failure = cases["test_hangs"].find("failure")
    assert failure is not None and "the test ran longer than 3 s" in failure.get("message"), out
    assert "Timeout (0:00:03)!" in failure.text and "in test_hangs" in failure.text, failure.text
    assert len(cases["test_after"]) == 0, out  # passed, in a fresh Blender


def test_without_a_display_or_xvfb_the_gui_tests_are_skipped_with_the_reason(tmp_path):
    body = "import pytest\n\n\n@pytest.mark.gui\ndef test_in_the_ui():\n    pass\n\n\ndef test_headless():\n    pass\n"
    _tiny_suite(tmp_path / "suite", "pass", body)
    python, env = _launcher_environment(tmp_path)
    env["PATH"] = str(tmp_path / "empty")  # no Xvfb on it (and $DISPLAY is unset)
    report = tmp_path / "report.xml"
    command = [python, "-m", "mainthread_tasks.testing", "--blender", bpy.app.binary_path, f"--junitxml={report}"]
    proc = run([*command, "-rs"], LAUNCHER_TIMEOUT, cwd=tmp_path / "suite", env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    cases = {case.get("name"): case for case in ET.parse(report).getroot().iter("testcase")}
    skipped = cases["test_in_the_ui"].find("skipped")
    assert skipped is not None and "Xvfb is not installed" in skipped.get("message"), out
    assert len(cases["test_headless"]) == 0, out
    assert "1 skipped" in proc.stdout and " in the UI: " not in proc.stdout, out
