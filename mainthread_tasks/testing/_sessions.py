"""Sessions: one Blender running part of the suite, watched; crashes reported, the rest run again."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _junit
from ._blenders import Blender
from ._display import Display
from ._kit import (
    EXIT_GRACE,
    INTERNAL_ERROR,
    INTERRUPTED,
    NO_TESTS,
    OK,
    SESSION_ENV,
    TESTS_FAILED,
    TIMEOUT_DUMP,
    USAGE_ERROR,
    Options,
    _say,
)

# -- sessions --------------------------------------------------------------------------------------------


@dataclass
class Progress:
    """What the plugin wrote to the progress file (see plugin.py), read after the session."""

    collected: int | None = None
    gui_tests: int = 0
    started: list[str] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    reports: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reset_seconds: list[float] = field(default_factory=list)  #: each test's fresh scene
    check_seconds: list[float] = field(default_factory=list)  #: each test's snapshots and checks
    exitstatus: int | None = None
    first_start: float | None = None  #: when the first test started (time.monotonic of the launcher)

    @classmethod
    def read(cls, path: Path) -> Progress:
        progress = cls()
        if not path.exists():
            return progress
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by the crash
            if "collected" in record:
                progress.collected = record["collected"]
                progress.gui_tests = record["gui_tests"]
            elif "start" in record:
                progress.started.append(record["start"])
            elif "finish" in record:
                progress.finished.add(record["finish"])
            elif "report" in record:
                progress.reports.setdefault(record["report"]["nodeid"], []).append(record["report"])
            elif "kit_seconds" in record:
                reset, checks = record["kit_seconds"]
                progress.reset_seconds.append(reset)
                progress.check_seconds.append(checks)
            elif "exitstatus" in record:
                progress.exitstatus = record["exitstatus"]
        return progress


@dataclass
class SessionResult:
    code: int  #: pytest's exit status (TESTS_FAILED after a crash)
    progress: Progress
    cases: list[Any]  #: JUnit test cases
    suite_name: str
    crash: str | None  #: what happened, if Blender died
    crashed_test: str | None
    startup_seconds: float | None  #: from launching Blender to its first test


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Run:
    """One launcher run: its temporary folder, its options, what each session gave."""

    def __init__(self, options: Options, work: Path) -> None:
        self.options = options
        self.work = work
        self.sessions = 0
        self.display = Display(options.xvfb)
        self.cov = _wants_coverage(options.pytest_args)

    def session(
        self,
        blender: Blender,
        mode: str,
        sys_path: list[str],
        deselect: list[str],
        gui_skip: str | None,
        extra_env: dict[str, str],
    ) -> SessionResult:
        self.sessions += 1
        folder = self.work / f"session-{self.sessions}"
        user = folder / "user"
        for sub in ("config", "scripts", "datafiles", "extensions/user_default", "extensions/blender_org"):
            (user / sub).mkdir(parents=True)
        part = folder / "junit.xml"
        args = [*self.options.pytest_args, f"--junitxml={part}"]
        if self.cov and self.sessions > 1:
            args.append("--cov-append")  # one coverage total over every session of the run
        config: dict[str, Any] = {
            "mode": mode,
            "args": args,
            "sys_path": sys_path,
            "addons": [str(path.resolve()) for path in self.options.addons],
            "progress": str(folder / "progress.jsonl"),
            "fault": str(folder / "fault.txt"),
            "deselect": deselect,
            "test_timeout": self.options.test_timeout,
            "gui_skip": gui_skip,
        }
        (folder / "session.json").write_text(json.dumps(config))
        # Blender's user folders (config, scripts, datafiles, extensions) all in the temporary one:
        # yours are never read nor written. The more specific BLENDER_USER_* variables would win over
        # it, so they go (a studio may set BLENDER_USER_SCRIPTS); a Blender that a test starts can
        # then have a user folder of its own by setting BLENDER_USER_RESOURCES alone.
        env = {key: value for key, value in os.environ.items() if not key.startswith("BLENDER_USER_")}
        env.update({SESSION_ENV: str(folder / "session.json"), "BLENDER_USER_RESOURCES": str(user), **extra_env})
        command = blender.command(mode)
        where = {"background": "--background", "gui": "the UI", "module": "the bpy module"}[mode]
        _say(f"{blender.label()} in {where}: {shlex.join(command)}")
        launched = time.monotonic()
        proc = subprocess.Popen(command, env=env)
        code, quit_late, first_test = self._wait(proc, Path(config["progress"]))
        progress = Progress.read(Path(config["progress"]))
        startup = None if first_test is None else first_test - launched
        return self._result(blender, mode, code, quit_late, progress, part, Path(config["fault"]), startup)

    def _wait(self, proc: subprocess.Popen[bytes], progress: Path) -> tuple[int, bool, float | None]:
        """Wait for Blender; end it if it does not quit within EXIT_GRACE after pytest finished.
        Returns its exit status, whether it had to be ended, and when its first test started."""
        first_test: float | None = None
        finished_at: float | None = None
        try:
            while True:
                try:
                    return proc.wait(0.05), False, first_test
                except subprocess.TimeoutExpired:
                    pass
                if first_test is None and _has(progress, '"start"'):
                    first_test = time.monotonic()
                if finished_at is None and _has(progress, '"exitstatus"'):
                    finished_at = time.monotonic()
                if finished_at is not None and time.monotonic() - finished_at > EXIT_GRACE:
                    proc.kill()
                    return proc.wait(), True, first_test
        except BaseException:  # Ctrl-C: Blender goes too
            proc.kill()
            proc.wait()
            raise

    def _result(
        self,
        blender: Blender,
        mode: str,
        code: int,
        quit_late: bool,
        progress: Progress,
        part: Path,
        fault: Path,
        startup: float | None,
    ) -> SessionResult:
        crashed = [nodeid for nodeid in progress.started if nodeid not in progress.finished]
        crashed_test = crashed[-1] if crashed else None
        fault_text = fault.read_text(encoding="utf-8", errors="replace") if fault.exists() else ""
        if progress.exitstatus is not None and code == progress.exitstatus and not quit_late:
            suite_name, cases = _junit.read_part(part) if part.exists() else ("pytest", [])
            return SessionResult(code, progress, cases, suite_name, None, None, startup)
        if code in (INTERRUPTED, INTERNAL_ERROR, USAGE_ERROR) and not progress.started and not quit_late:
            # pytest stopped before the session began (an add-on that failed to enable, a bad
            # option): its message is above; nothing ran, nothing crashed.
            return SessionResult(code, progress, [], "pytest", None, None, startup)
        # Blender died, or pytest's report is missing: rebuild what ran from the progress file.
        if fault_text.startswith(TIMEOUT_DUMP) and crashed_test is not None:
            crash = f"the test ran longer than {self.options.test_timeout:g} s (--test-timeout): Blender was stopped"
        elif code < 0:
            crash = f"Blender crashed ({_signal_name(-code)})"
        elif code > 128 and os.name != "nt":  # a shell in between (a wrapper script) reports 128 + N
            crash = f"Blender crashed ({_signal_name(code - 128)})"
        elif quit_late:
            crash = f"Blender did not quit within {EXIT_GRACE:g} s after the tests"
        else:
            crash = f"Blender exited with status {code} before pytest finished"
        cases = [
            _junit.reported_case(nodeid, progress.reports.get(nodeid, []))
            for nodeid in progress.started
            if nodeid in progress.finished
        ]
        detail = fault_text.strip() or "(no traceback was written)"
        if crashed_test is not None:
            seconds = sum(float(r.get("duration", 0.0)) for r in progress.reports.get(crashed_test, []))
            cases.append(_junit.crashed_case(crashed_test, f"{crash} during this test", detail, seconds))
        else:
            place = "after the tests" if progress.exitstatus is not None else "outside any test"
            cases.append(
                _junit.crashed_case(f"mainthread_tasks.testing::{blender.label()} {mode}", f"{crash} {place}", detail)
            )
        _say(f"{blender.label()}: {crash}" + (f" in {crashed_test}" if crashed_test else ""))
        if detail:
            print(detail, file=sys.stderr, flush=True)
        return SessionResult(TESTS_FAILED, progress, cases, "pytest", crash, crashed_test, startup)


def _has(path: Path, text: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return text in handle.read()
    except OSError:
        return False


@dataclass
class ModeOutcome:
    """The sessions of one Blender in one mode (a crash adds one more)."""

    blender: Blender
    mode: str
    results: list[SessionResult] = field(default_factory=list)

    @property
    def code(self) -> int:
        return _combine([result.code for result in self.results])


def _combine(codes: list[int]) -> int:
    """One exit status for several pytest runs: the worst; 5 (no tests) only if every run had none."""
    real = [code for code in codes if code != NO_TESTS]
    if not real:
        return NO_TESTS if codes else OK
    return max(real)


def _run_mode(
    run: Run, blender: Blender, mode: str, sys_path: list[str], gui_skip: str | None, env: dict[str, str]
) -> ModeOutcome:
    """Sessions of one mode until every test ran: after a crash, the rest in a fresh Blender."""
    outcome = ModeOutcome(blender, mode)
    done: list[str] = []
    while True:
        result = run.session(blender, mode, sys_path, done, gui_skip, env)
        outcome.results.append(result)
        if result.crash is None:
            return outcome
        done += [nodeid for nodeid in result.progress.started if nodeid not in done]
        left = (result.progress.collected or 0) - len(result.progress.started)
        if result.crashed_test is None or left <= 0 or _exit_first(run.options.pytest_args):
            return outcome
        _say(f"{blender.label()}: running the {left} test(s) not run yet in a fresh Blender")


def _wants_coverage(args: list[str]) -> bool:
    return any(arg == "--cov" or arg.startswith("--cov=") for arg in args)


def _exit_first(args: list[str]) -> bool:
    return "-x" in args or "--exitfirst" in args
