"""The launcher: ``python3 -m mainthread_tasks.testing [kit options] [pytest args]`` (docs/testing.md).

For each ``--blender`` it runs the suite in sessions, each a fresh Blender with a fresh temporary user
folder (``BLENDER_USER_RESOURCES``: your own preferences and add-ons are never read or written) and the
``--addon``s installed there:

1. ``--background`` (or the ``bpy`` module's Python): every test but the ``gui`` ones;
2. Blender's UI, for the ``gui`` tests, if there are any: on ``$DISPLAY``, else on an Xvfb the
   launcher starts (and stops); with neither, or in the ``bpy`` module, those tests are skipped,
   with the reason, in the first session.

A session that dies (a signal, the watchdog of ``--test-timeout``) is reported: the test it was in
fails with "Blender crashed (...)" and the traceback faulthandler wrote, and the tests not run yet
run in a fresh Blender. The exit status is pytest's (the worst of the sessions'; 1 after a crash);
``--junitxml`` gets every test of every session, crashed ones included.

Standard library only, any Python >= 3.10: it never imports bpy nor pytest itself.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import _junit
from ._blenders import Blender, _requirement_name, default_cache, find_blenders, probe, pytest_paths
from ._kit import DEFAULT_TEST_TIMEOUT, INTERRUPTED, NO_TESTS, OK, USAGE_ERROR, KitError, Options, _say
from ._sessions import ModeOutcome, Run, _combine, _exit_first, _run_mode, _wants_coverage

__all__ = ("main",)


# -- the command line -------------------------------------------------------------------------------


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python3 -m mainthread_tasks.testing",
        description="Run a pytest suite inside real Blender: every option not listed here goes to pytest.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--blender",
        action="append",
        default=[],
        metavar="PATH",
        help="a Blender executable, or a Python that has the bpy module (repeatable; default: $BLENDER, "
        "then blender on PATH)",
    )
    parser.add_argument(
        "--addon",
        action="append",
        default=[],
        metavar="PATH",
        type=Path,
        help="an add-on (folder, .py or zip) to install into the temporary user folder and enable (repeatable)",
    )
    parser.add_argument(
        "--with",
        dest="requirements",
        action="append",
        default=[],
        metavar="REQUIREMENT",
        help="a package for Blender's Python besides pytest, e.g. pytest-mock (repeatable)",
    )
    parser.add_argument(
        "--test-timeout",
        type=float,
        default=DEFAULT_TEST_TIMEOUT,
        metavar="SECONDS",
        help=f"a test that runs longer ends its Blender and is reported (default {DEFAULT_TEST_TIMEOUT:g}; 0: never)",
    )
    parser.add_argument(
        "--xvfb", action="store_true", help="run the gui tests on an Xvfb of the kit's even when $DISPLAY is set"
    )
    known, rest = parser.parse_known_args(argv)
    pytest_args, junitxml = _take_junitxml(rest)
    if known.test_timeout < 0:
        parser.error("--test-timeout must be >= 0")
    return Options(
        known.blender, known.addon, known.requirements, known.test_timeout, known.xvfb, pytest_args, junitxml
    )


def _take_junitxml(args: list[str]) -> tuple[list[str], Path | None]:
    """pytest's --junitxml (also --junit-xml, =PATH or PATH): the launcher writes that file."""
    kept: list[str] = []
    path: Path | None = None
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--junitxml", "--junit-xml"):
            path = Path(value if eq else next(it, ""))
        else:
            kept.append(arg)
    return kept, path


# -- main ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    try:
        return _main(options)
    except KitError as exc:
        _say(f"error: {exc}")
        return USAGE_ERROR
    except KeyboardInterrupt:
        _say("interrupted")
        return INTERRUPTED


def _main(options: Options) -> int:
    cache = default_cache()
    requirements = list(options.requirements)
    if _wants_coverage(options.pytest_args):
        if not any(_requirement_name(r).lower() == "pytest-cov" for r in requirements):
            requirements.append("pytest-cov")  # --cov is pytest-cov's: Blender's Python needs it too
    for addon in options.addons:
        if not addon.exists():
            raise KitError(f"--addon {addon}: no such file or folder")
    blenders = [probe(path, cache) for path in find_blenders(options.blenders)]
    outcomes: list[ModeOutcome] = []
    with _work_folder() as work:
        run = Run(options, work)
        try:
            for blender in blenders:
                sys_path, origin = pytest_paths(blender, requirements, cache)
                _say(f"{blender.label()} ({blender.path}), Python {blender.python}; pytest from {origin}")
                outcomes += _run_blender(run, blender, sys_path)
                if _exit_first(options.pytest_args) and any(o.code not in (OK, NO_TESTS) for o in outcomes):
                    break
        finally:
            run.display.close()
    code = _combine([outcome.code for outcome in outcomes])
    if options.junitxml is not None:
        _write_junit(options.junitxml, outcomes)
    _summary(outcomes, code)
    return code


def _run_blender(run: Run, blender: Blender, sys_path: list[str]) -> list[ModeOutcome]:
    if blender.kind == "module":
        return [_run_mode(run, blender, "module", sys_path, "the bpy module has no UI to run gui tests in", {})]
    # The first session leaves the gui tests to a UI session, unless there cannot be one.
    display_env = run.display.environment()
    gui_skip = run.display.why_not if display_env is None else None
    outcomes = [_run_mode(run, blender, "background", sys_path, gui_skip, {})]
    gui_tests = max((result.progress.gui_tests for result in outcomes[0].results), default=0)
    if display_env is not None and gui_tests:
        if not (_exit_first(run.options.pytest_args) and outcomes[0].code not in (OK, NO_TESTS)):
            outcomes.append(_run_mode(run, blender, "gui", sys_path, None, display_env))
    return outcomes


@contextlib.contextmanager
def _work_folder() -> Iterator[Path]:
    work = Path(tempfile.mkdtemp(prefix="mainthread_tasks-testing-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the add-on links in it are unlinked, never followed


def _write_junit(path: Path, outcomes: list[ModeOutcome]) -> None:
    suites = []
    for outcome in outcomes:
        names = {result.suite_name for result in outcome.results if result.crash is None} or {"pytest"}
        suite = _junit.Suite(
            f"{sorted(names)[0]} [{outcome.blender.label()}, {outcome.mode}]",
            {
                "blender": outcome.blender.version,
                "blender_path": outcome.blender.path,
                "python": outcome.blender.python,
                "mode": outcome.mode,
            },
        )
        for result in outcome.results:
            suite.cases += result.cases
        suites.append(suite)
    _junit.write(path, suites)


def _summary(outcomes: list[ModeOutcome], code: int) -> None:
    print(flush=True)
    _say("summary")
    for outcome in outcomes:
        resets: list[float] = []
        checks: list[float] = []
        startups: list[float] = []
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        for result in outcome.results:
            for case in result.cases:
                kind = "failed" if case.find("failure") is not None or case.find("error") is not None else None
                kind = kind or ("skipped" if case.find("skipped") is not None else "passed")
                counts[kind] += 1
            resets += result.progress.reset_seconds
            checks += result.progress.check_seconds
            if result.startup_seconds is not None:
                startups.append(result.startup_seconds)
        crashes = [f"{r.crash} in {r.crashed_test or 'no test'}" for r in outcome.results if r.crash]
        line = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        sessions = f"{len(outcome.results)} session(s)"
        print(f"  {outcome.blender.label()} ({outcome.blender.path}), {outcome.mode}: {line}; {sessions}", flush=True)
        for crash in crashes:
            print(f"    {crash}", flush=True)
        if resets and startups:
            print(
                f"    the kit's cost: {statistics.median(startups):.2f} s from start-up to the first test; per test "
                f"{1000 * statistics.median(resets):.1f} ms fresh scene + {1000 * statistics.median(checks):.1f} ms "
                "checks (medians)",
                flush=True,
            )
    print(f"  exit status {code}", flush=True)
