#!/usr/bin/env python3
"""Run every test tier and print one summary. ``.ci/run`` runs exactly this.

    python3 scripts/run_tests.py              # every tier (installs what is missing)
    python3 scripts/run_tests.py cpython      # only the named tier(s)
    BLENDER=/opt/blender/blender python3 scripts/run_tests.py

Tiers:
  cpython              plain CPython + fake-bpy-module + pytest-mock: fast logic tests
  cpython-3.13         the same on Python 3.13 (pyenv's; else the sid chroot's Python, said so)
  blender-background   the Blender binary (3.4.1 from Debian unless $BLENDER), pytest inside
                       ``blender --background``
  bpy-5.0.1            the bpy wheel 5.0.1 (Blender as a Python module)
  bpy-4.5.15           the bpy wheel 4.5.15 LTS (the newest 4.5)
  bpy-4.2.23           the bpy wheel 4.2.23 LTS
  install-bpy-5.0.1    the built zip installed as an extension (package_install_files) and as a
  install-bpy-4.5.15   legacy add-on into a fresh bpy 5.0.1 / 4.5.15 / 4.2.23, with a second
  install-bpy-4.2.23   add-on that imports it or bundles its wheel (tests/test_addon_install.py)
  install-legacy-blender  the built zip installed as a legacy add-on (addon_install +
                       addon_utils.enable) into the Blender binary, with the second add-on
  blender-gui          Blender's UI under Xvfb (xvfb-run), the add-on enabled as a user does, driven
                       from its event loop (tests/test_gui.py; measurements in
                       test-results/blender-gui.json)
  blender-5.2-background  Debian sid's Blender 5.2 LTS (Python 3.14) in a chroot under the cache
  install-blender-5.2  folder (scripts/_setup.py builds it with debootstrap): the core tests, the
  blender-5.2-gui      install scenarios, and the GUI session in its UI (extension install)
  docs                 the documentation site built with ``mkdocs build --strict`` in the docs venv,
                       as ``python3 scripts/docs.py`` builds it (tests/test_docs.py)
  lint                 ``ruff check``, ``ruff format --check`` and ``mypy --strict`` on the package,
                       as pyproject.toml configures them, in the lint venv (tests/test_lint.py)
  windows-cpython-3.11 the cpython tier on the Windows CPython (python.org's 3.11.9) under Wine
  windows-cpython-3.13 the same on the Windows CPython 3.13.2
  windows-bpy-4.2.23   the bpy tier with the Windows bpy wheel 4.2.23 LTS on the Windows CPython 3.11
                       under Wine (scripts/_setup.py installs Wine, the Pythons and the wheel)

Exit status is non-zero if any tier failed or could not run: a tier that cannot run is a
failure, never a skip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _setup

ROOT = _setup.ROOT
RESULTS = ROOT / "test-results"
TIER_TIMEOUT = 1200  # seconds; per-test timeouts are in pyproject.toml, this catches a wedged interpreter


@dataclass
class Outcome:
    tier: str
    status: str = "not run"
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _counts(xml_path: Path) -> tuple[int, int, int]:
    root = ET.parse(xml_path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return tests - failed - skipped, failed, skipped


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _pytest_tier(tier: str, command: list[str], env: dict[str, str]) -> Outcome:
    outcome = Outcome(tier)
    xml_path = RESULTS / f"{tier}.xml"
    xml_path.unlink(missing_ok=True)
    command = [*command, f"--junitxml={xml_path}", "-o", f"junit_suite_name={tier}"]
    print(f"\n===== tier {tier} =====\n$ {_setup.shown(command)}", flush=True)
    started = time.monotonic()
    try:
        code: int | None = subprocess.run(command, cwd=ROOT, env=env, timeout=TIER_TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        code = None
        outcome.notes.append(f"killed after {TIER_TIMEOUT} s")
    if code is not None and code < 0:
        # The interpreter itself died (faulthandler's dump is above). A crash is a bug to find,
        # never noise to retry: the tier fails.
        crash = f"CRASHED ({_signal_name(-code)}), see the dump above"
        outcome.notes.append(crash)
        print(f"\n!!!!! tier {tier}: {crash} !!!!!\n", flush=True)
    outcome.seconds = time.monotonic() - started
    if xml_path.exists():
        outcome.passed, outcome.failed, outcome.skipped = _counts(xml_path)
    else:
        outcome.notes.append("no test report written")
    if code == 0 and outcome.passed and not outcome.failed:
        outcome.status = "passed"
    else:
        outcome.status = "FAILED"
        if code not in (0, None):
            outcome.notes.append(f"exit code {code}")
        if code == 0 and not outcome.passed:
            outcome.notes.append("ran no test")
    return outcome


def _env(tier: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, MAINTHREAD_TASKS_TIER=tier, PYTHONFAULTHANDLER="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    env.setdefault(DASK_PYTHON, "")
    env.update(extra)
    return env


#: The interpreter with ``distributed`` that the cluster tests (tests/test_cluster.py) run their
#: LocalCluster and ProcessPool(cluster=...)'s broker with; set for every tier that runs them.
DASK_PYTHON = "MAINTHREAD_TASKS_DASK_PYTHON"


def _dask_env() -> dict[str, str]:
    return {DASK_PYTHON: str(_setup.dask_python())}


#: The plain-Python tiers: everything but real Blender, the docs site and the linters (their own tiers).
PLAIN_PYTHON = "not blender and not docs and not lint"


def tier_cpython() -> Outcome:
    python = _setup.dev_python()
    return _pytest_tier("cpython", [str(python), "-m", "pytest", "-m", PLAIN_PYTHON], _env("cpython", **_dask_env()))


def tier_cpython_313() -> Outcome:
    """The cpython tier on Python 3.13: pyenv's 3.13, else the sid chroot's Python (3.14), else fail."""
    tier = "cpython-3.13"
    base = _setup.python313()
    if base:
        python = _setup.venv_python("venv-dev-py3.13", _setup.test_requirements(), base=base)
        return _noted(
            _pytest_tier(tier, [str(python), "-m", "pytest", "-m", PLAIN_PYTHON], _env(tier, **_dask_env())),
            f"Python {_python_version([str(python)])}",
        )
    pyver = _setup.sid_python_version()
    site = _setup.target_site(f"chroot-site-py{pyver}", pyver, _setup.test_requirements())
    python = [*_setup.sid_command([site]), "python3"]
    version = _python_version(python)
    print(f"[{tier}] no Python 3.13 here: running on the sid chroot's Python {version}", flush=True)
    outcome = _pytest_tier(tier, [*python, "-m", "pytest", "-m", PLAIN_PYTHON], _env(tier, PYTHONPATH=str(site)))
    return _noted(outcome, f"Python 3.13 not found: ran on the chroot's Python {version}")


def _python_version(python: list[str], env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        [*python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    ).stdout.strip()


def _noted(outcome: Outcome, note: str) -> Outcome:
    outcome.notes.insert(0, note)
    return outcome


# Tests of the installed add-on run in their own tiers, so the summary shows each install path.
ADDON_MARKERS = "install_extension or install_legacy or gui"
CORE_IN_BLENDER = f"not fake_bpy and not docs and not lint and not ({ADDON_MARKERS})"


#: The test kit's cache (pytest for Blender's Python, what it learnt about each Blender): mounted
#: into the sid chroot too.
KIT_CACHE = _setup.CACHE / "testing"


def _blender_tier(tier: str, markers: str, blender: str | None = None, **extra: str) -> Outcome:
    """The tests selected by ``markers`` in a Blender binary, through the project's own test kit:
    ``python3 -m mainthread_tasks.testing --blender BLENDER`` (``--background``, and the gui tests
    in its UI on an Xvfb of the kit's; a crashed test is reported and the rest run on).

    ``blender``: the executable (default: the 3.4.1 binary). Blender's Python gets the test tools
    of tests/requirements.txt from the kit (the dev venv's own when the Python versions match).
    """
    if blender is None:
        blender = _setup.blender_executable()
    tools = [f"--with={r}" for r in _setup.test_requirements() if not r.startswith("fake-bpy-module")]
    command = [str(_setup.dev_python()), "-m", "mainthread_tasks.testing", "--blender", blender, "--xvfb", *tools]
    env = _env(tier, MAINTHREAD_TASKS_TESTING_CACHE=str(KIT_CACHE), **extra)
    outcome = _pytest_tier(tier, [*command, "-m", markers], env)
    return _noted(outcome, _blender_note(RESULTS / f"{tier}.xml"))


def _blender_note(xml_path: Path) -> str:
    """'Blender X, Python Y', as the kit's report says (the properties of its test suites)."""
    if not xml_path.exists():
        return "no report from the test kit"
    found = {p.get("name"): p.get("value") for p in ET.parse(xml_path).getroot().iter("property")}
    return f"Blender {found.get('blender', '?')}, Python {found.get('python', '?')}"


def _bpy_tier(tier: str, version: str, markers: str, **extra: str) -> Outcome:
    """pytest in the venv of the bpy wheel ``version``, tests selected by ``markers``."""
    python = _setup.bpy_python(version)
    return _pytest_tier(tier, [str(python), "-m", "pytest", "-m", markers], _env(tier, **extra))


def tier_blender_background() -> Outcome:
    return _blender_tier("blender-background", CORE_IN_BLENDER, **_dask_env())


def tier_bpy(version: str):
    def run() -> Outcome:
        # The demo test needs the Blender executable as its interpreter (blender_binary).
        return _bpy_tier(f"bpy-{version}", version, f"{CORE_IN_BLENDER} and not blender_binary", **_dask_env())

    return run


def tier_install_bpy(version: str):
    def run() -> Outcome:
        # The wheel (bundled by a test add-on) is built with the build backend from pyproject.toml.
        build_python = str(_setup.build_python())
        return _bpy_tier(
            f"install-bpy-{version}",
            version,
            "install_extension or install_legacy",
            MAINTHREAD_TASKS_BUILD_PYTHON=build_python,
        )

    return run


def tier_install_legacy() -> Outcome:
    return _blender_tier("install-legacy-blender", "install_legacy")


def tier_blender_gui() -> Outcome:
    _setup.xvfb_run()  # installs Xvfb when missing; the test fails loudly if it still is
    return _blender_tier("blender-gui", "gui", **_dask_env())


def _sid_tier(tier: str, markers: str, **extra: str) -> Outcome:
    """The tests in Debian sid's Blender 5.2 LTS (the chroot scripts/_setup.py builds), through the kit,
    with the chroot's own Dask venv mounted for the cluster tests."""
    KIT_CACHE.mkdir(parents=True, exist_ok=True)  # mounted: it must exist
    dask = _setup.sid_dask_python()
    blender = _setup.sid_blender([KIT_CACHE, dask.parent.parent])
    return _blender_tier(tier, markers, str(blender), **{DASK_PYTHON: str(dask)}, **extra)


def tier_sid_background() -> Outcome:
    return _sid_tier("blender-5.2-background", CORE_IN_BLENDER)


def tier_sid_install() -> Outcome:
    # The wheel a test add-on bundles is built by the chroot's own Python (pip + setuptools).
    return _sid_tier(
        "install-blender-5.2", "install_extension or install_legacy", MAINTHREAD_TASKS_BUILD_PYTHON="/usr/bin/python3"
    )


def tier_sid_gui() -> Outcome:
    return _sid_tier("blender-5.2-gui", "gui")


#: The newest 4.5 LTS bpy wheel on PyPI (Python 3.11).
BPY_45 = "4.5.15"


#: Deselected under Wine, said in each Windows tier's notes: the Dask cluster tests need a broker
#: Python with distributed, and the Windows tiers build none (the cluster path is Linux-tested only).
NOT_UNDER_WINE = "cluster"


def _windows_tier(tier: str, python: tuple[list[str], Path], markers: str) -> Outcome:
    """pytest on a Windows CPython under Wine (see scripts/_setup.py), tests selected by ``markers``."""
    command, prefix = python
    env = _setup.wine_env(prefix, _env(tier))
    outcome = _pytest_tier(tier, [*command, "-m", "pytest", "-m", f"({markers}) and not {NOT_UNDER_WINE}"], env)
    return _noted(
        outcome,
        f"Windows Python {_python_version(command, env)} under Wine; the {NOT_UNDER_WINE} tests not run here",
    )


def tier_windows_cpython(version: str):
    def run() -> Outcome:
        return _windows_tier(f"windows-cpython-{version}", _setup.windows_dev_python(version), PLAIN_PYTHON)

    return run


def tier_windows_bpy(version: str):
    def run() -> Outcome:
        markers = f"{CORE_IN_BLENDER} and not blender_binary"
        return _windows_tier(f"windows-bpy-{version}", _setup.windows_bpy_python(version), markers)

    return run


def tier_docs() -> Outcome:
    python = _setup.docs_python()
    return _pytest_tier("docs", [str(python), "-m", "pytest", "-m", "docs"], _env("docs"))


def tier_lint() -> Outcome:
    python = _setup.lint_python()
    return _pytest_tier("lint", [str(python), "-m", "pytest", "-m", "lint"], _env("lint"))


TIERS = {
    "cpython": tier_cpython,
    "cpython-3.13": tier_cpython_313,
    "blender-background": tier_blender_background,
    "bpy-5.0.1": tier_bpy("5.0.1"),
    f"bpy-{BPY_45}": tier_bpy(BPY_45),
    "bpy-4.2.23": tier_bpy("4.2.23"),
    "install-bpy-5.0.1": tier_install_bpy("5.0.1"),
    f"install-bpy-{BPY_45}": tier_install_bpy(BPY_45),
    "install-bpy-4.2.23": tier_install_bpy("4.2.23"),
    "install-legacy-blender": tier_install_legacy,
    "blender-gui": tier_blender_gui,
    "blender-5.2-background": tier_sid_background,
    "install-blender-5.2": tier_sid_install,
    "blender-5.2-gui": tier_sid_gui,
    "docs": tier_docs,
    "lint": tier_lint,
    "windows-cpython-3.11": tier_windows_cpython("3.11"),
    "windows-bpy-4.2.23": tier_windows_bpy("4.2.23"),
    "windows-cpython-3.13": tier_windows_cpython("3.13"),
}


def main(argv: list[str]) -> int:
    wanted = argv or list(TIERS)
    unknown = [name for name in wanted if name not in TIERS]
    if unknown:
        print(f"unknown tier(s) {unknown}; choose from {list(TIERS)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    _setup.let_children_take_ctrl_c()
    outcomes = []
    for name in wanted:
        started = time.monotonic()
        try:
            outcome = TIERS[name]()
        except (_setup.SetupError, subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            outcome = Outcome(name, status="COULD NOT RUN", notes=[str(exc)])
            print(f"\n!!!!! tier {name} COULD NOT RUN: {exc}\n", flush=True)
        setup = time.monotonic() - started - outcome.seconds
        outcome.seconds += setup
        if setup >= 5:  # installing what the tier needs (a venv, the chroot) on a cold cache
            outcome.notes.append(f"{setup:.0f} s of it setup")
        outcomes.append(outcome)
    print("\n===== summary =====")
    print(f"{'tier':<25}{'status':<15}{'passed':>7}{'failed':>7}{'skipped':>8}{'seconds':>9}  notes")
    for o in outcomes:
        print(
            f"{o.tier:<25}{o.status:<15}{o.passed:>7}{o.failed:>7}{o.skipped:>8}{o.seconds:>9.1f}  {'; '.join(o.notes)}"
        )
    crashed = [o.tier for o in outcomes if any(n.startswith("CRASHED") for n in o.notes)]
    if crashed:
        print(f"\n!!!!! the interpreter crashed in {', '.join(crashed)} (see the notes and the dumps above)")
    bad = [o for o in outcomes if o.status != "passed"]
    if bad:
        print(f"\n{len(bad)} tier(s) did not pass: {', '.join(o.tier for o in bad)}")
    passed = sum(o.passed for o in outcomes)
    failed = sum(o.failed for o in outcomes) + sum(1 for o in bad if not o.failed)
    skipped = sum(o.skipped for o in outcomes)
    print(f"all tiers took {sum(o.seconds for o in outcomes):.0f} s")
    print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
